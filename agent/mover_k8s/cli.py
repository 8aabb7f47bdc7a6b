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
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from mover.cli.output import emit_json, emit_table
from mover.errors import MoverError, UsageError
from mover_k8s import api
from mover_k8s.conditions import condition
from mover_k8s.errors import Conflict, KubeError
from mover_k8s.k8s.types import Obj, ResourceType

if TYPE_CHECKING:  # the client is imported when a command runs: `mover` starts fast without it
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
        "namespace",
        default=DEFAULT_NAMESPACE,
        show_default=True,
        envvar="MOVER_NAMESPACE",
        help="Namespace of mover's Backups, Restores and Repositories.",
    ),
]


def with_kube(f: Any) -> Any:
    for option in reversed(kube_options):
        f = option(f)
    return f


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
    """`Backup nightly: WaitingForVolumes, 1 of 2 volumes, 1.2 GB of 8.0 GB, ...` for people:
    the phase, and the volumes' progress summed over their work items."""
    kind, meta = obj.get("kind", ""), obj["metadata"]
    status = obj.get("status") or {}
    line = f"{kind} {meta['name']}: {status.get('phase') or api.NEW}"
    rt = api.VOLUME_BACKUP if kind == "Backup" else api.VOLUME_RESTORE
    label = api.BACKUP_LABEL if kind == "Backup" else api.RESTORE_LABEL
    items = kube.list(rt, meta["namespace"], label_selector=f"{label}={meta['name']}")
    if not items:
        return line
    done = sum(1 for i in items if (i.get("status") or {}).get("phase") in api.DONE_PHASES)
    progress = [(i.get("status") or {}).get("progress") or {} for i in items]
    total: Obj = {
        "bytesDone": sum(p.get("bytesDone", 0) for p in progress),
        "bytesTotal": sum(p.get("bytesTotal", 0) for p in progress),
        "bytesPerSecond": sum(
            p.get("bytesPerSecond", 0)
            for p, i in zip(progress, items, strict=True)
            if (i.get("status") or {}).get("phase") == api.RUNNING
        ),
        "etaSeconds": max((p.get("etaSeconds", 0) for p in progress), default=0),
    }
    return f"{line}, {done} of {len(items)} volumes," + progress_text(total)


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
    wait: bool,
    timeout: float,
    as_json: bool,
    kubeconfig: str | None,
    kube_context: str | None,
    namespace: str,
) -> None:
    """Create a Backup NAME of the given namespaces and/or labelled objects."""
    included = _listing(namespaces)
    labels = parse_labels(selector)
    if not included and not labels:
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
    _submit(kube, api.BACKUP, namespace, name, spec, wait, timeout, as_json)


@app.command("schedule")
@click.argument("name")
@click.option("--cron", required=True, help="When, in UTC: a cron expression, e.g. '0 2 * * *'.")
@click.option("--keep-last", default=7, show_default=True, type=click.IntRange(1, 10000))
@click.option("--include-namespace", "namespaces", multiple=True, help="Namespace to capture.")
@click.option("--selector", "-l", help="Capture the objects with these labels (KEY=VALUE,...).")
@click.option("--repository", default="default", show_default=True)
@click.option("--no-volumes", is_flag=True, help="Capture objects only.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@with_kube
def schedule_cmd(
    name: str,
    cron: str,
    keep_last: int,
    namespaces: tuple[str, ...],
    selector: str | None,
    repository: str,
    no_volumes: bool,
    as_json: bool,
    kubeconfig: str | None,
    kube_context: str | None,
    namespace: str,
) -> None:
    """Create a Schedule NAME: a Backup at every CRON time, keeping the last --keep-last."""
    from croniter import croniter

    if not croniter.is_valid(cron):
        raise UsageError(f"--cron {cron!r} is not a cron expression (e.g. '0 2 * * *')")
    included = _listing(namespaces)
    labels = parse_labels(selector)
    if not included and not labels:
        raise UsageError("say what to back up: --include-namespace NS and/or --selector KEY=VALUE")
    template: Obj = {
        "repository": repository,
        "includedNamespaces": included,
        "snapshotVolumes": not no_volumes,
    }
    if labels:
        template["labelSelector"] = labels
    kube = connect(kubeconfig, kube_context)
    spec = {"schedule": cron, "keepLast": keep_last, "template": template}
    _submit(kube, api.SCHEDULE, namespace, name, spec, False, 0, as_json)


@app.command("restore")
@click.argument("name")
@click.option("--from-backup", "backup", required=True, help="The Backup (NAME or NAMESPACE/NAME).")
@click.option("--mode", type=click.Choice(api.MODES), default="full", show_default=True)
@click.option("--namespace-mapping", multiple=True, help="OLD=NEW (repeat, or comma-separate).")
@click.option("--storage-class-mapping", multiple=True, help="OLD=NEW.")
@click.option("--include-kinds", multiple=True)
@click.option("--exclude-kinds", multiple=True)
@click.option("--include-names", multiple=True, help="NAME or Kind/NAME.")
@click.option("--exclude-names", multiple=True)
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
@click.option("--wait", is_flag=True, help="Follow the restore until it ends.")
@click.option("--timeout", default=3600.0, show_default=True)
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
    wait: bool,
    timeout: float,
    as_json: bool,
    kubeconfig: str | None,
    kube_context: str | None,
    namespace: str,
) -> None:
    """Create a Restore NAME of a backup: full, data-only or resources-only."""
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


def _show(obj: Obj, as_json: bool) -> None:
    if as_json:
        emit_json(summary(obj))
        return
    s = summary(obj)
    phase = s["phase"] if obj.get("kind") != "Schedule" else "created"
    click.echo(f"{s['kind']} {s['namespace']}/{s['name']}: {phase}")
    if s["message"]:
        click.echo(f"  {s['reason']}: {s['message']}")


@app.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@with_kube
def list_cmd(
    as_json: bool, kubeconfig: str | None, kube_context: str | None, namespace: str
) -> None:
    """List Schedules, Backups and Restores."""
    kube = connect(kubeconfig, kube_context)
    backups = [summary(b) for b in kube.list(api.BACKUP, namespace)]
    restores = [summary(r) for r in kube.list(api.RESTORE, namespace)]
    schedules = [summary(r) for r in kube.list(api.SCHEDULE, namespace)]
    if as_json:
        emit_json({"backups": backups, "restores": restores, "schedules": schedules})
        return
    emit_table(
        "Schedules",
        ["name", "cron", "keep", "last backup"],
        [
            [
                x["name"],
                str(x["spec"].get("schedule", "")),
                str(x["spec"].get("keepLast", "")),
                str(x["status"].get("lastBackup", "")),
            ]
            for x in schedules
        ],
    )
    emit_table(
        "Backups",
        ["name", "phase", "objects", "volumes", "root"],
        [
            [
                b["name"],
                b["phase"],
                str(b["status"].get("objectCount", "")),
                str(b["status"].get("volumeCount", "")),
                str(b["status"].get("rootHash", ""))[:16],
            ]
            for b in backups
        ],
    )
    emit_table(
        "Restores",
        ["name", "backup", "mode", "phase"],
        [
            [r["name"], r["spec"].get("backup", ""), r["spec"].get("mode", "full"), r["phase"]]
            for r in restores
        ],
    )


def progress_text(progress: Obj) -> str:
    """` 1.2 GB of 8.0 GB, 310 MB/s, ETA 22s` from a work item's progress ("" if none)."""
    if not progress:
        return ""
    done, total = progress.get("bytesDone", 0), progress.get("bytesTotal", 0)
    text = f" {done / 1e9:.1f} GB" + (f" of {total / 1e9:.1f} GB" if total else "")
    text += f", {progress.get('bytesPerSecond', 0) / 1e6:,.0f} MB/s"
    return text + (f", ETA {progress['etaSeconds']}s" if progress.get("etaSeconds") else "")


@app.command("describe")
@click.argument("name")
@click.option(
    "--restore", "is_restore", is_flag=True, help="NAME is a Restore (default: a Backup)."
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@with_kube
def describe_cmd(
    name: str,
    is_restore: bool,
    as_json: bool,
    kubeconfig: str | None,
    kube_context: str | None,
    namespace: str,
) -> None:
    """Show a Backup (volumes, snapshots, root hash) or a Restore (its report)."""
    kube = connect(kubeconfig, kube_context)
    rt = api.RESTORE if is_restore else api.BACKUP
    obj = kube.find(rt, namespace, name)
    if obj is None:
        raise UsageError(f"no {rt.kind} {namespace}/{name}; see `mover app list`")
    if as_json:
        emit_json(summary(obj))
        return
    s = summary(obj)
    status = s["status"]
    click.echo(f"{s['kind']} {s['namespace']}/{s['name']}: {s['phase']}")
    if s["message"]:
        click.echo(f"  {s['reason']}: {s['message']}")
    if rt is api.BACKUP:
        for key in ("objectCount", "objectsSnapshot", "manifestSnapshot", "rootHash", "expiration"):
            if status.get(key):
                click.echo(f"  {key}: {status[key]}")
        for v in status.get("volumes") or []:
            line = (
                f"  volume {v.get('namespace')}/{v.get('pvc')} on {v.get('node')}: "
                f"{v.get('phase')} {v.get('snapshot', '')[:8]} {v.get('message') or ''}".rstrip()
            )
            if v.get("phase") not in api.DONE_PHASES and v.get("volumeBackup"):
                item = kube.find(api.VOLUME_BACKUP, namespace, v["volumeBackup"])
                line += progress_text(((item or {}).get("status") or {}).get("progress") or {})
            click.echo(line)
    else:
        report = status.get("report") or {}
        for entry in [*(report.get("objects") or []), *(report.get("volumes") or [])]:
            where = f"{entry.get('namespace')}/" if entry.get("namespace") else ""
            reason = f" ({entry['reason']})" if entry.get("reason") else ""
            click.echo(
                f"  {entry.get('result')}: {entry.get('kind')} {where}{entry.get('name')}{reason}"
            )
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
    from mover_k8s import store
    from mover_k8s.repos import Repositories

    backup = kube.find(api.BACKUP, namespace, name)
    if backup is None:
        raise UsageError(f"no Backup {namespace}/{name}; see `mover app list`")
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
        return backup, store.load_document(repo, objects_id)
    finally:
        repo.close()


@app.command("diff")
@click.argument("name")
@click.option(
    "--desired",
    required=True,
    type=click.Path(path_type=Path),
    help="Directory of manifests (a git checkout, kustomize build output): *.yaml, *.yml, *.json.",
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
    default_namespace: str | None,
    exit_code: bool,
    as_json: bool,
    kubeconfig: str | None,
    kube_context: str | None,
    namespace: str,
) -> None:
    """What ran vs. what git declared: the objects a Backup captured live against a directory of
    manifests. Exit 0 (with --exit-code: 1 when they differ)."""
    from mover_k8s.diff import diff, load_desired

    wanted = load_desired(desired)  # bad input fails before the cluster is asked
    kube = connect(kubeconfig, kube_context)
    backup, capture = _captured_objects(kube, namespace, name)
    if default_namespace is None:
        scope = (capture.get("scope") or {}).get("namespaces") or []
        default_namespace = scope[0] if len(scope) == 1 else ""
    report = diff(capture.get("objects") or [], wanted, default_namespace)
    if as_json:
        emit_json(
            {
                "backup": name,
                "rootHash": (backup.get("status") or {}).get("rootHash"),
                "desired": str(desired),
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
@click.option("--kubelet-dir", default="/var/lib/kubelet", show_default=True)
@click.option("--no-snapshots", is_flag=True, help="Path exposer only (tests, single machines).")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64))
@click.option("--interval", default=2.0, show_default=True)
@click.option("--progress-interval", default=2.0, show_default=True)
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
        exposers["snapshot"] = SnapshotExposer(kube, node, kubelet_dir)
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


@agent.command("crds")
def crds_cmd() -> None:
    """Print mover's CRDs (for `kubectl apply -f -`)."""
    docs = [
        (resources.files("mover_k8s") / "crds" / f"{rt.plural}.yaml").read_text() for rt in api.OURS
    ]
    click.echo("---\n".join(docs), nl=False)


def load_crds() -> list[Obj]:
    """The CRDs as objects."""
    import yaml

    return [
        dict(
            yaml.safe_load(
                (resources.files("mover_k8s") / "crds" / f"{rt.plural}.yaml").read_text()
            )
        )
        for rt in api.OURS
    ]


__all__ = ["agent", "app", "load_crds"]
