"""`mover app list`, `describe`, `cancel` and `verify`: the Backups, Restores and Schedules
there are, what became of them, stopping one, and checking what a Backup stored."""

from __future__ import annotations

import click

from mover.api import emit_json
from mover.errors import UsageError
from mover_k8s import api
from mover_k8s.cli.captured import capture_report
from mover_k8s.cli.options import connect, with_kube
from mover_k8s.cli.progress import total_progress, volume_sizes, work_items
from mover_k8s.cli.render import list_entry, show_backup, show_list, show_restore


@click.command("list")
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
    show_list(schedules, backups, restores)


@click.command("describe")
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
    items = {i["metadata"]["name"]: i for i in work_items(kube, obj)}
    progress = total_progress(list(items.values()), volume_sizes(obj))
    captured = capture_report(kube, obj) if rt is api.BACKUP else {}
    if as_json:
        emit_json({**list_entry(obj), "progress": progress, **captured})
        return
    if rt is api.BACKUP:
        show_backup(obj, items, progress, captured, show_objects)
    else:
        show_restore(obj, items, progress)


@click.command("cancel")
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


@click.command("verify")
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
    from mover_k8s.repo_access import Repositories
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
