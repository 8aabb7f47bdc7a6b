"""`mover locks`: who holds the repository, and breaking locks whose holder died."""

from __future__ import annotations

import dataclasses

import click

from mover.cli.context import json_option, open_repo, repo_option
from mover.cli.output import emit_json, emit_table
from mover.locks import break_stale, list_locks


@click.command()
@repo_option
@click.option(
    "--break-stale",
    "break_",
    is_flag=True,
    help="Remove the locks whose holder stopped refreshing them (crashed or killed).",
)
@json_option
def locks(repo: str | None, break_: bool, as_json: bool) -> None:
    """List the repository's locks: backups hold shared ones, prune the exclusive one.

    A lock is stale when its holder has not refreshed it for MOVER_LOCK_STALE_AFTER seconds
    (default 600); stale locks are ignored by prune and removed by --break-stale."""
    repository = open_repo(repo)
    found = list_locks(repository)
    broken = break_stale(repository) if break_ else []
    gone = {lock.name for lock in broken}
    if as_json:
        emit_json(
            {
                "locks": [dataclasses.asdict(lock) for lock in found if lock.name not in gone],
                "broken": [dataclasses.asdict(lock) for lock in broken],
            }
        )
        return
    rows = [
        [
            lock.name.removeprefix("locks/")[:12],
            lock.kind,
            lock.owner,
            f"{lock.age:.0f}s",
            "stale" if lock.stale else "alive",
        ]
        for lock in found
        if lock.name not in gone
    ]
    if rows:
        emit_table("locks", ["lock", "kind", "holder", "heartbeat", "state"], rows)
    else:
        click.echo("no locks held")
    for lock in broken:
        click.echo(f"broke stale lock {lock.name.removeprefix('locks/')[:12]} ({lock.owner})")
