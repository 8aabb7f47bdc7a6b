"""Our objects as people read them: the one-line state, the tables and sections of `mover app`
commands, and the summary their --json prints."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import click

from mover.api import emit_json, emit_table, format_age, format_size
from mover_k8s import api
from mover_k8s.cli.progress import item_progress, progress_text, volume_entries
from mover_k8s.conditions import condition
from mover_k8s.k8s.types import Obj
from mover_k8s.timestamps import parse as parse_time

if TYPE_CHECKING:
    from mover_k8s.diff import Report


def summary(obj: Obj) -> Obj:
    """What --json prints of one of our objects: its name, spec, phase, Ready's reason and
    message, and its status."""
    meta, spec, status = obj["metadata"], obj.get("spec") or {}, obj.get("status") or {}
    ready = condition(obj, "Ready") or {}
    return {
        "kind": obj.get("kind"),
        "name": meta["name"],
        "namespace": meta["namespace"],
        "spec": spec,
        "phase": status.get("phase") or api.NEW,
        "reason": ready.get("reason", ""),
        "message": ready.get("message", ""),
        "status": status,
    }


def age_of(obj: Obj, at: datetime | None = None) -> str:
    """`3m`, `2h`, `5d` since the object's creationTimestamp ("" without one)."""
    created = parse_time(str(obj["metadata"].get("creationTimestamp") or ""))
    if created is None:
        return ""
    return format_age(((at or datetime.now(UTC)) - created).total_seconds())


def _shorten(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1].rstrip() + "…"


STATE_WIDTH = 60


def state_of(obj: Obj) -> str:
    """The phase, with the reason and (shortened) message of the Ready condition (or a Failed
    one) unless it is Ready: `Failed: NamespaceNotFound: namespace(s) ghost do not exist…`."""
    phase = (obj.get("status") or {}).get("phase") or api.NEW
    found = condition(obj, "Ready") or condition(obj, "Failed") or {}
    if not found or (found.get("type") == "Ready" and found.get("status") == "True"):
        return phase
    parts = [phase]
    if found.get("reason") and found["reason"] != phase:
        parts.append(str(found["reason"]))
    if found.get("message"):
        parts.append(str(found["message"]))
    return _shorten(": ".join(parts), STATE_WIDTH)


def volumes_of(obj: Obj) -> Obj:
    """{"count": volumes, "bytes": their sizes summed, None when not known}; count None before
    the controller has looked (no status yet)."""
    status = obj.get("status") or {}
    entries = volume_entries(obj)
    if obj.get("kind") == "Backup":
        count = status.get("volumeCount", len(entries) if "volumes" in status else None)
    else:
        count = len(entries) if "report" in status else None
    size = sum(int(e.get("size") or 0) for e in entries)
    return {"count": count, "bytes": size or None}


def volumes_text(volumes: Obj) -> str:
    """`2 (6.0 MiB)`, `2`, or "" when not known yet."""
    if volumes.get("count") is None:
        return ""
    text = str(volumes["count"])
    return text + (f" ({format_size(volumes['bytes'])})" if volumes.get("bytes") else "")


def list_entry(obj: Obj) -> Obj:
    """summary() with what `mover app list` shows: when made and its age, the state with its
    reason, the volumes (count and bytes)."""
    return {
        **summary(obj),
        "created": obj["metadata"].get("creationTimestamp"),
        "age": age_of(obj),
        "state": state_of(obj),
        "volumes": volumes_of(obj),
    }


def plain_table(columns: list[str], rows: list[list[str]]) -> None:
    """Columns padded as kubectl prints them, never wrapped: long field paths and hostnames
    stay on one line, for people and for grep."""
    widths = [max(len(r[i]) for r in [columns, *rows]) for i in range(len(columns))]
    for row in [columns, *rows]:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def show_object(obj: Obj, as_json: bool) -> None:
    """A Backup, Restore or Schedule just made (or ended, with --wait): its summary() as JSON,
    or its phase and why, and what a Restore changed."""
    if as_json:
        emit_json(summary(obj))
        return
    s = summary(obj)
    phase = s["phase"] if obj.get("kind") != "Schedule" else "created"
    click.echo(f"{s['kind']} {s['namespace']}/{s['name']}: {phase}")
    if s["message"]:
        click.echo(f"  {s['reason']}: {s['message']}")
    if obj.get("kind") == "Restore":
        show_fidelity(s["status"].get("report") or {})


def show_fidelity(report: Obj) -> None:
    """What a Restore changed in the objects beyond the mappings: the captured values it did not
    carry over, and the strings naming a mapped namespace in a DNS name (fields, not values)."""
    dropped = report.get("dropped") or []
    if dropped:
        click.echo(f"\nNot carried over ({report.get('droppedCount', len(dropped))}):")
        for e in dropped:
            where = f"{e['namespace']}/" if e.get("namespace") else ""
            click.echo(
                f"  {e.get('kind')} {where}{e.get('name')} {e.get('path')} {e.get('value')}: "
                f"{e.get('reason')}"
            )
        if report.get("droppedCount", 0) > len(dropped):
            click.echo(f"  ... {report['droppedCount'] - len(dropped)} more")
    references = report.get("namespaceReferences") or []
    if references:
        count = report.get("namespaceReferenceCount", len(references))
        rewritten = any(e.get("rewritten") for e in references)
        click.echo(
            f"\nNamespace references ({count}): fields naming a mapped namespace in a Service DNS "
            "name (NAME.NAMESPACE.svc), "
            + (
                "rewritten"
                if rewritten
                else "left as they were (--rewrite-namespace-references rewrites them)"
            )
        )
        for e in references:
            where = f"{e['namespace']}/" if e.get("namespace") else ""
            click.echo(
                f"  {e.get('kind')} {where}{e.get('name')} {e.get('path')}: "
                f"{e.get('from')} -> {e.get('to')}" + (" (rewritten)" if e.get("rewritten") else "")
            )
        if count > len(references):
            click.echo(f"  ... {count - len(references)} more")
    transformed = report.get("transformed") or []
    if transformed:
        count = report.get("transformedCount", len(transformed))
        click.echo(f"\nTransformed ({count}): objects a transform rule changed")
        for e in transformed:
            where = f"{e['namespace']}/" if e.get("namespace") else ""
            click.echo(f"  {e.get('rule')}: {e.get('kind')} {where}{e.get('name')}")
        if count > len(transformed):
            click.echo(f"  ... {count - len(transformed)} more")


def show_backup_set(name: str, backups: list[Obj]) -> None:
    """The Backups of `app backup NAME --per-namespace`: one row per namespace."""
    from mover_k8s import apps

    emit_table(
        f"Backups {name} (one per namespace)",
        ["namespace", "backup", "objects", "volumes", "state"],
        [
            [
                str((b["metadata"].get("labels") or {}).get(apps.APP_LABEL, "")),
                b["metadata"]["name"],
                str((b.get("status") or {}).get("objectCount", "")),
                volumes_text(volumes_of(b)),
                state_of(b),
            ]
            for b in backups
        ],
    )


def show_list(schedules: list[Obj], backups: list[Obj], restores: list[Obj]) -> None:
    """`app list`: a table each of the Schedules, Backups and Restores (list_entry()s)."""
    emit_table(
        "Schedules",
        ["name", "cron", "keep", "age", "last backup"],
        [
            [
                x["name"],
                str(x["spec"].get("schedule", "")),
                str(x["spec"].get("keepLast", "")),
                x["age"],
                str(x["status"].get("lastBackup", "")),
            ]
            for x in schedules
        ],
    )
    # The state, with its reason, is the widest column: last, where it is left-aligned.
    emit_table(
        "Backups",
        ["name", "objects", "volumes", "age", "root", "state"],
        [
            [
                b["name"],
                str(b["status"].get("objectCount", "")),
                volumes_text(b["volumes"]),
                b["age"],
                str(b["status"].get("rootHash", ""))[:16],
                b["state"],
            ]
            for b in backups
        ],
    )
    emit_table(
        "Restores",
        ["name", "backup", "mode", "volumes", "age", "state"],
        [
            [
                r["name"],
                r["spec"].get("backup", ""),
                r["spec"].get("mode", "full"),
                volumes_text(r["volumes"]),
                r["age"],
                r["state"],
            ]
            for r in restores
        ],
    )


def show_backup(
    obj: Obj, items: dict[str, Obj], progress: Obj, captured: Obj, show_objects: bool
) -> None:
    """`app describe` of a Backup: its state, volumes and their progress (`items`: its
    VolumeBackups by name; `progress`: theirs together), root hash, and what it captured
    (`captured`: captured.capture_report())."""
    status = _show_heading(obj, items, progress)
    for key in ("objectCount", "objectsSnapshot", "manifestSnapshot", "rootHash", "expiration"):
        if status.get(key):
            click.echo(f"  {key}: {status[key]}")
    for v in status.get("volumes") or []:
        line = (
            f"  volume {v.get('namespace')}/{v.get('pvc')} on {v.get('node')}: "
            f"{v.get('phase')} {v.get('snapshot', '')[:8]} {v.get('message') or ''}".rstrip()
        )
        _echo_with_progress(line, items.get(str(v.get("volumeBackup") or "")))
    show_capture(captured, show_objects)


def show_restore(obj: Obj, items: dict[str, Obj], progress: Obj) -> None:
    """`app describe --restore`: its state and its report, each volume with its progress
    (`items`: its VolumeRestores by name; `progress`: theirs together)."""
    report = _show_heading(obj, items, progress).get("report") or {}
    for entry in [*(report.get("objects") or []), *(report.get("volumes") or [])]:
        where = f"{entry.get('namespace')}/" if entry.get("namespace") else ""
        reason = f" ({entry['reason']})" if entry.get("reason") else ""
        what = f"{entry.get('kind')} {where}{entry.get('name')}"
        line = f"  {entry.get('result')}: {what}{reason}"
        _echo_with_progress(line, items.get(str(entry.get("volumeRestore") or "")))
    show_fidelity(report)
    show_external(report)


def _show_heading(obj: Obj, items: dict[str, Obj], progress: Obj) -> Obj:
    """describe's first lines: the phase and why, when made, the volumes (with their progress
    while it runs); the object's status, for what follows."""
    s = summary(obj)
    click.echo(f"{s['kind']} {s['namespace']}/{s['name']}: {s['phase']}")
    if s["message"]:
        click.echo(f"  {s['reason']}: {s['message']}")
    if obj["metadata"].get("creationTimestamp"):
        click.echo(f"  created: {obj['metadata']['creationTimestamp']} ({age_of(obj)} ago)")
    volumes = volumes_text(volumes_of(obj))
    if volumes:
        line = f"  volumes: {volumes}"
        if items and s["phase"] not in api.DONE_PHASES:
            line += "," + progress_text(progress)
        click.echo(line)
    status: Obj = s["status"]
    return status


def _echo_with_progress(line: str, item: Obj | None) -> None:
    """A volume's line, with its work item's progress when there is one."""
    if item is not None:
        line += "," + progress_text(item_progress(item))
    click.echo(line.rstrip(","))


def show_capture(report: Obj, show_objects: bool) -> None:
    """describe's sections on what a Backup captured (captured.capture_report())."""
    if report.get("captureError"):
        click.echo(f"\nCaptured objects: cannot read them: {report['captureError']}")
        return
    captured = report.get("captured")
    if not captured:
        return
    kinds = captured["kinds"]
    plain = [k["kind"] for k in kinds]

    def label(entry: Obj) -> str:  # Kind, or Kind.group where two groups share a kind
        if plain.count(entry["kind"]) == 1:
            return str(entry["kind"])
        return f"{entry['kind']}.{entry['group'] or 'core'}"

    hint = "" if show_objects else "; --objects names them"
    click.echo(f"\nCaptured objects ({captured['objects']}{hint}):")
    plain_table(["KIND", "COUNT"], [[label(k), str(k["count"])] for k in kinds])
    if show_objects and kinds:
        click.echo()
        plain_table(["KIND", "OBJECT"], [[label(k), o] for k in kinds for o in k["objects"]])
    external = report.get("external") or []
    if not external:
        click.echo("\nExternal names recorded: none")
        return
    click.echo("\nExternal names recorded (outside the cluster; they must follow a move):")
    plain_table(
        ["KIND", "OBJECT", "TYPE", "VALUE"],
        [
            [
                str(e["kind"]),
                f"{e['namespace']}/{e['name']}" if e["namespace"] else str(e["name"]),
                str(e["type"]),
                str(e["value"]),
            ]
            for e in external
        ],
    )


def show_external(report: Obj) -> None:
    """A Restore's external names: recorded in the backup, and the restored objects' now."""
    entries = report.get("external") or []
    if not entries:
        return
    click.echo(
        "\nExternal names (outside the cluster; what follows them must follow the move): "
        f"{report.get('externalPhase', '')}: {report.get('externalMessage', '')}"
    )
    rows = [
        [
            str(e.get("kind", "")),
            f"{e['namespace']}/{e.get('name', '')}" if e.get("namespace") else str(e.get("name")),
            str(e.get("what", "")),
            str(e.get("recorded") or "-"),
            str(e.get("current") or "-"),
            str(e.get("state", "")),
        ]
        for e in entries
    ]
    plain_table(["KIND", "OBJECT", "WHAT", "RECORDED", "CURRENT", "STATE"], rows)


def show_diff(report: Report) -> None:
    """`app diff` for people: a row per drift (a changed object: a row per field), the counts,
    and the external names recorded live."""

    def where(ns: str, name: str) -> str:
        return f"{ns}/{name}" if ns else name

    rows = [["only-in-cluster", r.kind, where(r.namespace, r.name), "", "", ""] for r in (
        report.only_in_cluster
    )]  # fmt: skip
    rows += [["only-in-git", r.kind, where(r.namespace, r.name), "", "", ""] for r in (
        report.only_in_git
    )]  # fmt: skip
    for c in report.changed:
        for f in c.fields:
            shown = [json.dumps(v) if v is not None else "(absent)" for v in (f.desired, f.live)]
            rows.append(["changed", c.kind, where(c.namespace, c.name), f.path, *shown])
    if rows:
        plain_table(["DRIFT", "KIND", "OBJECT", "FIELD", "GIT", "LIVE"], rows)
        click.echo()
    click.echo(
        f"{len(report.only_in_cluster)} only in the cluster, {len(report.only_in_git)} only in "
        f"git, {len(report.changed)} changed, {report.same} the same, {len(report.ignored)} "
        "ignored (made by the cluster)"
    )
    if report.external:
        click.echo("\nExternal names recorded live (outside the cluster; they must follow a move):")
        plain_table(
            ["KIND", "OBJECT", "TYPE", "VALUE"],
            [[e.kind, where(e.namespace, e.name), e.type, e.value] for e in report.external],
        )


def show_migration(name: str, reports: list[Obj], totals: Obj) -> None:
    """`app migrate` for people: a row per app, the totals, the external names to re-point and
    why each failed app failed."""
    rows = []
    for r in reports:
        drift = r.get("drift")
        drift_text = "-"
        if drift and "error" in drift:
            drift_text = "error"
        elif drift:
            drift_text = (
                f"{drift['onlyInCluster']}/{drift['onlyInGit']}/{drift['changed']}"
                if drift["drift"]
                else "none"
            )
        rows.append(
            [
                r["app"] if r["target"] == r["app"] else f"{r['app']}->{r['target']}",
                r["state"],
                str(r["objects"]["created"]),
                f"{r['volumes']['restored']}/{r['volumes']['total']}",
                format_size(r["bytes"]["moved"]),
                str(len(r["external"])),
                drift_text,
            ]
        )
    click.echo(f"Migration {name}:")
    plain_table(["APP", "STATE", "CREATED", "VOLUMES", "MOVED", "EXTERNAL", "DRIFT"], rows)
    click.echo(
        f"{totals['completed']} of {totals['apps']} apps moved, {totals['failed']} failed; "
        f"{totals['objectsCreated']} objects created, {totals['volumesRestored']} volumes "
        f"restored, {format_size(totals['bytesMoved'])} moved"
    )
    external = [(r, e) for r in reports for e in r["external"]]
    if external:
        click.echo("\nExternal names to re-point (recorded on the source; current on the target):")
        plain_table(
            ["APP", "KIND", "OBJECT", "WHAT", "RECORDED", "CURRENT", "STATE"],
            [
                [
                    r["app"],
                    str(e.get("kind", "")),
                    f"{e.get('namespace')}/{e.get('name')}"
                    if e.get("namespace")
                    else str(e.get("name")),
                    str(e.get("what", "")),
                    str(e.get("recorded") or "-"),
                    str(e.get("current") or "-"),
                    str(e.get("state", "")),
                ]
                for r, e in external
            ],
        )
    for r in reports:
        if r["state"] != "completed":
            click.echo(f"\n{r['app']}: failed at {r['failedStep']}: {r['error']}")
