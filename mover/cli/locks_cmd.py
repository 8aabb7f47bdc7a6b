"""`mover locks` and `mover unlock`: who holds the repository, and breaking locks whose holder
died."""

from __future__ import annotations

import dataclasses

import click

from mover import api
from mover.api import LockInfo
from mover.cli.context import json_option, open_repo, repo_option
from mover.cli.output import emit_json, emit_table


def _state(lock: LockInfo) -> str:
    if not lock.stale:
        return "alive"
    if lock.reason.startswith("holder process"):
        return "stale (holder gone)"
    return f"stale ({lock.reason})" if lock.reason else "stale"


def _show(repo: str | None, break_: bool, as_json: bool) -> None:
    """What both commands print: the locks (less those broken), then those broken."""
    repository = open_repo(repo)
    found = api.list_locks(repository)
    broken = api.break_stale_locks(repository) if break_ else []
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
            _state(lock),
        ]
        for lock in found
        if lock.name not in gone
    ]
    if rows:
        emit_table("locks", ["lock", "kind", "holder", "heartbeat", "state"], rows)
    elif not broken:
        click.echo("no locks held")
    for lock in broken:
        name = lock.name.removeprefix("locks/")[:12]
        click.echo(f"broke stale lock {name} ({lock.kind}, {lock.owner}: {lock.reason})")


@click.command()
@repo_option
@click.option(
    "--break-stale",
    "break_",
    is_flag=True,
    help="Remove the stale locks (holder crashed or killed), as `mover unlock` does.",
)
@json_option
def locks(repo: str | None, break_: bool, as_json: bool) -> None:
    """List the repository's locks: backups hold shared ones, prune the exclusive one.

    A lock is stale when its holder has not refreshed it for MOVER_LOCK_STALE_AFTER seconds
    (default 600), or at once when its holder ran on this host and that process is gone (or
    its pid now belongs to another process). Stale locks are ignored by prune and removed by
    --break-stale."""
    _show(repo, break_, as_json)


@click.command()
@repo_option
@json_option
def unlock(repo: str | None, as_json: bool) -> None:
    """Remove the repository's stale locks: the same as `mover locks --break-stale`.

    Stale: no heartbeat for MOVER_LOCK_STALE_AFTER seconds (default 600), or a holder that ran
    on this host and is gone. Locks of running backups and prunes are kept, and listed."""
    _show(repo, True, as_json)
