"""`mover app files`: list or copy files out of a volume a Backup stored, without restoring the
volume: the repository is read with the caller's credentials (the Repository's password Secret),
and only the chunks that the file system's structures and the files asked for lie in are
fetched (an ext2/3/4 volume; docs/kubernetes.md, "Single files"). Nothing is made in the
cluster: no pod, no claim, no privilege."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from mover import api as mover_api
from mover.errors import UsageError
from mover_k8s import api
from mover_k8s.cli.options import connect, with_kube
from mover_k8s.views import BackupView

if TYPE_CHECKING:
    from mover_k8s.k8s.client import Kube


def volume_snapshot(kube: Kube, namespace: str, backup: str, volume: str) -> tuple[str, str]:
    """(the Backup's Repository name, the repository snapshot of claim `volume` NS/PVC)."""
    found = kube.find(api.BACKUP, namespace, backup)
    if found is None:
        raise UsageError(f"no Backup {namespace}/{backup}; see `mover app list`")
    view = BackupView.of(found)
    claim_ns, _, claim = volume.partition("/")
    if not claim_ns or not claim:
        raise UsageError(f"--volume {volume}: give the claim as NAMESPACE/PVC")
    entries = [v for v in view.volumes if (v.get("namespace"), v.get("pvc")) == (claim_ns, claim)]
    stored = [str(v["snapshot"]) for v in entries if v.get("snapshot")]
    if not stored:
        names = ", ".join(f"{v.get('namespace')}/{v.get('pvc')}" for v in view.volumes) or "none"
        state = "did not store it" if entries else "has no such volume"
        raise UsageError(f"Backup {backup} {state} ({volume}); its volumes: {names}")
    return view.repository, stored[0]


@click.command("files")
@click.argument("backup")
@click.argument("paths", nargs=-1)
@click.option("--volume", required=True, help="The claim, as NAMESPACE/PVC.")
@click.option(
    "--to",
    "to",
    type=click.Path(file_okay=False, path_type=Path),
    help="Copy PATHS into this directory (it must exist; nothing in it is overwritten). "
    "Without it, list PATHS.",
)
@click.option("-R", "--recursive", is_flag=True, help="List directories recursively.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@with_kube
def files_cmd(
    backup: str,
    paths: tuple[str, ...],
    volume: str,
    to: Path | None,
    recursive: bool,
    as_json: bool,
    kubeconfig: str | None,
    kube_context: str | None,
    namespace: str,
) -> None:
    """List or copy files of a volume BACKUP stored (ext2/3/4), without restoring the volume:
    `mover app files nightly --volume shop/data /etc` lists /etc, and with `--to DIR` copies
    each PATH (files, whole directories, symlinks as links) into DIR. Only the chunks those
    files need are fetched from the repository."""
    from mover_k8s.repo_access import Repositories

    kube = connect(kubeconfig, kube_context)
    repository, snapshot_id = volume_snapshot(kube, namespace, backup, volume)
    repo = Repositories(kube).open(namespace, repository)
    try:
        snapshot = mover_api.find_snapshot(repo, snapshot_id)
        with mover_api.open_files(repo, snapshot) as fs:
            if to is not None:
                _copy(fs, paths or ("/",), to, as_json)
            else:
                _list(fs, paths or ("/",), recursive, as_json)
    finally:
        repo.close()


def _copy(fs: mover_api.FileSystem, paths: tuple[str, ...], to: Path, as_json: bool) -> None:
    results = []
    for path in paths:
        done = mover_api.copy_files(fs, path, str(to))
        results.append({"path": path, "files": done.files, "bytes": done.bytes})
        if not as_json:
            click.echo(f"{path}: {done.summary()} into {to}")
    if as_json:
        mover_api.emit_json({"copied": results, "to": str(to)})


def _list(fs: mover_api.FileSystem, paths: tuple[str, ...], recursive: bool, as_json: bool) -> None:
    found = [e for path in paths for e in mover_api.list_files(fs, path, recursive=recursive)]
    if as_json:
        mover_api.emit_json({"files": [entry.describe(path) for path, entry in found]})
        return
    for path, entry in found:
        click.echo(entry.line(path))
