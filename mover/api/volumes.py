"""Backing up and restoring volumes. Part of mover.api: import from mover.api, not from here."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO

from mover.objects.snapshot import Snapshot

if TYPE_CHECKING:
    from mover.objects.repository import (
        Repository,
    )
    from mover.pipeline.backup import BackupStats
    from mover.pipeline.changed import ChangedRanges
    from mover.pipeline.ranges import RangeList
    from mover.pipeline.restore import RestoreStats


# -- volumes ------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class BackupOptions:
    """How backup() runs; none of it changes the snapshot's chunks or tree."""

    threads: int | None = None  # workers hashing and compressing; None: one per CPU
    # Parallel readers of a seekable source (the same chunks as one stream, faster on devices
    # that serve parallel reads).
    streams: int = 1
    # Bytes between checkpoints of a seekable source, from which an interrupted backup of it
    # resumes; None: mover's default (1 GiB), 0: never.
    checkpoint_interval: int | None = None
    progress: Callable[[BackupStats], None] | None = None  # called as batches are stored
    notify: Callable[[str], None] | None = None  # one-line notices (e.g. resuming)
    # Changed-block backups (docs/changed-ranges.md): read only the ranges that may differ from
    # a parent snapshot (ChangedRanges: find_parent, read_ranges) and reuse its chunks for the
    # rest, with the same tree as a full read; or, for a first backup, read only the allocated
    # ranges (the rest is zeros). Not with streams > 1.
    changed: ChangedRanges | None = None
    allocated: RangeList | None = None


def backup(
    repo: Repository, source: BinaryIO, name: str, *, options: BackupOptions | None = None
) -> Snapshot:
    """Back up `source` (a file, block device or pipe: it needs a file descriptor) as a new
    snapshot whose source is `name`; returns it, with its id. Only chunks the repository lacks
    are stored; packs, then the index, then the snapshot are written, so an interrupted backup
    leaves no snapshot and nothing that later backups would rely on.

    Raises UsageError (bad options), SourceError (the source cannot be read, or shrank),
    StorageError, RepositoryError (the lock could not be held)."""
    from mover.objects.checkpoint import DEFAULT_INTERVAL
    from mover.pipeline.backup import run_backup

    o = options or BackupOptions()
    interval = DEFAULT_INTERVAL if o.checkpoint_interval is None else o.checkpoint_interval
    return run_backup(
        repo,
        source,
        name,
        threads=o.threads,
        progress=o.progress,
        streams=o.streams,
        checkpoint_interval=interval or None,
        notify=o.notify,
        changed=o.changed,
        allocated=o.allocated,
    )


@dataclass(frozen=True, kw_only=True)
class RestoreOptions:
    """How restore() runs."""

    force: bool = False  # overwrite an existing, non-empty target file
    threads: int | None = None  # workers fetching and verifying; None: one per CPU
    progress: Callable[[RestoreStats], None] | None = None
    # Go on past damage in the repository: unreadable ranges are left as zeros and listed in
    # RestoreStats.bad_ranges (the caller reports them) instead of stopping the restore.
    partial: bool = False


def restore(
    repo: Repository, snapshot: Snapshot, target: str, *, options: RestoreOptions | None = None
) -> RestoreStats:
    """Write `snapshot` to `target` (a file, created or truncated to the snapshot's size and
    left sparse, or a block device at least that large); every chunk is verified first.

    Raises SourceError (the target cannot be used or written), UsageError (a non-empty target
    file without `force`), IntegrityError (damage, unless `partial`), StorageError."""
    from mover.pipeline.restore import run_restore

    o = options or RestoreOptions()
    return run_restore(
        repo,
        snapshot,
        target,
        force=o.force,
        threads=o.threads,
        progress=o.progress,
        partial=o.partial,
    )


def source_size(source: BinaryIO) -> int | None:
    """The size in bytes of a file or block device; None for a pipe or other stream."""
    from mover.pipeline.source import source_size as size_of_fd

    return size_of_fd(source.fileno())


def changed_ranges(
    repo: Repository,
    name: str,
    ranges: RangeList,
    size: int,
    *,
    parent: str | None = None,
    verify: float = 0.0,
) -> ChangedRanges:
    """BackupOptions.changed for a backup of the source `name` (`size` bytes now) that reads
    only `ranges` (read_ranges) and takes the rest from a parent snapshot: `parent` (an id, a
    unique prefix or `latest`; a snapshot of the same source) or the newest snapshot of
    `name`. `verify`: the percentage (0-100) of what is taken from the parent that the backup
    also reads and compares, failing on a difference (a wrong change list).

    Raises UsageError (no parent; a parent of another source; a source smaller than its
    parent: a volume that shrank needs a full backup)."""
    from mover.pipeline.changed import ChangedRanges, check_size, find_parent

    found = find_parent(repo, name, parent)
    check_size(found, size, name)
    return ChangedRanges(found, ranges, verify)


def bad_ranges_json(stats: RestoreStats) -> list[dict[str, object]]:
    """A partial restore's unreadable ranges (RestoreOptions.partial), as JSON values: offset,
    length and the reason, in offset order."""
    from mover.pipeline.restore import bad_ranges_json as as_json

    return as_json(stats)


def write_bad_ranges(path: str, snapshot: Snapshot, target: str, stats: RestoreStats) -> None:
    """Write the list of a partial restore's unreadable ranges to `path` as a JSON document
    (snapshot, target, size, bad_bytes, ranges), atomically: a reader never sees half a list.

    Raises SourceError (`path` cannot be written)."""
    from mover.pipeline.restore import write_bad_ranges as write

    write(path, snapshot.id, target, snapshot.size, stats)
