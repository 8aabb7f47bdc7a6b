"""`mover files`: list or copy files out of a volume snapshot's file system (ext2/3/4) without
restoring the volume: only the chunks the file system's structures and the files asked for lie
in are fetched (mover.fs, docs/mount.md)."""

from __future__ import annotations

from pathlib import Path

import click

from mover import api
from mover.cli.context import json_option, open_repo, repo_option
from mover.cli.output import emit_json


@click.command()
@repo_option
@click.argument("snapshot")
@click.argument("paths", nargs=-1)
@click.option(
    "--to",
    type=click.Path(file_okay=False, path_type=Path),
    help="Copy PATHS into this directory (it must exist; nothing in it is overwritten). "
    "Without it, list PATHS.",
)
@click.option("-R", "--recursive", is_flag=True, help="List directories recursively.")
@json_option
def files(
    repo: str | None,
    snapshot: str,
    paths: tuple[str, ...],
    to: Path | None,
    recursive: bool,
    as_json: bool,
) -> None:
    """List or copy files of SNAPSHOT (an id, a prefix or `latest`) whose volume holds an
    ext2/3/4 file system, without restoring it: `mover files latest /etc` lists /etc;
    `mover files latest /etc/app.conf /var/lib/app --to DIR` copies a file and a directory
    (with its modes, times and symlinks) into DIR. Only the chunks they need are fetched."""
    repository = open_repo(repo)
    try:
        found = api.find_snapshot(repository, snapshot)
        with api.open_files(repository, found) as fs:
            wanted = paths or ("/",)
            if to is not None:
                copied = [(path, api.copy_files(fs, path, str(to))) for path in wanted]
                if as_json:
                    rows = [{"path": p, "files": c.files, "bytes": c.bytes} for p, c in copied]
                    emit_json({"snapshot": found.id, "to": str(to), "copied": rows})
                    return
                for path, c in copied:
                    click.echo(f"{path}: {c.summary()} into {to}")
                return
            listed = [e for path in wanted for e in api.list_files(fs, path, recursive=recursive)]
            if as_json:
                emit_json({"snapshot": found.id, "files": [e.describe(p) for p, e in listed]})
                return
            for path, entry in listed:
                click.echo(entry.line(path))
    finally:
        repository.close()
