"""`mover snapshots` and `mover stats`: what the repository holds."""

from __future__ import annotations

import click

from mover import api
from mover.api import format_size, plural, snapshot_time
from mover.cli.context import json_option, open_repo, repo_option
from mover.cli.output import emit_json, emit_table


@click.command()
@repo_option
@click.option("--long", "long_ids", is_flag=True, help="Show full snapshot ids and root hashes.")
@json_option
def snapshots(repo: str | None, long_ids: bool, as_json: bool) -> None:
    """List snapshots, oldest first, with the root hash that identifies each volume's content.

    A snapshot whose manifest cannot be read is listed as damaged (on stderr with --json) and
    the others are listed as usual; `mover repair snapshots` removes damaged ones."""
    repository = open_repo(repo, warn_damage=as_json)
    found = api.snapshots(repository)
    if as_json:
        emit_json([s.public() for s in found])
        return
    damaged = api.damaged_snapshots(repository)
    if not found and not damaged:
        click.echo("no snapshots")
        return
    width = 64 if long_ids else 8
    rows = [
        [
            s.id[:width],
            f"{snapshot_time(s):%Y-%m-%d %H:%M:%S} UTC",
            s.hostname,
            format_size(s.size),
            s.source,
            s.tree[: 64 if long_ids else 16],
        ]
        for s in found
    ]
    rows += [[i[:width], "DAMAGED", "", "", "cannot be read", ""] for i in sorted(damaged)]
    emit_table(
        plural(len(found), "snapshot"), ["id", "time", "host", "size", "source", "root"], rows
    )
    for snapshot_id, reason in sorted(damaged.items()):
        click.echo(
            f"mover: warning: snapshot {snapshot_id[:8]} is damaged ({reason}); "
            "`mover repair snapshots` removes it",
            err=True,
        )


@click.command()
@repo_option
@json_option
def stats(repo: str | None, as_json: bool) -> None:
    """Snapshots, logical and stored bytes, and the deduplication ratio."""
    repository = open_repo(repo)
    found = api.repository_stats(repository)
    if as_json:
        emit_json(found.as_dict())
        return
    ratio = f"{found.ratio:.2f} x" if found.ratio is not None else "- (nothing stored)"
    emit_table(
        f"repository {repository.id[:8]}",
        ["", "value"],
        [
            ["snapshots", str(found.snapshots)],
            ["logical size (all snapshots)", format_size(found.logical_bytes)],
            ["stored size", format_size(found.stored_bytes)],
            ["deduplication and compression", ratio],
            ["packs", str(found.packs)],
            ["chunks", str(found.chunks)],
        ],
    )
