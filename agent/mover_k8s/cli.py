"""`mover app ...` for people and `mover agent ...` for the two components.

`mover app` talks to the cluster of the current kubeconfig context: it creates the Backup or
Restore and, with --wait, follows it until it ends (exit 1 when it failed, with the reason
from its Ready condition). Input is checked before anything is created: a bad mapping, an
unknown mode, or a name already taken changes nothing.

Registered with `mover` through the `mover.commands` entry point (pyproject.toml).
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from mover.api import emit_json, emit_table, format_age, format_duration, format_rate, format_size
from mover.errors import MoverError, UsageError
from mover_k8s import api
from mover_k8s.conditions import condition
from mover_k8s.errors import Conflict, KubeError
from mover_k8s.k8s.types import Obj, ResourceType
from mover_k8s.timestamps import parse as parse_time

if TYPE_CHECKING:  # the client is imported when a command runs: `mover` starts fast without it
    from importlib.resources.abc import Traversable

    from prometheus_client import CollectorRegistry

    from mover_k8s.diff import Report
    from mover_k8s.k8s.client import Kube

DEFAULT_NAMESPACE = "mover-system"

kube_options = [
    click.option(
        "--kubeconfig", envvar="KUBECONFIG", help="kubeconfig file [default: ~/.kube/config]."
    ),
    click.option(
        "--context", "kube_context", help="kubeconfig context [default: the current one]."
    ),
    click.option(
        "--namespace",
        "-n",
        "--mover-namespace",
        "namespace",
        default=DEFAULT_NAMESPACE,
        show_default=True,
        envvar="MOVER_NAMESPACE",
        help="mover's own namespace, where its Backups, Restores, Schedules and Repositories "
        "are (as Velero's -n); not the app's: that is --include-namespace.",
    ),
]


def with_kube(f: Any) -> Any:
    for option in reversed(kube_options):
        f = option(f)
    return f


def per_namespace_options(what: str) -> Callable[[Any], Any]:
    """--per-namespace (its help: `what`), --namespace-selector and --exclude-namespace, as
    `app backup` and `app schedule` take them."""
    options = [
        click.option("--per-namespace", is_flag=True, help=what),
        click.option(
            "--namespace-selector",
            help="With --per-namespace: the namespaces with these labels (KEY=VALUE,...).",
        ),
        click.option(
            "--exclude-namespace",
            "excluded_namespaces",
            multiple=True,
            help="With --per-namespace: never this namespace (repeat, or comma-separate).",
        ),
    ]

    def decorate(f: Any) -> Any:
        for option in reversed(options):
            f = option(f)
        return f

    return decorate


def connect(kubeconfig: str | None, kube_context: str | None) -> Kube:
    from mover_k8s.k8s.client import Kube

    if kubeconfig and ":" in kubeconfig:
        kubeconfig = kubeconfig.split(":", 1)[0]  # KUBECONFIG may list several; the first wins
    return Kube.connect(kubeconfig, kube_context)


def parse_mapping(values: tuple[str, ...], option: str) -> dict[str, str]:
    result: dict[str, str] = {}
    for value in values:
        for pair in value.split(","):
            source, sep, target = pair.partition("=")
            if not sep or not source or not target:
                raise UsageError(f"{option} {pair!r}: write OLD=NEW (e.g. {option} app=app-copy)")
            if source in result and result[source] != target:
                raise UsageError(f"{option}: {source!r} is mapped twice")
            result[source] = target
    return result


def parse_labels(value: str | None) -> Obj | None:
    if not value:
        return None
    labels: dict[str, str] = {}
    for pair in value.split(","):
        key, sep, val = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--selector {pair!r}: write KEY=VALUE[,KEY=VALUE...]")
        labels[key] = val
    return {"matchLabels": labels}


def _listing(values: tuple[str, ...]) -> list[str]:
    return [v for value in values for v in value.split(",") if v]


def create_or_explain(kube: Kube, rt: ResourceType, body: Obj) -> Obj:
    try:
        return kube.create(rt, body)
    except Conflict:
        meta = body["metadata"]
        raise UsageError(
            f"{body['kind']} {meta['namespace']}/{meta['name']} exists already; choose another name"
        ) from None
    except KubeError as exc:
        if exc.status == 404:
            raise UsageError(
                f"cannot create {body['kind']} in namespace {body['metadata']['namespace']}: "
                f"{exc}; is mover installed (mover agent crds | kubectl apply -f -) and the "
                "namespace there?"
            ) from None
        raise


def status_line(kube: Kube, obj: Obj) -> str:
    """`Backup nightly: WaitingForVolumes, 1 of 2 volumes, 1.2 GiB of 8.0 GiB, ...` for people:
    the phase, and the volumes' progress summed over their work items."""
    kind, meta = obj.get("kind", ""), obj["metadata"]
    status = obj.get("status") or {}
    line = f"{kind} {meta['name']}: {status.get('phase') or api.NEW}"
    items = _work_items(kube, obj)
    if not items:
        return line
    done = sum(1 for i in items if (i.get("status") or {}).get("phase") in api.DONE_PHASES)
    return f"{line}, {done} of {len(items)} volumes," + progress_text(
        total_progress(items, _volume_sizes(obj))
    )


def _work_items(kube: Kube, obj: Obj) -> list[Obj]:
    """The VolumeBackups of a Backup, the VolumeRestores of a Restore."""
    meta = obj["metadata"]
    rt = api.VOLUME_BACKUP if obj.get("kind") == "Backup" else api.VOLUME_RESTORE
    label = api.BACKUP_LABEL if obj.get("kind") == "Backup" else api.RESTORE_LABEL
    return kube.list(rt, meta["namespace"], label_selector=f"{label}={meta['name']}")


def _volume_entries(obj: Obj) -> list[Obj]:
    """A Backup's status.volumes, a Restore's status.report.volumes."""
    status = obj.get("status") or {}
    if obj.get("kind") == "Restore":
        return list((status.get("report") or {}).get("volumes") or [])
    return list(status.get("volumes") or [])


def _volume_sizes(obj: Obj) -> dict[str, int]:
    """Work item name -> the volume's size as the controller recorded it (its capacity)."""
    key = "volumeBackup" if obj.get("kind") == "Backup" else "volumeRestore"
    return {str(e[key]): int(e.get("size") or 0) for e in _volume_entries(obj) if e.get(key)}


def _seconds_between(start: object, end: object) -> float:
    """Seconds from one recorded time stamp to another; 0 when either is missing."""
    first, last = parse_time(str(start or "")), parse_time(str(end or ""))
    return (last - first).total_seconds() if first and last else 0.0


def item_progress(item: Obj) -> Obj:
    """A work item's progress as its agent recorded it, with a rate: the agent's (bytes done
    over the time since it began reading), else bytes done over the time from the item's
    start to the progress's last update. {} before the agent reported any."""
    status = item.get("status") or {}
    progress = dict(status.get("progress") or {})
    if progress and not progress.get("bytesPerSecond") and progress.get("bytesDone"):
        elapsed = _seconds_between(status.get("startTimestamp"), progress.get("updated"))
        if elapsed > 0:
            progress["bytesPerSecond"] = progress["bytesDone"] / elapsed
    return progress


def total_progress(items: list[Obj], sizes: dict[str, int] | None = None) -> Obj:
    """The progress of a Backup's or Restore's work items together. Bytes add up (an item the
    agent has not begun counts its volume's size from `sizes` as its total). The rate is the
    bytes done over the time they took as recorded: from the first item's start to the last
    progress update, or the longest item's own time when that is longer (the stamps are whole
    seconds). The ETA is the bytes left at that rate, when every item's total is known."""
    sizes = sizes or {}
    done = total = 0
    known = True
    starts: list[datetime] = []
    updates: list[datetime] = []
    longest = 0.0
    for item in items:
        status, progress = item.get("status") or {}, item_progress(item)
        item_done = int(progress.get("bytesDone") or 0)
        item_total = int(progress.get("bytesTotal") or 0) or sizes.get(
            str(item["metadata"]["name"]), 0
        )
        done += item_done
        total += item_total
        finished = status.get("phase") in api.DONE_PHASES
        known = known and (item_total > 0 or finished)
        rate = float(progress.get("bytesPerSecond") or 0)
        if item_done and rate > 0:
            longest = max(longest, item_done / rate)
        start = parse_time(str(status.get("startTimestamp") or ""))
        update = parse_time(str(progress.get("updated") or ""))
        if start and update and item_done:
            starts.append(start)
            updates.append(update)
    span = (max(updates) - min(starts)).total_seconds() if starts else 0.0
    elapsed = max(span, longest)
    result: Obj = {"bytesDone": done, "bytesTotal": total}
    if done and elapsed > 0:
        result["bytesPerSecond"] = done / elapsed
        if known and total > done:
            result["etaSeconds"] = int((total - done) * elapsed / done)
    return result


def wait_for(kube: Kube, rt: ResourceType, namespace: str, name: str, timeout: float) -> Obj:
    """Poll until the object ends; on a terminal, show its progress on stderr as it changes."""
    deadline = time.monotonic() + timeout
    last = ""
    while True:
        obj = kube.get(rt, namespace, name)
        phase = (obj.get("status") or {}).get("phase") or api.NEW
        if sys.stderr.isatty():
            line = status_line(kube, obj)
            if line != last:
                click.echo(line, err=True)
            last = line
        if phase in api.DONE_PHASES:
            return obj
        if time.monotonic() > deadline:
            raise MoverError(f"{rt.kind} {name} is still {phase} after {timeout:.0f}s")
        time.sleep(0.5)


def outcome(obj: Obj) -> None:
    """Exit 1 with the Ready condition's reason when the object did not complete."""
    phase = (obj.get("status") or {}).get("phase")
    if phase == api.COMPLETED:
        return
    ready = condition(obj, "Ready") or {}
    raise MoverError(
        f"{obj['kind']} {obj['metadata']['name']} {phase}: "
        f"{ready.get('reason', '')}: {ready.get('message', '')}"
    )


def summary(obj: Obj) -> Obj:
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
    entries = _volume_entries(obj)
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


@click.group("app")
def app() -> None:
    """Back up and restore whole applications on Kubernetes (objects and volumes)."""


@app.command("backup")
@click.argument("name")
@click.option(
    "--include-namespace",
    "namespaces",
    multiple=True,
    help="Namespace to capture (repeat, or comma-separate).",
)
@click.option("--selector", "-l", help="Capture the objects with these labels (KEY=VALUE,...).")
@click.option(
    "--repository",
    "repository",
    default="default",
    show_default=True,
    help="Repository (a mover.dev Repository in --namespace).",
)
@click.option("--include-kinds", multiple=True, help="Only these kinds (Kind or Kind.group).")
@click.option("--exclude-kinds", multiple=True, help="Not these kinds.")
@click.option("--no-volumes", is_flag=True, help="Capture objects only.")
@click.option("--ttl", default="", help="Keep the backup this long (e.g. 720h).")
@per_namespace_options(
    "One Backup per namespace (NAME-NAMESPACE), so each app restores on its own."
)
@click.option("--wait", is_flag=True, help="Follow the backup until it ends.")
@click.option("--timeout", default=3600.0, show_default=True, help="Seconds --wait waits.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@with_kube
def backup_cmd(
    name: str,
    namespaces: tuple[str, ...],
    selector: str | None,
    repository: str,
    include_kinds: tuple[str, ...],
    exclude_kinds: tuple[str, ...],
    no_volumes: bool,
    ttl: str,
    per_namespace: bool,
    namespace_selector: str | None,
    excluded_namespaces: tuple[str, ...],
    wait: bool,
    timeout: float,
    as_json: bool,
    kubeconfig: str | None,
    kube_context: str | None,
    namespace: str,
) -> None:
    """Create a Backup NAME of the given namespaces and/or labelled objects; with
    --per-namespace, one Backup per namespace."""
    included = _listing(namespaces)
    labels = parse_labels(selector)
    ns_labels = parse_labels(namespace_selector)
    if (ns_labels or excluded_namespaces) and not per_namespace:
        raise UsageError("--namespace-selector and --exclude-namespace go with --per-namespace")
    if per_namespace and not included and not ns_labels:
        raise UsageError(
            "say which namespaces: --namespace-selector KEY=VALUE and/or --include-namespace NS"
        )
    if not included and not labels and not per_namespace:
        raise UsageError("say what to back up: --include-namespace NS and/or --selector KEY=VALUE")
    kube = connect(kubeconfig, kube_context)
    spec: Obj = {
        "repository": repository,
        "includedNamespaces": included,
        "includedKinds": _listing(include_kinds),
        "excludedKinds": _listing(exclude_kinds),
        "snapshotVolumes": not no_volumes,
    }
    if labels:
        spec["labelSelector"] = labels
    if ttl:
        spec["ttl"] = ttl
    if per_namespace:
        which = (ns_labels, included, _listing(excluded_namespaces))
        _backup_per_namespace(kube, namespace, name, spec, which, wait, timeout, as_json)
        return
    _submit(kube, api.BACKUP, namespace, name, spec, wait, timeout, as_json)


def _backup_per_namespace(
    kube: Kube,
    namespace: str,
    name: str,
    spec: Obj,
    which: tuple[Obj | None, list[str], list[str]],
    wait: bool,
    timeout: float,
    as_json: bool,
) -> None:
    """`app backup NAME --per-namespace`: a Backup NAME-NAMESPACE of each namespace selected,
    labelled mover.dev/backup-set=NAME and mover.dev/app=NAMESPACE; every name is checked
    before any is created. With wait, follows them all (one list per poll) and exits 1 when
    one did not complete, naming each."""
    from mover_k8s import apps

    selector, included, excluded = which
    missing = apps.missing_namespaces(kube, included)
    if missing:
        raise UsageError(f"--include-namespace: no namespace {', '.join(missing)} in the cluster")
    chosen = apps.select_namespaces(kube, selector, included, excluded, namespace)
    if not chosen:
        raise UsageError("no namespace matches --namespace-selector / --include-namespace")
    names = {ns: apps.object_name(name, ns) for ns in chosen}
    taken = [n for n in names.values() if kube.find(api.BACKUP, namespace, n) is not None]
    if taken:
        raise UsageError(
            f"Backup(s) {', '.join(sorted(taken))} exist already in {namespace}; "
            "choose another name"
        )
    for ns, backup_name in names.items():
        body = {
            "apiVersion": api.API_VERSION,
            "kind": "Backup",
            "metadata": {
                "name": backup_name,
                "namespace": namespace,
                "labels": {apps.SET_LABEL: name, apps.APP_LABEL: ns},
            },
            "spec": apps.app_backup_spec(spec, ns),
        }
        create_or_explain(kube, api.BACKUP, body)
    query = f"{apps.SET_LABEL}={name}"
    deadline = time.monotonic() + timeout
    while True:
        found = {b["metadata"]["name"]: b for b in kube.list(api.BACKUP, namespace, query)}
        objs = [found[n] for n in names.values() if n in found]
        ended = [b for b in objs if (b.get("status") or {}).get("phase") in api.DONE_PHASES]
        if not wait or len(ended) == len(names):
            break
        if time.monotonic() > deadline:
            raise MoverError(
                f"{len(names) - len(ended)} of {len(names)} backups are still running after "
                f"{timeout:.0f}s"
            )
        if sys.stderr.isatty():
            click.echo(f"Backups {name}: {len(ended)} of {len(names)} ended", err=True)
        time.sleep(0.5)
    if as_json:
        emit_json({"name": name, "backups": [summary(b) for b in objs]})
    else:
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
                for b in objs
            ],
        )
    failed = [b for b in objs if (b.get("status") or {}).get("phase") != api.COMPLETED]
    if wait and failed:
        raise MoverError(
            f"{len(failed)} of {len(objs)} backups did not complete: "
            + "; ".join(f"{b['metadata']['name']}: {state_of(b)}" for b in failed)
        )


@app.command("schedule")
@click.argument("name")
@click.option("--cron", required=True, help="When, in UTC: a cron expression, e.g. '0 2 * * *'.")
@click.option(
    "--keep-last",
    type=click.IntRange(0, 10000),
    help="Keep the N newest Backups the Schedule made [default: 7 when no --keep-* is given].",
)
@click.option(
    "--keep-hourly", type=click.IntRange(0, 10000), help="Keep the newest Backup of N hours."
)
@click.option("--keep-daily", type=click.IntRange(0, 10000), help="Keep the newest of N days.")
@click.option("--keep-weekly", type=click.IntRange(0, 10000), help="Keep the newest of N weeks.")
@click.option("--keep-monthly", type=click.IntRange(0, 10000), help="Keep the newest of N months.")
@click.option("--keep-yearly", type=click.IntRange(0, 10000), help="Keep the newest of N years.")
@click.option("--include-namespace", "namespaces", multiple=True, help="Namespace to capture.")
@click.option("--selector", "-l", help="Capture the objects with these labels (KEY=VALUE,...).")
@click.option(
    "--repository", default="default", show_default=True, help="The Repository to back up into."
)
@click.option("--no-volumes", is_flag=True, help="Capture objects only.")
@per_namespace_options("Each run: one Backup per namespace; the --keep-* counts are per namespace.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@with_kube
def schedule_cmd(
    name: str,
    cron: str,
    keep_last: int | None,
    keep_hourly: int | None,
    keep_daily: int | None,
    keep_weekly: int | None,
    keep_monthly: int | None,
    keep_yearly: int | None,
    namespaces: tuple[str, ...],
    selector: str | None,
    repository: str,
    no_volumes: bool,
    per_namespace: bool,
    namespace_selector: str | None,
    excluded_namespaces: tuple[str, ...],
    as_json: bool,
    kubeconfig: str | None,
    kube_context: str | None,
    namespace: str,
) -> None:
    """Create a Schedule NAME: a Backup at every CRON time; with --per-namespace, a Backup per
    namespace at every CRON time. Older Backups (and their data) go as the --keep-* rules say,
    with restic's semantics in UTC: e.g. --keep-daily 7 --keep-weekly 4 --keep-monthly 12.
    Without any, the last 7 are kept."""
    from croniter import croniter

    if not croniter.is_valid(cron):
        raise UsageError(f"--cron {cron!r} is not a cron expression (e.g. '0 2 * * *')")
    included = _listing(namespaces)
    labels = parse_labels(selector)
    ns_labels = parse_labels(namespace_selector)
    if (ns_labels or excluded_namespaces) and not per_namespace:
        raise UsageError("--namespace-selector and --exclude-namespace go with --per-namespace")
    if per_namespace and not included and not ns_labels:
        raise UsageError(
            "say which namespaces: --namespace-selector KEY=VALUE and/or --include-namespace NS"
        )
    if not included and not labels and not per_namespace:
        raise UsageError("say what to back up: --include-namespace NS and/or --selector KEY=VALUE")
    template: Obj = {
        "repository": repository,
        "includedNamespaces": included,
        "snapshotVolumes": not no_volumes,
    }
    if labels:
        template["labelSelector"] = labels
    tiers = {
        "last": keep_last,
        "hourly": keep_hourly,
        "daily": keep_daily,
        "weekly": keep_weekly,
        "monthly": keep_monthly,
        "yearly": keep_yearly,
    }
    retention = {rule: n for rule, n in tiers.items() if n is not None}
    if retention and not any(retention.values()):
        raise UsageError("the --keep-* rules keep nothing (every count is 0); keep at least one")
    kube = connect(kubeconfig, kube_context)
    spec: Obj = {"schedule": cron, "template": template}
    if set(retention) <= {"last"}:
        spec["keepLast"] = retention.get("last", 7)
    else:
        spec["retention"] = retention
    if per_namespace:
        spec["perNamespace"] = True
        if ns_labels:
            spec["namespaceSelector"] = ns_labels
        if excluded_namespaces:
            spec["excludedNamespaces"] = _listing(excluded_namespaces)
    _submit(kube, api.SCHEDULE, namespace, name, spec, False, 0, as_json)


@app.command("restore")
@click.argument("name")
@click.option("--from-backup", "backup", required=True, help="The Backup (NAME or NAMESPACE/NAME).")
@click.option(
    "--mode",
    type=click.Choice(api.MODES),
    default="full",
    show_default=True,
    help="full: objects and volume data; data-only: only the volumes' data, into the claims "
    "that exist (a GitOps redeploy); resources-only: only the objects.",
)
@click.option("--namespace-mapping", multiple=True, help="OLD=NEW (repeat, or comma-separate).")
@click.option("--storage-class-mapping", multiple=True, help="OLD=NEW.")
@click.option("--include-kinds", multiple=True, help="Only these kinds (Kind or Kind.group).")
@click.option("--exclude-kinds", multiple=True, help="Not these kinds (Kind or Kind.group).")
@click.option("--include-names", multiple=True, help="NAME or Kind/NAME.")
@click.option("--exclude-names", multiple=True, help="Not these objects (NAME, or NAMESPACE/NAME).")
@click.option("--volume", "volumes", multiple=True, help="Only this volume (NAMESPACE/PVC or PVC).")
@click.option("--selector", "-l", help="Only objects with these labels.")
@click.option(
    "--existing",
    type=click.Choice(["skip", "update"]),
    default="skip",
    show_default=True,
    help="Objects that exist already.",
)
@click.option(
    "--repository", help="Read the backup from this Repository (e.g. on another cluster)."
)
@click.option(
    "--external-wait",
    metavar="DURATION",
    help="How long after the restore ends new external names (a load balancer's hostname) "
    "are looked for (e.g. 30m)  [default: 10m]",
)
@click.option(
    "--preserve-node-ports",
    is_flag=True,
    help="Keep the Services' captured nodePorts (by default the cluster gives new ones).",
)
@click.option(
    "--rewrite-namespace-references",
    is_flag=True,
    help="Rewrite NAME.OLD.svc[.cluster.local] names in the objects' data to the mapped "
    "namespace (by default they are only reported).",
)
@click.option(
    "--transform",
    "transform_file",
    metavar="FILE",
    help="Transform rules (YAML or JSON): JSON Patches for the objects restored, by kind, "
    "namespace, name and labels (see docs/kubernetes.md, Transforms).",
)
@click.option("--wait", is_flag=True, help="Follow the restore until it ends.")
@click.option("--timeout", default=3600.0, show_default=True, help="Seconds --wait waits.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@with_kube
def restore_cmd(
    name: str,
    backup: str,
    mode: str,
    namespace_mapping: tuple[str, ...],
    storage_class_mapping: tuple[str, ...],
    include_kinds: tuple[str, ...],
    exclude_kinds: tuple[str, ...],
    include_names: tuple[str, ...],
    exclude_names: tuple[str, ...],
    volumes: tuple[str, ...],
    selector: str | None,
    existing: str,
    repository: str | None,
    external_wait: str | None,
    preserve_node_ports: bool,
    rewrite_namespace_references: bool,
    transform_file: str | None,
    wait: bool,
    timeout: float,
    as_json: bool,
    kubeconfig: str | None,
    kube_context: str | None,
    namespace: str,
) -> None:
    """Create a Restore NAME of a backup: full, data-only or resources-only."""
    from mover_k8s import transforms
    from mover_k8s.errors import SpecError

    spec: Obj = {
        "backup": backup,
        "mode": mode,
        "namespaceMapping": parse_mapping(namespace_mapping, "--namespace-mapping"),
        "storageClassMapping": parse_mapping(storage_class_mapping, "--storage-class-mapping"),
        "includedKinds": _listing(include_kinds),
        "excludedKinds": _listing(exclude_kinds),
        "includedNames": _listing(include_names),
        "excludedNames": _listing(exclude_names),
        "volumes": _listing(volumes),
        "existingResourcePolicy": existing,
    }
    labels = parse_labels(selector)
    if labels:
        spec["labelSelector"] = labels
    if repository:
        spec["repository"] = repository
    if external_wait:
        spec["externalWait"] = external_wait
    if preserve_node_ports:
        spec["preserveNodePorts"] = True
    if rewrite_namespace_references:
        spec["rewriteNamespaceReferences"] = True
    if transform_file:
        try:
            rules = transforms.read_file(transform_file)
            transforms.parse_rules(rules, "transforms")
        except SpecError as exc:
            raise UsageError(f"--transform {transform_file}: {exc}") from None
        spec["transforms"] = rules
    kube = connect(kubeconfig, kube_context)
    _submit(kube, api.RESTORE, namespace, name, spec, wait, timeout, as_json)


def _submit(
    kube: Kube,
    rt: ResourceType,
    namespace: str,
    name: str,
    spec: Obj,
    wait: bool,
    timeout: float,
    as_json: bool,
) -> None:
    """Create one of our objects, show it (once finished, with wait) and, with wait, exit with
    its outcome."""
    repository = spec.get("repository") or (spec.get("template") or {}).get("repository")
    if repository:
        _require_repository(kube, namespace, str(repository))
    body = {
        "apiVersion": api.API_VERSION,
        "kind": rt.kind,
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }
    obj = create_or_explain(kube, rt, body)
    if wait:
        obj = wait_for(kube, rt, namespace, name, timeout)
    _show(obj, as_json)
    if wait:
        outcome(obj)


def _require_repository(kube: Kube, namespace: str, name: str) -> None:
    """The Repository a new object names must be in mover's namespace: a missing one most often
    means -n was given the app's namespace."""
    try:
        found = kube.find(api.REPOSITORY, namespace, name)
    except KubeError:
        return  # not allowed to read it, or the API is away: the controller will say
    if found is None:
        raise UsageError(
            f"no Repository {name!r} in namespace {namespace!r}: -n/--namespace is mover's own "
            f"namespace (default {DEFAULT_NAMESPACE}), where its Repositories are; name the "
            "app's namespaces with --include-namespace"
        )


def _show(obj: Obj, as_json: bool) -> None:
    if as_json:
        emit_json(summary(obj))
        return
    s = summary(obj)
    phase = s["phase"] if obj.get("kind") != "Schedule" else "created"
    click.echo(f"{s['kind']} {s['namespace']}/{s['name']}: {phase}")
    if s["message"]:
        click.echo(f"  {s['reason']}: {s['message']}")
    if obj.get("kind") == "Restore":
        _show_fidelity(s["status"].get("report") or {})


def _show_fidelity(report: Obj) -> None:
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


@app.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@with_kube
def list_cmd(
    as_json: bool, kubeconfig: str | None, kube_context: str | None, namespace: str
) -> None:
    """List Schedules, Backups and Restores: age, state (with the reason when not ready),
    volumes (count and size)."""
    kube = connect(kubeconfig, kube_context)
    backups = [list_entry(b) for b in kube.list(api.BACKUP, namespace)]
    restores = [list_entry(r) for r in kube.list(api.RESTORE, namespace)]
    schedules = [list_entry(r) for r in kube.list(api.SCHEDULE, namespace)]
    if as_json:
        emit_json({"backups": backups, "restores": restores, "schedules": schedules})
        return
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


def progress_text(progress: Obj) -> str:
    """` 1.1 GiB of 7.5 GiB, 295.6 MiB/s, ETA 1m10s` from a progress (item_progress(),
    total_progress()) in binary units, as the data path prints sizes; "" if none. No rate
    until there is one to measure (no bytes done yet)."""
    if not progress:
        return ""
    done, total = progress.get("bytesDone") or 0, progress.get("bytesTotal") or 0
    text = f" {format_size(done)}" + (f" of {format_size(total)}" if total else "")
    if progress.get("bytesPerSecond"):
        text += f", {format_rate(progress['bytesPerSecond'])}"
    if progress.get("etaSeconds") and done < total:
        text += f", ETA {format_duration(progress['etaSeconds'])}"
    return text


@app.command("describe")
@click.argument("name")
@click.option(
    "--restore", "is_restore", is_flag=True, help="NAME is a Restore (default: a Backup)."
)
@click.option(
    "--objects",
    "show_objects",
    is_flag=True,
    help="Name every object a Backup captured (by default: counts per kind).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@with_kube
def describe_cmd(
    name: str,
    is_restore: bool,
    show_objects: bool,
    as_json: bool,
    kubeconfig: str | None,
    kube_context: str | None,
    namespace: str,
) -> None:
    """Show a Backup (volumes and their progress, root hash, the objects it captured by kind,
    the external names it recorded) or a Restore (its report). A Backup's objects are read
    from its repository (with your credentials: the repository's password Secret)."""
    kube = connect(kubeconfig, kube_context)
    rt = api.RESTORE if is_restore else api.BACKUP
    obj = kube.find(rt, namespace, name)
    if obj is None:
        raise UsageError(f"no {rt.kind} {namespace}/{name}; see `mover app list`")
    items = {i["metadata"]["name"]: i for i in _work_items(kube, obj)}
    progress = total_progress(list(items.values()), _volume_sizes(obj))
    captured = _capture_report(kube, obj) if rt is api.BACKUP else {}
    if as_json:
        emit_json({**list_entry(obj), "progress": progress, **captured})
        return
    s = summary(obj)
    status = s["status"]
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
    if rt is api.BACKUP:
        for key in ("objectCount", "objectsSnapshot", "manifestSnapshot", "rootHash", "expiration"):
            if status.get(key):
                click.echo(f"  {key}: {status[key]}")
        for v in status.get("volumes") or []:
            line = (
                f"  volume {v.get('namespace')}/{v.get('pvc')} on {v.get('node')}: "
                f"{v.get('phase')} {v.get('snapshot', '')[:8]} {v.get('message') or ''}".rstrip()
            )
            item = items.get(str(v.get("volumeBackup") or ""))
            if item is not None:
                line += "," + progress_text(item_progress(item))
            click.echo(line.rstrip(","))
        _show_capture(captured, show_objects)
    else:
        report = status.get("report") or {}
        for entry in [*(report.get("objects") or []), *(report.get("volumes") or [])]:
            where = f"{entry.get('namespace')}/" if entry.get("namespace") else ""
            reason = f" ({entry['reason']})" if entry.get("reason") else ""
            what = f"{entry.get('kind')} {where}{entry.get('name')}"
            line = f"  {entry.get('result')}: {what}{reason}"
            item = items.get(str(entry.get("volumeRestore") or ""))
            if item is not None:
                line += "," + progress_text(item_progress(item))
            click.echo(line.rstrip(","))
        _show_fidelity(report)
        _show_external(report)


def _show_external(report: Obj) -> None:
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
    _plain_table(["KIND", "OBJECT", "WHAT", "RECORDED", "CURRENT", "STATE"], rows)


@app.command("cancel")
@click.argument("name")
@click.option(
    "--restore", "is_restore", is_flag=True, help="NAME is a Restore (default: a Backup)."
)
@with_kube
def cancel_cmd(
    name: str, is_restore: bool, kubeconfig: str | None, kube_context: str | None, namespace: str
) -> None:
    """Stop a running Backup (what it stored is forgotten) or Restore (objects made stay)."""
    kube = connect(kubeconfig, kube_context)
    rt = api.RESTORE if is_restore else api.BACKUP
    obj = kube.find(rt, namespace, name)
    if obj is None:
        raise UsageError(f"no {rt.kind} {namespace}/{name}; see `mover app list`")
    phase = (obj.get("status") or {}).get("phase") or api.NEW
    if phase in api.DONE_PHASES:
        raise UsageError(f"{rt.kind} {name} is {phase} already; nothing to cancel")
    kube.patch(rt, namespace, name, {"spec": {"cancel": True}})
    click.echo(f"{rt.kind} {namespace}/{name}: cancel requested")


@app.command("verify")
@click.argument("name")
@click.option("--read-data", is_flag=True, help="Read and verify every byte, not just structure.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@with_kube
def verify_cmd(
    name: str,
    read_data: bool,
    as_json: bool,
    kubeconfig: str | None,
    kube_context: str | None,
    namespace: str,
) -> None:
    """Check that a Backup's root hash still attests what its repository holds (reads the
    repository's password Secret with your credentials)."""
    from mover_k8s.repos import Repositories
    from mover_k8s.verify import verify_backup

    kube = connect(kubeconfig, kube_context)
    backup = kube.find(api.BACKUP, namespace, name)
    if backup is None:
        raise UsageError(f"no Backup {namespace}/{name}; see `mover app list`")
    status = backup.get("status") or {}
    if not status.get("rootHash"):
        raise UsageError(
            f"Backup {name} is {status.get('phase') or 'New'}: it has no root hash yet"
        )
    repo = Repositories(kube).open(namespace, str((backup.get("spec") or {}).get("repository")))
    try:
        verified = verify_backup(repo, status, read_data)
    finally:
        repo.close()
    if as_json:
        emit_json(
            {
                "name": name,
                "rootHash": verified.root_hash,
                "parts": verified.parts,
                "readData": read_data,
                "chunks": verified.chunks,
                "bytes": verified.bytes,
            }
        )
        return
    what = (
        f"{len(verified.parts)} parts, {verified.bytes} bytes read"
        if read_data
        else (f"{len(verified.parts)} parts, structure")
    )
    click.echo(f"Backup {name}: root {verified.root_hash} verified ({what})")


def _captured_objects(kube: Kube, namespace: str, name: str) -> tuple[Obj, Obj]:
    """(the Backup, its capture document), read back from the repository; the manifest is
    checked against the Backup's root hash first when the Backup has one."""
    backup = kube.find(api.BACKUP, namespace, name)
    if backup is None:
        raise UsageError(f"no Backup {namespace}/{name}; see `mover app list`")
    return backup, _read_capture(kube, backup)


def _read_capture(kube: Kube, backup: Obj) -> Obj:
    """A Backup's capture document, read back from the repository; the manifest is checked
    against the Backup's root hash first when the Backup has one."""
    from mover_k8s import store
    from mover_k8s.repos import Repositories

    namespace, name = backup["metadata"]["namespace"], backup["metadata"]["name"]
    status = backup.get("status") or {}
    if not status.get("objectsSnapshot"):
        raise UsageError(
            f"Backup {name} is {status.get('phase') or 'New'}: it has captured no objects yet"
        )
    repo = Repositories(kube).open(namespace, str((backup.get("spec") or {}).get("repository")))
    try:
        objects_id = str(status["objectsSnapshot"])
        if status.get("manifestSnapshot"):
            manifest = repo.find_snapshot(str(status["manifestSnapshot"]))
            doc = store.verify_manifest(repo, manifest, status.get("rootHash"))
            objects_id = str(doc["objects"]["snapshot"])
        return store.load_document(repo, objects_id)
    finally:
        repo.close()


def _capture_report(kube: Kube, backup: Obj) -> Obj:
    """What a Backup captured, for describe: {"captured": {"objects": N, "kinds": [{"kind",
    "group", "count", "objects": [NAMESPACE/NAME, ...]}, ...]}, "external": [{"kind",
    "namespace", "name", "type", "value"}, ...]}; {"captureError": why} when the repository
    cannot be read; {} before anything was captured."""
    from mover_k8s.external import external_names

    if not (backup.get("status") or {}).get("objectsSnapshot"):
        return {}
    try:
        objects = list(_read_capture(kube, backup).get("objects") or [])
    except MoverError as exc:
        return {"captureError": str(exc)}
    kinds: dict[tuple[str, str], list[str]] = {}
    for obj in objects:
        meta = obj.get("metadata") or {}
        group = str(obj.get("apiVersion") or "").rpartition("/")[0]
        where = f"{meta['namespace']}/" if meta.get("namespace") else ""
        kinds.setdefault((str(obj.get("kind")), group), []).append(f"{where}{meta.get('name')}")
    return {
        "captured": {
            "objects": len(objects),
            "kinds": [
                {"kind": kind, "group": group, "count": len(names), "objects": sorted(names)}
                for (kind, group), names in sorted(kinds.items())
            ],
        },
        "external": [
            {
                "kind": e.kind,
                "namespace": e.namespace,
                "name": e.name,
                "type": e.type,
                "value": e.value,
            }
            for e in external_names(objects)
        ],
    }


def _show_capture(report: Obj, show_objects: bool) -> None:
    """describe's sections on what a Backup captured (_capture_report)."""
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
    _plain_table(["KIND", "COUNT"], [[label(k), str(k["count"])] for k in kinds])
    if show_objects and kinds:
        click.echo()
        _plain_table(["KIND", "OBJECT"], [[label(k), o] for k in kinds for o in k["objects"]])
    external = report.get("external") or []
    if not external:
        click.echo("\nExternal names recorded: none")
        return
    click.echo("\nExternal names recorded (outside the cluster; they must follow a move):")
    _plain_table(
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


@app.command("diff")
@click.argument("name")
@click.option(
    "--desired",
    required=True,
    type=click.Path(path_type=Path),
    help="Directory of manifests (a git checkout): *.yaml, *.yml, *.json; or a kustomization "
    "(built with `kubectl kustomize`); or a Helm chart (rendered with `helm template`).",
)
@click.option(
    "--helm-values",
    multiple=True,
    # Checked in the command, not by click: the docs' example commands parse without the files.
    type=click.Path(dir_okay=False, path_type=Path),
    help="Values file for the chart --desired names (repeatable; later files win).",
)
@click.option(
    "--helm-release",
    help="Release name the chart is rendered with [default: the chart's name].",
)
@click.option(
    "--default-namespace",
    help="Namespace of desired objects that name none [default: the Backup's one namespace].",
)
@click.option("--exit-code", is_flag=True, help="Exit 1 when there is drift (as git diff does).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@with_kube
def diff_cmd(
    name: str,
    desired: Path,
    helm_values: tuple[Path, ...],
    helm_release: str | None,
    default_namespace: str | None,
    exit_code: bool,
    as_json: bool,
    kubeconfig: str | None,
    kube_context: str | None,
    namespace: str,
) -> None:
    """What ran vs. what git declared: the objects a Backup captured live against a directory of
    manifests, a kustomization or a Helm chart. Exit 0 (with --exit-code: 1 when they differ)."""
    from mover_k8s.diff import desired_source, diff, load_desired

    # Bad input (and a missing kubectl or helm) fails before the cluster is asked. A chart is
    # rendered once the namespace is known: templates may name .Release.Namespace.
    for values in helm_values:
        if not values.is_file():
            raise UsageError(f"Invalid value for '--helm-values': {values} is not a file")
    source = desired_source(desired, helm_values, helm_release)
    wanted = None if source.form == "chart" else load_desired(source)
    kube = connect(kubeconfig, kube_context)
    backup, capture = _captured_objects(kube, namespace, name)
    if default_namespace is None:
        scope = (capture.get("scope") or {}).get("namespaces") or []
        default_namespace = scope[0] if len(scope) == 1 else ""
    if wanted is None:
        wanted = load_desired(source, default_namespace)
    report = diff(capture.get("objects") or [], wanted, default_namespace)
    if as_json:
        emit_json(
            {
                "backup": name,
                "rootHash": (backup.get("status") or {}).get("rootHash"),
                "desired": str(desired),
                "desiredForm": source.form,
                **report.as_dict(),
            }
        )
    else:
        _show_diff(report)
    if exit_code and report.drift:
        raise MoverError(
            f"drift: {len(report.only_in_cluster)} only in the cluster, "
            f"{len(report.only_in_git)} only in git, {len(report.changed)} changed"
        )


def _plain_table(columns: list[str], rows: list[list[str]]) -> None:
    """Columns padded as kubectl prints them, never wrapped: long field paths and hostnames
    stay on one line, for people and for grep."""
    widths = [max(len(r[i]) for r in [columns, *rows]) for i in range(len(columns))]
    for row in [columns, *rows]:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def _show_diff(report: Report) -> None:
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
        _plain_table(["DRIFT", "KIND", "OBJECT", "FIELD", "GIT", "LIVE"], rows)
        click.echo()
    click.echo(
        f"{len(report.only_in_cluster)} only in the cluster, {len(report.only_in_git)} only in "
        f"git, {len(report.changed)} changed, {report.same} the same, {len(report.ignored)} "
        "ignored (made by the cluster)"
    )
    if report.external:
        click.echo("\nExternal names recorded live (outside the cluster; they must follow a move):")
        _plain_table(
            ["KIND", "OBJECT", "TYPE", "VALUE"],
            [[e.kind, where(e.namespace, e.name), e.type, e.value] for e in report.external],
        )


@app.command("migrate")
@click.argument("name")
@click.option(
    "--to-context", required=True, help="kubeconfig context of the target cluster (mover there)."
)
@click.option("--to-kubeconfig", help="kubeconfig of the target [default: --kubeconfig's].")
@click.option("--to-namespace", help="mover's namespace on the target [default: --namespace].")
@click.option(
    "--include-namespace", "namespaces", multiple=True, help="An app (namespace) to move."
)
@click.option("--namespace-selector", help="The apps: namespaces with these labels (KEY=VALUE).")
@click.option(
    "--exclude-namespace", "excluded_namespaces", multiple=True, help="Never this namespace."
)
@click.option("--repository", default="default", show_default=True, help="Source Repository.")
@click.option(
    "--target-repository",
    help="The target's Repository: the same repository, or a replica [default: --repository].",
)
@click.option("--namespace-mapping", multiple=True, help="OLD=NEW: an app's target namespace.")
@click.option("--storage-class-mapping", multiple=True, help="OLD=NEW.")
@click.option(
    "--seed-rounds",
    default=1,
    show_default=True,
    type=click.IntRange(0, 100),
    help="Incremental backups restored into the target's volumes while the app runs.",
)
@click.option(
    "--phase",
    type=click.Choice(["all", "seed", "cutover"]),
    default="all",
    show_default=True,
    help="seed: only seed (again: more rounds); cutover: the last backup and the full restore.",
)
@click.option(
    "--parallel",
    default=20,
    show_default=True,
    type=click.IntRange(1, 10000),
    help="Apps in flight at once.",
)
@click.option("--external-wait", metavar="DURATION", help="The target Restores' externalWait.")
@click.option(
    "--desired",
    type=click.Path(path_type=Path),
    help="Git checkout: drift of each app (DIR/NAMESPACE when there, else DIR) against git.",
)
@click.option("--poll", default=1.0, show_default=True, help="Seconds between status reads.")
@click.option(
    "--timeout", default=86400.0, show_default=True, help="Seconds; apps not done then fail."
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@with_kube
def migrate_cmd(
    name: str,
    to_context: str,
    to_kubeconfig: str | None,
    to_namespace: str | None,
    namespaces: tuple[str, ...],
    namespace_selector: str | None,
    excluded_namespaces: tuple[str, ...],
    repository: str,
    target_repository: str | None,
    namespace_mapping: tuple[str, ...],
    storage_class_mapping: tuple[str, ...],
    seed_rounds: int,
    phase: str,
    parallel: int,
    external_wait: str | None,
    desired: Path | None,
    poll: float,
    timeout: float,
    as_json: bool,
    kubeconfig: str | None,
    kube_context: str | None,
    namespace: str,
) -> None:
    """Move apps (namespaces) to the cluster of --to-context, each on its own: seed its volumes
    there by incremental backups while it runs, then cut over (a last backup, a full restore
    by difference). Both clusters run mover and share the repository (or a replica). Exit 1
    when an app failed (the others still move)."""
    from mover_k8s import apps, migrate

    included = _listing(namespaces)
    ns_labels = parse_labels(namespace_selector)
    if not included and not ns_labels:
        raise UsageError("say which apps: --include-namespace NS and/or --namespace-selector K=V")
    mapping = parse_mapping(namespace_mapping, "--namespace-mapping")
    classes = parse_mapping(storage_class_mapping, "--storage-class-mapping")
    if desired is not None:
        from mover_k8s.diff import desired_source

        desired_source(desired)  # a directory, buildable: checked before anything is made
    if seed_rounds == 0 and phase == "seed":
        raise UsageError("--phase seed with --seed-rounds 0 has nothing to do")
    source = connect(kubeconfig, kube_context)
    target = connect(to_kubeconfig or kubeconfig, to_context)
    missing = apps.missing_namespaces(source, included)
    if missing:
        raise UsageError(f"--include-namespace: no namespace {', '.join(missing)} on the source")
    chosen = apps.select_namespaces(
        source, ns_labels, included, _listing(excluded_namespaces), namespace
    )
    plan = migrate.Plan(
        name,
        chosen,
        mapping,
        classes,
        seed_rounds,
        phase,
        parallel,
        external_wait,
        desired,
        poll,
        timeout,
    )
    notify = (lambda line: click.echo(line, err=True)) if sys.stderr.isatty() else None
    migration = migrate.Migration(
        migrate.Side(source, namespace, repository),
        migrate.Side(target, to_namespace or namespace, target_repository or repository),
        plan,
        notify,
    )
    migration.check()
    reports = migration.run()
    totals = migrate.summary(reports)
    if as_json:
        emit_json({"migration": name, "summary": totals, "apps": reports})
    else:
        _show_migration(name, reports, totals)
    failed = [r for r in reports if r["state"] != "completed"]
    if failed:
        raise MoverError(
            f"{len(failed)} of {len(reports)} apps did not move: "
            + "; ".join(f"{r['app']} ({r['failedStep']}): {r['error']}" for r in failed)
        )


def _show_migration(name: str, reports: list[Obj], totals: Obj) -> None:
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
    _plain_table(["APP", "STATE", "CREATED", "VOLUMES", "MOVED", "EXTERNAL", "DRIFT"], rows)
    click.echo(
        f"{totals['completed']} of {totals['apps']} apps moved, {totals['failed']} failed; "
        f"{totals['objectsCreated']} objects created, {totals['volumesRestored']} volumes "
        f"restored, {format_size(totals['bytesMoved'])} moved"
    )
    external = [(r, e) for r in reports for e in r["external"]]
    if external:
        click.echo("\nExternal names to re-point (recorded on the source; current on the target):")
        _plain_table(
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


@click.group("agent")
def agent() -> None:
    """Run mover's Kubernetes components (in their pods)."""


def _run_until_signal(run: Any, registry: CollectorRegistry, metrics_port: int) -> None:
    from mover_k8s.metrics import Server

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    server = None
    if metrics_port:
        try:
            server = Server(registry, metrics_port)
        except OSError as exc:
            raise UsageError(f"--metrics-port {metrics_port}: {exc.strerror or exc}") from None
        logging.getLogger("mover.k8s").info("metrics on port %d (/metrics)", server.port)
    try:
        run(stop)
    finally:
        if server is not None:
            server.close()


@agent.command("controller")
@click.option(
    "--watch-namespace", help="Only this namespace's Backups and Restores [default: all]."
)
@click.option("--interval", default=2.0, show_default=True, help="Seconds between passes.")
@click.option(
    "--agent-grace",
    default=60.0,
    show_default=True,
    help="Seconds a new Backup waits for a missing node agent before it fails.",
)
@click.option(
    "--bind-timeout",
    default=600.0,
    show_default=True,
    help="Seconds a restored claim may take to be bound before its volume fails.",
)
@click.option(
    "--lease-seconds",
    default=15.0,
    show_default=True,
    help="A standby replica takes over when the leader's Lease is this old.",
)
@click.option("--no-watch", is_flag=True, help="Poll only: no watches between passes.")
@click.option(
    "--metrics-port",
    default=9480,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="Serve Prometheus metrics on this port (/metrics); 0: off.",
)
@with_kube
def controller_cmd(
    watch_namespace: str | None,
    interval: float,
    agent_grace: float,
    bind_timeout: float,
    lease_seconds: float,
    no_watch: bool,
    metrics_port: int,
    kubeconfig: str | None,
    kube_context: str | None,
    namespace: str,
) -> None:
    """The controller: captures, hands out volume work, restores (one Deployment)."""
    from mover_k8s.controller.manager import Controller
    from mover_k8s.metrics import ControllerMetrics

    kube = connect(kubeconfig, kube_context)
    controller = Controller(
        kube,
        namespace,
        watch_namespace,
        interval,
        agent_grace,
        bind_timeout,
        lease_seconds,
        watch=not no_watch,
        metrics=ControllerMetrics(),
    )
    _run_until_signal(controller.run, controller.metrics.registry, metrics_port)


@agent.command("node")
@click.option(
    "--node", "node", envvar="NODE_NAME", required=True, help="This node's name [env: NODE_NAME]."
)
@click.option(
    "--path-root", default="", help="Where the host's filesystem is mounted (e.g. /host)."
)
@click.option(
    "--kubelet-dir",
    default="/var/lib/kubelet",
    show_default=True,
    help="The kubelet's directory on this node (where volumes are mounted).",
)
@click.option("--no-snapshots", is_flag=True, help="Path exposer only (tests, single machines).")
@click.option(
    "--workers",
    default=1,
    show_default=True,
    type=click.IntRange(1, 64),
    help="Volume jobs this node runs at once.",
)
@click.option("--interval", default=2.0, show_default=True, help="Seconds between passes.")
@click.option(
    "--progress-interval",
    default=2.0,
    show_default=True,
    help="Seconds between progress updates in a work item's status.",
)
@click.option("--no-watch", is_flag=True, help="Poll only: no watches between passes.")
@click.option(
    "--metrics-port",
    default=9481,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="Serve Prometheus metrics on this port (/metrics); 0: off.",
)
@with_kube
def node_cmd(
    node: str,
    path_root: str,
    kubelet_dir: str,
    no_snapshots: bool,
    workers: int,
    interval: float,
    progress_interval: float,
    no_watch: bool,
    metrics_port: int,
    kubeconfig: str | None,
    kube_context: str | None,
    namespace: str,
) -> None:
    """The node agent: runs this node's VolumeBackups and VolumeRestores (the DaemonSet)."""
    from mover_k8s.node.agent import NodeAgent
    from mover_k8s.node.exposer import Exposer, PathExposer, SnapshotExposer

    kube = connect(kubeconfig, kube_context)
    exposers: dict[str, Exposer] = {"path": PathExposer(kube, path_root)}
    if not no_snapshots:
        exposers["snapshot"] = SnapshotExposer(kube, node, namespace, kubelet_dir)
    agent_ = NodeAgent(
        kube,
        node,
        namespace,
        exposers=exposers,
        workers=workers,
        interval=interval,
        progress_interval=progress_interval,
        watch=not no_watch,
    )
    _run_until_signal(agent_.run, agent_.metrics.registry, metrics_port)


def crds_dir() -> Traversable:
    """Where mover's CRDs are: mover_k8s/crds in an installed wheel (setup.py copies them there
    from the Helm chart's crds/ when it builds one), else the chart's crds/ of the source
    checkout this module runs from (an editable install): agent/chart/crds, their only copy."""
    packaged = resources.files("mover_k8s") / "crds"
    if packaged.is_dir():
        return packaged
    source = Path(__file__).resolve().parent.parent / "chart" / "crds"
    if source.is_dir():
        return source
    raise MoverError(
        f"mover's CRDs are missing: neither {packaged} (an installed wheel) nor {source} (a source "
        "checkout) exists; reinstall mover from a wheel built with setup.py, which packages "
        "agent/chart/crds"
    )


@agent.command("crds")
def crds_cmd() -> None:
    """Print mover's CRDs (for `kubectl apply -f -`)."""
    found = crds_dir()
    docs = [(found / f"{rt.plural}.yaml").read_text() for rt in api.OURS]
    click.echo("---\n".join(docs), nl=False)


def load_crds() -> list[Obj]:
    """The CRDs as objects."""
    import yaml

    found = crds_dir()
    return [dict(yaml.safe_load((found / f"{rt.plural}.yaml").read_text())) for rt in api.OURS]


__all__ = ["agent", "app", "load_crds"]
