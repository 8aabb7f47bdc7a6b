"""`mover backup`: a file, block device or stdin as a new snapshot; with a change list, only
the ranges that changed since a parent snapshot (docs/changed-ranges.md)."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import click

from mover import api
from mover.api import (
    CHECKPOINT_INTERVAL_ENV,
    BackupOptions,
    BackupStats,
    ChangedRanges,
    RangeList,
    Repository,
    Snapshot,
)
from mover.cli.context import json_option, open_repo, repo_option
from mover.cli.output import emit_json
from mover.cli.progress import byte_progress
from mover.cli.sizes import mib, parse_size
from mover.errors import SourceError, UsageError

if TYPE_CHECKING:
    from rich.progress import Progress


@dataclass(frozen=True)
class _RangesFile:
    """The one ranges file a backup reads: --changed-ranges or --allocated-ranges."""

    option: str
    path: str
    changed: bool  # --changed-ranges: relative to a parent snapshot


def _ranges_file(
    source: str,
    streams: int,
    changed_ranges: str | None,
    parent: str | None,
    verify_unchanged: float | None,
    allocated_ranges: str | None,
) -> _RangesFile | None:
    """The ranges file given, once the options that go with it (or not) are checked."""
    if changed_ranges is None:
        if parent is not None:
            raise UsageError("--parent applies only with --changed-ranges")
        if verify_unchanged is not None:
            raise UsageError("--verify-unchanged applies only with --changed-ranges")
    if changed_ranges is not None:
        given = _RangesFile("--changed-ranges", changed_ranges, changed=True)
    elif allocated_ranges is not None:
        given = _RangesFile("--allocated-ranges", allocated_ranges, changed=False)
    else:
        return None
    if changed_ranges is not None and allocated_ranges is not None:
        raise UsageError("give --changed-ranges or --allocated-ranges, not both")
    if source == "-":
        raise UsageError(f"{given.option} needs a file or block device, not stdin")
    if streams > 1:
        raise UsageError(f"{given.option} reads as one stream; drop --streams {streams}")
    return given


def _open_source(source: str) -> tuple[BinaryIO, str]:
    if source == "-":
        return sys.stdin.buffer, "-"
    path = Path(source)
    try:
        f: BinaryIO = open(path, "rb", buffering=0)  # noqa: SIM115 -- closed by the caller
    except FileNotFoundError:
        raise UsageError(f"source {source} does not exist") from None
    except IsADirectoryError:
        raise UsageError(f"source {source} is a directory; give a file or block device") from None
    except OSError as exc:
        raise SourceError(f"cannot open source {source}: {exc.strerror}") from None
    return f, str(path.resolve())


def _progress(bar: Progress | None, total: int | None) -> Callable[[BackupStats], None]:
    def on_progress(stats: BackupStats) -> None:
        if bar is not None:
            done = stats.resumed_from + stats.bytes_read + stats.parent_bytes
            bar.update(
                bar.task_ids[0],
                completed=min(done, total or done),
                detail=f"new {mib(stats.new_bytes)}, reused {mib(stats.reused_bytes)}",
            )

    return on_progress


def _notify(message: str) -> None:
    click.echo(f"mover: {message}", err=True)


def _report(snapshot: Snapshot, changed: ChangedRanges | None, as_json: bool) -> None:
    if as_json:
        public = snapshot.public()
        if changed is not None:
            public["parent"] = changed.parent.id
        emit_json(public)
        return
    s = snapshot.stats
    resumed = f" (resumed at {mib(s['resumed_from'])})" if s.get("resumed_from") else ""
    read = mib(snapshot.size)
    if changed is not None:
        read = f"{mib(s['bytes_read'])} of {mib(snapshot.size)}"
        resumed = f" (changes since {changed.parent.id[:8]})"
    click.echo(
        f"snapshot {snapshot.id[:8]} saved: {read} read{resumed}, "
        f"{mib(s['new_bytes'])} new, {mib(s['reused_bytes'])} reused, "
        f"{mib(s['zero_bytes'])} zeros, {mib(s['stored_bytes'])} stored"
    )


@click.command()
@repo_option
@click.argument("source")
@click.option(
    "--threads",
    type=click.IntRange(1, 1024),
    default=None,
    help="Worker threads [default: one per CPU].",
)
@click.option(
    "--streams",
    type=click.IntRange(1, 256),
    default=1,
    show_default=True,
    help="Read and chunk a file or block device in N parallel streams (same chunks as one).",
)
@click.option(
    "--checkpoint-every",
    "checkpoint_every",
    default="1GiB",
    show_default=True,
    envvar=CHECKPOINT_INTERVAL_ENV,
    metavar="SIZE",
    help="Record progress in the repository every SIZE of a file or device, so that the next "
    "backup of it resumes there if this one is interrupted; 0: never. "
    f"Env: {CHECKPOINT_INTERVAL_ENV}.",
)
@click.option(
    "--changed-ranges",
    "changed_ranges",
    metavar="FILE",
    default=None,
    help="Read only the byte ranges FILE lists as changed since the parent snapshot (one "
    "`OFFSET LENGTH` a line, decimal, ascending; - for stdin) and take the rest from the "
    "parent: the same snapshot as a full read (docs/changed-ranges.md).",
)
@click.option(
    "--parent",
    metavar="SNAPSHOT",
    default=None,
    help="The snapshot --changed-ranges is relative to [default: the newest of SOURCE].",
)
@click.option(
    "--verify-unchanged",
    "verify_unchanged",
    type=click.FloatRange(0, 100),
    metavar="PERCENT",
    default=None,
    help="With --changed-ranges: also read PERCENT of what it takes from the parent and fail, "
    "writing no snapshot, if any of it differs (a wrong change list).",
)
@click.option(
    "--allocated-ranges",
    "allocated_ranges",
    metavar="FILE",
    default=None,
    help="Read only the byte ranges FILE lists as allocated (same format); the rest is "
    "stored as zeros without reading it, as holes are.",
)
@json_option
def backup(
    repo: str | None,
    source: str,
    threads: int | None,
    streams: int,
    checkpoint_every: str,
    changed_ranges: str | None,
    parent: str | None,
    verify_unchanged: float | None,
    allocated_ranges: str | None,
    as_json: bool,
) -> None:
    """Back up SOURCE (an image file, a block device, or - for stdin) as a new snapshot."""
    interval = parse_size(checkpoint_every, "--checkpoint-every")
    given = _ranges_file(
        source, streams, changed_ranges, parent, verify_unchanged, allocated_ranges
    )
    f, name = _open_source(source)
    ranges: RangeList | None = None
    try:
        total = api.source_size(f) if source != "-" else None
        if streams > 1 and total is None:
            raise UsageError(
                f"--streams {streams} needs a file or block device; "
                f"{'stdin' if source == '-' else source} can only be read as one stream"
            )
        if given is not None:
            if total is None:
                raise UsageError(f"{given.option} needs a file or block device; {source} is not")
            ranges = api.read_ranges(given.path, total, given.option)
        repository = open_repo(repo)
        changed = None
        if given is not None and given.changed:
            assert ranges is not None and total is not None
            changed = api.changed_ranges(
                repository, name, ranges, total, parent=parent, verify=verify_unchanged or 0.0
            )
        options = BackupOptions(
            threads=threads,
            streams=streams,
            checkpoint_interval=interval,
            notify=_notify,
            changed=changed,
            allocated=ranges if given is not None and not given.changed else None,
        )
        snapshot = _run(repository, f, name, total, options, as_json)
    finally:
        if f is not sys.stdin.buffer:
            f.close()
        if ranges is not None:
            ranges.close()
    _report(snapshot, changed, as_json)


def _run(
    repository: Repository,
    f: BinaryIO,
    name: str,
    total: int | None,
    options: BackupOptions,
    as_json: bool,
) -> Snapshot:
    """The backup itself, with a progress bar on a terminal."""
    with byte_progress("backup", total, not as_json) as bar:
        with_progress = dataclasses.replace(options, progress=_progress(bar, total))
        return api.backup(repository, f, name, options=with_progress)
