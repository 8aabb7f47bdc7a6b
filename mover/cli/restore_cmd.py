"""`mover restore`: a snapshot back to a file or block device; with --partial, past damage."""

from __future__ import annotations

import os
from pathlib import Path

import click

from mover import api
from mover.api import RestoreOptions, RestoreStats, Snapshot
from mover.cli.context import json_option, open_repo, repo_option
from mover.cli.output import emit_json
from mover.cli.progress import byte_progress
from mover.cli.sizes import mib
from mover.errors import IntegrityError, MoverError, UsageError


def _bad_ranges_path(target: str, partial: bool, bad_ranges: str | None) -> str | None:
    """Where a partial restore lists what it could not read: settled before anything is
    written (or asked for)."""
    if bad_ranges is not None and not partial:
        raise UsageError("--bad-ranges only applies with --partial")
    if partial and bad_ranges is None:
        if Path(target).is_block_device():
            raise UsageError(
                f"{target} is a block device: give --bad-ranges PATH for the list of "
                "unreadable ranges that --partial writes"
            )
        bad_ranges = f"{target}.badranges.json"
    if bad_ranges is not None:
        where = os.path.dirname(os.path.abspath(bad_ranges))
        if os.path.isdir(bad_ranges):
            raise UsageError(f"--bad-ranges {bad_ranges} is a directory; give a file's path")
        if not os.access(where, os.W_OK | os.X_OK):
            raise UsageError(
                f"cannot write the list of unreadable ranges to {bad_ranges}: {where} is not "
                "writable; give another path with --bad-ranges"
            )
    return bad_ranges


def _failure(found: Snapshot, target: str, stats: RestoreStats, bad_ranges: str) -> str:
    """What a restore that met damage says, once it has written the list of bad ranges."""
    n = len(stats.bad_ranges)
    failure = (
        f"restored snapshot {found.id[:8]} to {target} with {n} unreadable "
        f"range{'s' * (n > 1)} ({stats.bad_bytes} bytes, zero-filled)"
    )
    try:
        api.write_bad_ranges(bad_ranges, found, target, stats)
        failure += f"; see {bad_ranges}"
    except MoverError as exc:
        failure += f", but {exc}"
    return failure


@click.command()
@repo_option
@click.argument("snapshot")
@click.argument("target", required=False)
@click.option(
    "--target",
    "target_option",
    metavar="TARGET",
    default=None,
    help="The target, as an option (restic's habit) instead of the second argument.",
)
@click.option("--force", is_flag=True, help="Overwrite an existing non-empty target file.")
@click.option(
    "--threads",
    type=click.IntRange(1, 1024),
    default=None,
    help="Worker threads [default: one per CPU].",
)
@click.option(
    "--partial",
    is_flag=True,
    help="Go on past damage in the repository: write everything readable, fill unreadable "
    "ranges with zeros, list them in a JSON file (see --bad-ranges) and exit 1.",
)
@click.option(
    "--bad-ranges",
    "bad_ranges",
    metavar="PATH",
    default=None,
    help="Where --partial lists the unreadable ranges [default: TARGET.badranges.json; "
    "required when TARGET is a block device].",
)
@json_option
def restore(
    repo: str | None,
    snapshot: str,
    target: str | None,
    target_option: str | None,
    force: bool,
    threads: int | None,
    partial: bool,
    bad_ranges: str | None,
    as_json: bool,
) -> None:
    """Restore SNAPSHOT (an id, a unique id prefix, or `latest`) to TARGET (a file or device),
    given as the second argument or with --target."""
    if target is not None and target_option is not None:
        raise UsageError("give the target once: as the second argument or with --target")
    target = target if target is not None else target_option
    if target is None:
        raise UsageError("no restore target: give TARGET (a file or block device) or --target")
    bad_ranges = _bad_ranges_path(target, partial, bad_ranges)
    repository = open_repo(repo)
    found = api.find_snapshot(repository, snapshot)
    with byte_progress("restore", found.size, not as_json) as bar:

        def on_progress(stats: RestoreStats) -> None:
            if bar is not None:
                done = stats.bytes_written + stats.hole_bytes + stats.bad_bytes
                bar.update(bar.task_ids[0], completed=done)

        options = RestoreOptions(
            force=force, threads=threads, progress=on_progress, partial=partial
        )
        stats = api.restore(repository, found, target, options=options)
    failure = None
    if stats.bad_ranges:
        assert bad_ranges is not None
        failure = _failure(found, target, stats, bad_ranges)
    if as_json:
        body: dict[str, object] = {
            "snapshot": found.id,
            "target": target,
            "size": found.size,
            "bytes_written": stats.bytes_written,
            "hole_bytes": stats.hole_bytes,
        }
        if partial:
            body["bad_bytes"] = stats.bad_bytes
            body["bad_ranges"] = api.bad_ranges_json(stats)
        emit_json(body)
    if failure is not None:
        raise IntegrityError(failure)
    if not as_json:
        click.echo(
            f"restored snapshot {found.id[:8]} to {target}: {mib(found.size)} "
            f"({mib(stats.hole_bytes)} of it holes)"
        )
