"""mover as a library: the supported surface, in one place.

Everything a program needs to use mover's repositories goes through here: open or create a
repository, back up and restore volumes, list and resolve snapshots, forget them (by id or by
retention policy), prune, check, replicate, store small JSON documents, read storage metrics,
and read any byte range of a snapshot without restoring it (SnapshotReader, read_range).
The `mover` command (mover.cli) and the Kubernetes side (mover_k8s) use nothing else of mover
but this module and mover.errors (enforced by import-linter, pyproject.toml): what the command
line needs (repository administration, the mount, the node benchmark, the defaults it shows,
the storage stack it opens) is here too, so the same calls serve any other program. The shared
vocabulary (mover.units, mover.text, mover.console: sizes, plurals, JSON and tables) is
re-exported here rather than imported from its modules. The modules behind this one are free
to change; the names here keep their meaning.

Conventions:
- A Repository holds a backend (connections, an event loop thread for S3): close() it when
  done. Every function taking one leaves it open.
- Errors are mover.errors: UsageError (bad input, exit code 2), RepositoryError and its
  IntegrityError and WrongPassword, SourceError (the volume or target), StorageError (with
  `temporary`). Each function's doc names the ones its callers usually handle.
- Writers take the repository's shared lock themselves (mover.objects.locks): a prune running at the
  same time never deletes what they are about to reference. Nothing here needs a lock taken by
  the caller.

Importing this module is cheap (~10 ms, measured): the commands other packages add to `mover`
import it (`mover --help` loads them), so the data path behind it (~80 ms of imports) is loaded
when one of its functions or types is first used.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, cast

from mover.console import emit_json, emit_table, error_line, human_rate, status
from mover.errors import IntegrityError, ObjectNotFound, UsageError
from mover.maintenance.retention import Decision, Group, Policy, apply_policy, snapshot_time
from mover.objects.snapshot import Snapshot
from mover.text import plural
from mover.units import (
    format_age,
    format_duration,
    format_rate,
    format_size,
    parse_duration,
    parse_size,
)

if TYPE_CHECKING:
    from mover.chunking import DEFAULT_PARAMS as DEFAULT_CHUNKER
    from mover.chunking import ChunkerParams
    from mover.crypto import KdfParams, MasterKey
    from mover.fs.ext4 import Entry as FileEntry
    from mover.fs.ext4 import Ext4 as FileSystem
    from mover.fs.extract import Extracted
    from mover.maintenance.check import CheckReport
    from mover.maintenance.prune import REPACK_BELOW as DEFAULT_REPACK_BELOW
    from mover.maintenance.prune import PruneStats
    from mover.maintenance.repair import (
        ConfigRepairReport,
        DataRepairStats,
        IndexRepairStats,
        SnapshotRepairReport,
    )
    from mover.mount import Namespace as MountView
    from mover.objects.checkpoint import INTERVAL_ENV as CHECKPOINT_INTERVAL_ENV
    from mover.objects.keys import KeyInfo
    from mover.objects.locks import LockInfo
    from mover.objects.repository import (
        DEFAULT_PACK_SIZE,
        DEFAULT_ZSTD_LEVEL,
        RepoConfig,
        Repository,
    )
    from mover.objects.tree import Extent
    from mover.pipeline.backup import BackupStats
    from mover.pipeline.changed import ChangedRanges, find_parent
    from mover.pipeline.ranges import RangeList, read_ranges
    from mover.pipeline.reader import DEFAULT_CACHE_SIZE as DEFAULT_MOUNT_CACHE_SIZE
    from mover.pipeline.reader import SnapshotReader, open_snapshot, read_range
    from mover.pipeline.replicate import DEFAULT_CHECKPOINT as DEFAULT_REPLICATE_CHECKPOINT
    from mover.pipeline.replicate import ReplicateStats
    from mover.pipeline.restore import BadRange, RestoreStats
    from mover.storage.base import Backend
    from mover.storage.metrics import FIELDS as STORAGE_METRIC_FIELDS
    from mover.storage.metrics import Metrics as StorageMetrics
    from mover.storage.s3config import (
        DEFAULT_MULTIPART_THRESHOLD,
        DEFAULT_PART_SIZE,
        MIN_PART_SIZE,
        ObjectLock,
    )
    from mover.storage.stack import DEFAULT_S3_CONCURRENCY, StorageOptions
    from mover.tools.nodebench import NodeBenchmark

__all__ = [
    "CHECKPOINT_INTERVAL_ENV",
    "DEFAULT_CHUNKER",
    "DEFAULT_MOUNT_CACHE_SIZE",
    "DEFAULT_MULTIPART_THRESHOLD",
    "DEFAULT_PACK_SIZE",
    "DEFAULT_PART_SIZE",
    "DEFAULT_REPACK_BELOW",
    "DEFAULT_REPLICATE_CHECKPOINT",
    "DEFAULT_S3_CONCURRENCY",
    "DEFAULT_ZSTD_LEVEL",
    "MIN_PART_SIZE",
    "STORAGE_METRIC_FIELDS",
    "Backend",
    "BackupOptions",
    "BackupStats",
    "BadRange",
    "ChangedRanges",
    "CheckReport",
    "ChunkerParams",
    "ConfigRepairReport",
    "DataRepairStats",
    "Decision",
    "Extent",
    "Extracted",
    "FileEntry",
    "FileSystem",
    "Group",
    "IndexRepairStats",
    "InitOptions",
    "KdfParams",
    "KeyInfo",
    "LockInfo",
    "MountOptions",
    "MountView",
    "NodeBenchmark",
    "ObjectLock",
    "PasswordChange",
    "Policy",
    "PruneOptions",
    "PruneStats",
    "RangeList",
    "Replica",
    "ReplicateStats",
    "RepoConfig",
    "Repository",
    "RepositoryKey",
    "RepositoryStats",
    "RestoreOptions",
    "RestoreStats",
    "Snapshot",
    "SnapshotReader",
    "SnapshotRepairReport",
    "StorageMetrics",
    "StorageOptions",
    "add_key",
    "apply_policy",
    "backup",
    "bad_ranges_json",
    "benchmark_node",
    "break_stale_locks",
    "change_password",
    "changed_ranges",
    "check",
    "check_chunk_sizes",
    "check_mountpoint",
    "copy_files",
    "damaged_snapshots",
    "emit_json",
    "emit_table",
    "error_line",
    "extents",
    "find_parent",
    "find_snapshot",
    "forget",
    "forget_by_policy",
    "format_age",
    "format_duration",
    "format_rate",
    "format_size",
    "get_document",
    "has_snapshot",
    "human_rate",
    "init_replica",
    "init_repository",
    "init_repository_in",
    "list_files",
    "list_keys",
    "list_locks",
    "load_fuse",
    "local_directory",
    "mount",
    "object_lock_enabled",
    "open_files",
    "open_replica",
    "open_repository",
    "open_repository_in",
    "open_snapshot",
    "open_storage",
    "parse_duration",
    "parse_size",
    "plural",
    "prune",
    "put_document",
    "read_range",
    "read_ranges",
    "remove_key",
    "reopen_repository",
    "repair_config",
    "repair_data",
    "repair_index",
    "repair_snapshots",
    "replicate",
    "repository_key",
    "repository_stats",
    "resolve_snapshot_ids",
    "restore",
    "snapshot_time",
    "snapshots",
    "source_size",
    "status",
    "storage_metrics",
    "write_bad_ranges",
]

# The types of the data path, loaded on first use (PEP 562): name -> (module, its name there).
_LAZY = {
    "BackupStats": ("mover.pipeline.backup", "BackupStats"),
    "BadRange": ("mover.pipeline.restore", "BadRange"),
    "CheckReport": ("mover.maintenance.check", "CheckReport"),
    "Extent": ("mover.objects.tree", "Extent"),
    "KdfParams": ("mover.crypto", "KdfParams"),
    "ObjectLock": ("mover.storage.s3config", "ObjectLock"),
    "PruneStats": ("mover.maintenance.prune", "PruneStats"),
    "RepoConfig": ("mover.objects.repository", "RepoConfig"),
    "ReplicateStats": ("mover.pipeline.replicate", "ReplicateStats"),
    "Repository": ("mover.objects.repository", "Repository"),
    "RestoreStats": ("mover.pipeline.restore", "RestoreStats"),
    "STORAGE_METRIC_FIELDS": ("mover.storage.metrics", "FIELDS"),
    "StorageMetrics": ("mover.storage.metrics", "Metrics"),
    "StorageOptions": ("mover.storage.stack", "StorageOptions"),
    # Changed-block backups (BackupOptions.changed, .allocated).
    "ChangedRanges": ("mover.pipeline.changed", "ChangedRanges"),
    "find_parent": ("mover.pipeline.changed", "find_parent"),
    "RangeList": ("mover.pipeline.ranges", "RangeList"),
    "read_ranges": ("mover.pipeline.ranges", "read_ranges"),
    # Random access without restoring (mover.pipeline.reader): read(offset, length) of a snapshot.
    "SnapshotReader": ("mover.pipeline.reader", "SnapshotReader"),
    "open_snapshot": ("mover.pipeline.reader", "open_snapshot"),
    "read_range": ("mover.pipeline.reader", "read_range"),
    # Defaults: what mover uses when a caller gives nothing (the command line shows them).
    "ChunkerParams": ("mover.chunking", "ChunkerParams"),
    "DEFAULT_CHUNKER": ("mover.chunking", "DEFAULT_PARAMS"),
    "DEFAULT_PACK_SIZE": ("mover.objects.repository", "DEFAULT_PACK_SIZE"),
    "DEFAULT_ZSTD_LEVEL": ("mover.objects.repository", "DEFAULT_ZSTD_LEVEL"),
    "DEFAULT_REPACK_BELOW": ("mover.maintenance.prune", "REPACK_BELOW"),
    "DEFAULT_REPLICATE_CHECKPOINT": ("mover.pipeline.replicate", "DEFAULT_CHECKPOINT"),
    "DEFAULT_MOUNT_CACHE_SIZE": ("mover.pipeline.reader", "DEFAULT_CACHE_SIZE"),
    "CHECKPOINT_INTERVAL_ENV": ("mover.objects.checkpoint", "INTERVAL_ENV"),
    # Storage: the stack's protocol and the S3 defaults (StorageOptions' fields).
    "Backend": ("mover.storage.base", "Backend"),
    "DEFAULT_S3_CONCURRENCY": ("mover.storage.stack", "DEFAULT_S3_CONCURRENCY"),
    "DEFAULT_MULTIPART_THRESHOLD": ("mover.storage.s3config", "DEFAULT_MULTIPART_THRESHOLD"),
    "DEFAULT_PART_SIZE": ("mover.storage.s3config", "DEFAULT_PART_SIZE"),
    "MIN_PART_SIZE": ("mover.storage.s3config", "MIN_PART_SIZE"),
    # What repository administration (keys, locks, repair) returns.
    "KeyInfo": ("mover.objects.keys", "KeyInfo"),
    "LockInfo": ("mover.objects.locks", "LockInfo"),
    "IndexRepairStats": ("mover.maintenance.repair", "IndexRepairStats"),
    "SnapshotRepairReport": ("mover.maintenance.repair", "SnapshotRepairReport"),
    "DataRepairStats": ("mover.maintenance.repair", "DataRepairStats"),
    "ConfigRepairReport": ("mover.maintenance.repair", "ConfigRepairReport"),
    # The mount's view (what MountOptions.on_mounted is given) and the node benchmark's result.
    "MountView": ("mover.mount", "Namespace"),
    "NodeBenchmark": ("mover.tools.nodebench", "NodeBenchmark"),
    # Files inside a volume snapshot's file system (ext2/3/4), read without restoring it.
    "FileSystem": ("mover.fs.ext4", "Ext4"),
    "FileEntry": ("mover.fs.ext4", "Entry"),
    "Extracted": ("mover.fs.extract", "Extracted"),
}

if not TYPE_CHECKING:  # hidden from mypy, which would type every unknown name here as Any

    def __getattr__(name: str) -> Any:
        if name not in _LAZY:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        module, attribute = _LAZY[name]
        value = getattr(importlib.import_module(module), attribute)
        globals()[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted({*globals(), *__all__})


# -- repositories -------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class InitOptions:
    """How a new repository stores data; fixed for its life. None: mover's default (the same
    as `mover init`'s)."""

    chunk_min: int | None = None  # bytes; content-defined chunking
    chunk_avg: int | None = None  # bytes, a power of two
    chunk_max: int | None = None
    pack_size: int | None = None  # bytes, 64 KiB to 2 GiB
    zstd_level: int | None = None  # 0: stored uncompressed
    kdf: KdfParams | None = None  # Argon2id cost of the password's key
    # S3 Object Lock retention of every object written; the bucket must have Object Lock on.
    object_lock: ObjectLock | None = None


@dataclass(frozen=True)
class RepositoryKey:
    """What opening a repository derives from its password (the unwrapped master key), with its
    config and id: enough to open it again without the key derivation (Argon2id: ~0.1 s and
    64 MiB by default). A secret: keep it in memory only."""

    master: MasterKey = field(repr=False)
    config: RepoConfig
    repo_id: str


def open_repository(
    url: str, password: bytes, *, storage: StorageOptions | None = None
) -> Repository:
    """The repository at `url` (a directory, s3://BUCKET[/PREFIX] or memory://NAME), opened
    through mover's storage stack (retries, metrics, bandwidth and concurrency limits).

    Raises UsageError (a malformed URL), WrongPassword, RepositoryError (not a repository,
    damaged config, unknown format), StorageError (the store cannot be reached)."""
    backend = open_storage(url, storage=storage)
    try:
        return open_repository_in(backend, password)
    except BaseException:
        backend.close()
        raise


def open_repository_in(backend: Backend, password: bytes) -> Repository:
    """The repository in a storage stack the caller opened (open_storage) and closes: closing
    the repository closes it too.

    Raises WrongPassword, RepositoryError (not a repository, damaged config, unknown format),
    StorageError."""
    from mover.objects.repository import Repository

    return Repository.open(backend, password)


def init_repository(
    url: str,
    password: bytes,
    *,
    options: InitOptions | None = None,
    storage: StorageOptions | None = None,
) -> Repository:
    """A new, encrypted repository at `url` with a fresh master key, in an empty place.

    Raises UsageError (bad options; Object Lock off S3), RepositoryError (`url` already holds
    a repository or other objects), StorageError."""
    from mover.objects.repository import Repository

    o = options or InitOptions()
    config = _new_config(o)  # bad options are told before any I/O
    backend = open_storage(url, storage=storage)
    try:
        return Repository.init(backend, password, config, o.kdf)
    except BaseException:
        backend.close()
        raise


def init_repository_in(
    backend: Backend, password: bytes, *, options: InitOptions | None = None
) -> Repository:
    """A new repository, as init_repository, in a storage stack the caller opened
    (open_storage) and closes.

    Raises UsageError (bad options), RepositoryError (not empty), StorageError."""
    from mover.objects.repository import Repository

    o = options or InitOptions()
    return Repository.init(backend, password, _new_config(o), o.kdf)


def _new_config(o: InitOptions) -> RepoConfig:
    from mover.chunking import DEFAULT_PARAMS, ChunkerParams
    from mover.objects.repository import DEFAULT_PACK_SIZE, DEFAULT_ZSTD_LEVEL, RepoConfig

    pack_size = o.pack_size or DEFAULT_PACK_SIZE
    if not 1 << 16 <= pack_size <= 1 << 31:  # packs are read in ranges of 32-bit offsets
        raise UsageError(f"pack size {pack_size} must be between 64 KiB and 2 GiB")
    chunker = ChunkerParams(
        o.chunk_min or DEFAULT_PARAMS.min_size,
        o.chunk_avg or DEFAULT_PARAMS.avg_size,
        o.chunk_max or DEFAULT_PARAMS.max_size,
        os.urandom(32),  # the gear table's seed: chunk boundaries are the repository's secret
    )
    level = DEFAULT_ZSTD_LEVEL if o.zstd_level is None else o.zstd_level
    return RepoConfig(chunker, pack_size, level, o.object_lock)


def check_chunk_sizes(chunk_min: int, chunk_avg: int, chunk_max: int) -> None:
    """Whether InitOptions' chunk sizes (bytes) can be used, checked before anything else is
    asked for: avg a power of two of 256 or more, 64 <= min <= avg <= max <= mover's limit.

    Raises UsageError naming the size that cannot be used."""
    from mover.chunking import ChunkerParams

    ChunkerParams(chunk_min, chunk_avg, chunk_max)


def repository_key(repo: Repository) -> RepositoryKey:
    """The key of an open repository, for reopen_repository."""
    return RepositoryKey(repo.master, repo.config, repo.id)


def reopen_repository(
    url: str, key: RepositoryKey, *, storage: StorageOptions | None = None
) -> Repository:
    """The repository at `url` opened with a key taken from it before (repository_key): a
    fresh backend and index, no key derivation. The config is not read again.

    Raises UsageError (a malformed URL), StorageError."""
    from mover.objects.repository import Repository
    from mover.storage.stack import apply_object_lock, open_backend

    backend = open_backend(url, storage)
    try:
        apply_object_lock(backend, key.config.object_lock)  # as Repository.open does
    except BaseException:
        backend.close()
        raise
    return Repository(backend, key.master, key.config, key.repo_id)


def storage_metrics(repo: Repository) -> StorageMetrics | None:
    """The live counters (requests, bytes, errors, retries by operation) of the repository's
    storage stack; None for a backend that was not built by mover's stack."""
    from mover.storage.stack import metrics_of

    return metrics_of(repo.backend)


# -- storage: the stack a repository is opened on ------------------------------------------


def open_storage(url: str, *, storage: StorageOptions | None = None) -> Backend:
    """mover's storage stack for `url` (a directory, s3://BUCKET[/PREFIX] or memory://NAME):
    the store wrapped by retries, metrics, bandwidth and concurrency limits. close() it when
    done (open_repository_in and init_repository_in take it).

    Raises UsageError (a malformed URL), StorageError (the S3 bucket cannot be reached)."""
    from mover.storage.stack import open_backend

    return open_backend(url, storage)


def local_directory(url: str) -> Path | None:
    """The directory that `url` names when it is a local repository (a path or file://URL);
    None for another store. Nothing is opened.

    Raises UsageError (a malformed URL)."""
    from mover.storage.stack import parse_location

    location = parse_location(url)
    return Path(location.path) if location.scheme == "local" else None


def object_lock_enabled(backend: Backend) -> bool | None:
    """Whether the S3 bucket under `backend` has Object Lock enabled (InitOptions.object_lock
    needs it); None when the store is not S3.

    Raises StorageError."""
    from mover.storage.stack import base_of

    enabled = getattr(base_of(backend), "object_lock_enabled", None)
    return None if enabled is None else bool(enabled())


# -- snapshots ----------------------------------------------------------------------------


def snapshots(repo: Repository) -> list[Snapshot]:
    """Every readable snapshot, oldest first. Unreadable ones are skipped and recorded in
    `repo.damage` (one bad object must not hide the others)."""
    return repo.snapshots()


def find_snapshot(repo: Repository, ref: str) -> Snapshot:
    """The snapshot `ref` names: a full id, a unique prefix of 4 or more hex digits, or
    `latest` (the newest readable one).

    Raises UsageError (no such snapshot, an ambiguous prefix, no snapshots yet),
    IntegrityError (the snapshot exists but cannot be read)."""
    return repo.find_snapshot(ref)


def has_snapshot(repo: Repository, snapshot_id: str) -> bool:
    """Whether the snapshot with this full id is stored: one existence check, nothing
    decrypted (docs/format.md: snapshots/<id>)."""
    return repo.backend.exists(f"snapshots/{snapshot_id}")


def extents(repo: Repository, tree: str) -> Iterator[Extent]:
    """The extents (chunks and holes, in offset order) of the chunk tree whose root id is
    `tree` (hex, as Snapshot.tree): reading each chunk by its id (Repository.read_blob)
    verifies it. Memory stays bounded whatever the volume's size.

    Raises (while iterating) IntegrityError or StorageError for a node that cannot be read."""
    from mover.objects.tree import walk

    return walk(repo.read_blob, bytes.fromhex(tree))


def damaged_snapshots(repo: Repository) -> dict[str, str]:
    """The snapshots found unreadable by the listings so far (snapshots()): full id -> why."""
    return repo.damaged_snapshots()


def resolve_snapshot_ids(repo: Repository, refs: Sequence[str]) -> list[str]:
    """The full ids that `refs` (ids, unique prefixes of 4 or more hex digits, or `latest`)
    name, damaged snapshots included (they can be forgotten), each once, sorted. Every ref is
    resolved before the answer: one that names no snapshot, or several, fails them all.

    Raises UsageError (an unknown or ambiguous ref; `latest` with no snapshots)."""
    listed = repo.snapshots()
    readable = [s.id for s in listed]

    def resolve(ref: str) -> str:
        if ref != "latest":
            return repo.resolve_snapshot_id(ref, readable)
        if not listed:
            raise UsageError("the repository has no snapshots yet")
        return listed[-1].id

    return sorted(set(map(resolve, refs)))


@dataclass(frozen=True)
class RepositoryStats:
    """What a repository holds: its snapshots' logical bytes against the bytes its packs
    take (deduplication and compression together)."""

    snapshots: int
    logical_bytes: int  # the sum of every readable snapshot's size
    stored_bytes: int  # the packs' sizes (index and snapshot objects not counted)
    packs: int
    chunks: int  # distinct chunks in the index

    @property
    def ratio(self) -> float | None:
        """logical / stored bytes; None when nothing is stored."""
        return self.logical_bytes / self.stored_bytes if self.stored_bytes else None

    def as_dict(self) -> dict[str, object]:
        ratio = self.ratio
        return {
            "snapshots": self.snapshots,
            "logical_bytes": self.logical_bytes,
            "stored_bytes": self.stored_bytes,
            "packs": self.packs,
            "chunks": self.chunks,
            "ratio": None if ratio is None else round(ratio, 3),
        }


def repository_stats(repo: Repository) -> RepositoryStats:
    """Counts what the repository holds: its snapshots listed and every pack's size asked
    for (one request per pack on S3), the index loaded.

    Raises StorageError."""
    found = repo.snapshots()
    packs = list(repo.backend.list("data/"))
    stored = sum(repo.backend.size(p) for p in packs)
    return RepositoryStats(
        snapshots=len(found),
        logical_bytes=sum(s.size for s in found),
        stored_bytes=stored,
        packs=len(packs),
        chunks=len(repo.index),
    )


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


# -- documents ----------------------------------------------------------------------------


def put_document(repo: Repository, doc: Mapping[str, Any], name: str) -> Snapshot:
    """Store a JSON document (e.g. a capture manifest) as a snapshot whose source is `name`:
    encrypted, chunked and deduplicated like a volume. It is written canonically (sorted keys,
    no spaces), so the same document has the same tree root: an unchanged document costs
    nothing the second time, and its root attests its content.

    Raises StorageError, RepositoryError (the lock could not be held)."""
    body = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    # Through a file: a backup reads a file descriptor (a volume's), and a document stored
    # this way is the same snapshot as one backed up from a file with these bytes.
    with tempfile.TemporaryFile() as f:
        f.write(body)
        f.flush()
        f.seek(0)
        return backup(repo, cast(BinaryIO, f), name, options=BackupOptions(threads=1))


def get_document(repo: Repository, ref: str, *, kind: str = "JSON document") -> dict[str, Any]:
    """The JSON object stored by put_document in the snapshot `ref` (as find_snapshot takes
    it). `kind` names what was expected, for the error when the snapshot holds something else.

    Raises UsageError (no such snapshot), IntegrityError (damage; or not a JSON object: "snapshot
    ID is not a KIND"), StorageError."""
    snapshot = find_snapshot(repo, ref)
    with tempfile.TemporaryDirectory(prefix="mover-doc-") as tmp:
        target = Path(tmp) / "doc.json"
        restore(repo, snapshot, os.fspath(target), options=RestoreOptions(threads=1))
        raw = target.read_bytes()
    try:
        doc = json.loads(raw)
    except ValueError:
        doc = None
    if not isinstance(doc, dict):
        raise IntegrityError(f"snapshot {ref[:8]} is not a {kind}")
    return doc


# -- maintenance --------------------------------------------------------------------------


def forget(repo: Repository, refs: Sequence[str]) -> list[str]:
    """Delete the snapshots named by full id or unique prefix (damaged ones included); every
    ref is resolved before anything is deleted. Returns the full ids removed. Their data stays
    until prune.

    Raises UsageError (a ref that names no snapshot, or several), StorageError."""
    from mover.maintenance.forget import forget as forget_ids

    return forget_ids(repo, list(refs))


def forget_by_policy(repo: Repository, policy: Policy, *, dry_run: bool = False) -> list[Group]:
    """Apply a retention policy to each (hostname, source) group of snapshots (restic's
    semantics, mover.maintenance.retention) and delete the snapshots it does not keep, unless
    `dry_run`. Returns the groups with each snapshot's decision and reasons.

    Raises UsageError (a policy that keeps nothing: all its rules are 0), StorageError."""
    if policy.empty():
        raise UsageError("a retention policy whose rules are all 0 would remove every snapshot")
    groups = apply_policy(repo.snapshots(), policy)
    if not dry_run:
        # By full id, straight from the one listing the policy saw: forget() would list (and
        # decrypt) every manifest again to resolve the ids.
        for decision in (d for g in groups for d in g.remove):
            with contextlib.suppress(ObjectNotFound):  # a concurrent forget was first
                repo.backend.delete(f"snapshots/{decision.snapshot.id}")
    return groups


@dataclass(frozen=True, kw_only=True)
class PruneOptions:
    """None: mover's default (the same as `mover prune`'s)."""

    # Seconds: packs no index names (left by killed backups) are deleted only when older.
    unindexed_grace: float | None = None
    grace: float | None = None  # seconds a condemned pack waits before it is deleted
    repack_below: float | None = None  # repack a pack whose live share is below this (0-1)
    checkpoint_max_age: float | None = None  # seconds an interrupted backup's data is kept
    progress: Callable[[str], None] | None = None  # one-line notes as it goes


def prune(repo: Repository, *, options: PruneOptions | None = None) -> PruneStats:
    """Delete data no snapshot references, safely beside running backups (two phases: packs
    are condemned, then deleted once no backup that could still use them runs). Takes the
    repository's exclusive lock.

    Raises RepositoryError (another prune holds the lock; damage known: repair first),
    StorageError."""
    from mover.maintenance.prune import prune as run_prune

    o = options or PruneOptions()
    given = {
        "unindexed_grace": o.unindexed_grace,
        "grace": o.grace,
        "repack_below": o.repack_below,
        "checkpoint_max_age": o.checkpoint_max_age,
    }
    return run_prune(repo, progress=o.progress, **{k: v for k, v in given.items() if v is not None})


def check(
    repo: Repository, *, read_data: bool = False, progress: Callable[[str], None] | None = None
) -> CheckReport:
    """Verify the repository's structure (every snapshot's tree and chunks indexed, packs
    present and long enough); with `read_data`, every byte. Problems are collected in the
    report (report.ok, report.errors), not raised.

    Raises StorageError (a temporary failure stops the check)."""
    from mover.maintenance.check import run_check

    return run_check(repo, read_data, progress)


def replicate(
    source: Repository,
    target: Repository,
    refs: Sequence[str] | None = None,
    *,
    threads: int | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    checkpoint_interval: float | None = None,
) -> ReplicateStats:
    """Copy snapshots (`refs`: ids, prefixes or `latest`; None: every one) from `source` to
    `target`, a replica sharing its key (init_replica), sending only the chunks the target
    lacks, oldest first; snapshots the target holds are skipped. `progress` gets (snapshot id,
    bytes sent for it, bytes it needs sent). Every `checkpoint_interval` seconds (None:
    DEFAULT_REPLICATE_CHECKPOINT) what was sent is made durable: an interrupted run re-sends
    at most about that much.

    Raises UsageError (an unknown ref), IntegrityError (a copy that does not verify),
    StorageError."""
    from mover.pipeline.replicate import DEFAULT_CHECKPOINT, ReplicateStats
    from mover.pipeline.replicate import replicate as run_replicate

    # Nothing asked: mover.pipeline.replicate would take it as all.
    if refs is not None and not refs:
        return ReplicateStats()
    every = DEFAULT_CHECKPOINT if checkpoint_interval is None else checkpoint_interval
    return run_replicate(
        source, target, None if refs is None else list(refs), threads, every, progress=progress
    )


def init_replica(
    source: Repository, url: str, password: bytes, *, storage: StorageOptions | None = None
) -> Repository:
    """A new, empty replica of `source` at `url` for replicate: the same master key and
    config (Object Lock only on S3), its own password.

    Raises RepositoryError (`url` is not empty), StorageError."""
    from mover.pipeline.replicate import init_target
    from mover.storage.stack import open_backend

    backend = open_backend(url, storage)
    try:
        return init_target(source, backend, password)
    except BaseException:
        backend.close()
        raise


@dataclass(frozen=True)
class Replica:
    """A replication target, opened or created by open_replica."""

    repository: Repository
    created: bool  # it was not a repository yet and was created as a replica


def open_replica(
    source: Repository,
    backend: Backend,
    password: bytes,
    *,
    create: bool = False,
    kdf: KdfParams | None = None,
) -> Replica:
    """The replica of `source` in a storage stack the caller opened (open_storage) and
    closes; with `create`, an empty place becomes one (as init_replica, its key wrapped with
    `password` at cost `kdf`).

    Raises RepositoryError (not a repository and not `create`; a repository with other keys:
    replicate copies sealed blobs), WrongPassword, StorageError."""
    from mover.pipeline.replicate import open_target

    target, created = open_target(source, backend, password, create, kdf)
    return Replica(target, created)


# -- repository administration: keys ------------------------------------------------------
# Each key file wraps the master key with one password; any of them opens the repository.


def list_keys(repo: Repository, password: bytes) -> list[KeyInfo]:
    """The key files, by id; the one `password` opens is marked current. A damaged one is
    listed with what is known, its id.

    Raises WrongPassword, StorageError."""
    from mover.objects.keys import list_keys as list_key_files

    return list_key_files(repo, password)


def add_key(repo: Repository, new_password: bytes, *, kdf: KdfParams | None = None) -> str:
    """A new key file for `new_password` (Argon2id cost `kdf`; None: the default); returns
    its id. The other keys stay.

    Raises StorageError."""
    from mover.objects.keys import add_key as write_key_file

    return write_key_file(repo, new_password, kdf)


@dataclass(frozen=True)
class PasswordChange:
    """What change_password did."""

    added: str  # the id of the key file for the new password
    removed: str  # the id of the key file the old password opened


def change_password(
    repo: Repository, password: bytes, new_password: bytes, *, kdf: KdfParams | None = None
) -> PasswordChange:
    """Replace the key file `password` opens by one for `new_password`: the new one is
    written before the old one is deleted; other keys stay.

    Raises WrongPassword, StorageError."""
    from mover.objects.keys import change_password as change

    added, removed = change(repo, password, new_password, kdf)
    return PasswordChange(added, removed)


def remove_key(repo: Repository, ref: str, password: bytes) -> str:
    """Delete the key file `ref` names (an id or unique prefix of 4 or more hex digits);
    returns its full id. Never the one `password` opens (that would lock the caller out, and
    the last key would leave no way in).

    Raises UsageError (an unknown or ambiguous ref; the key `password` opens), StorageError."""
    from mover.objects.keys import remove_key as delete_key_file
    from mover.objects.keys import resolve_key

    key_id = resolve_key(repo, ref)
    delete_key_file(repo, key_id, password)
    return key_id


# -- repository administration: locks -----------------------------------------------------
# Backups hold shared locks, prune the exclusive one; a lock whose holder stopped refreshing
# it (MOVER_LOCK_STALE_AFTER seconds, or at once when its holder ran here and is gone) is stale.


def list_locks(repo: Repository) -> list[LockInfo]:
    """The repository's locks, each with its holder, age and whether it is stale.

    Raises StorageError."""
    from mover.objects.locks import list_locks as list_lock_files

    return list_lock_files(repo)


def break_stale_locks(repo: Repository) -> list[LockInfo]:
    """Delete the stale locks; returns those deleted. Live locks are never touched.

    Raises StorageError."""
    from mover.objects.locks import break_stale

    return break_stale(repo)


# -- repository administration: repair ----------------------------------------------------
# Each repair writes before it deletes and may be run again if interrupted; what it could not
# fix is in what it returns (the caller decides whether that is a failure).


def repair_index(
    repo: Repository, *, read_data: bool = False, progress: Callable[[str], None] | None = None
) -> IndexRepairStats:
    """Rebuild the index from the packs' headers (with `read_data`, from every blob that
    verifies), replacing every index file, damaged or not. Takes the exclusive lock.

    Raises RepositoryError (the lock is held), StorageError."""
    from mover.maintenance.repair import rebuild_index

    return rebuild_index(repo, read_data, progress=progress)


def repair_snapshots(
    repo: Repository, *, dry_run: bool = False, progress: Callable[[str], None] | None = None
) -> SnapshotRepairReport:
    """Delete the snapshot objects that cannot be read (with `dry_run`, only list them), and
    report the readable snapshots whose data is partly lost, with the ranges they cannot
    restore (kept: repair_data may bring them back).

    Raises StorageError."""
    from mover.maintenance.repair import repair_snapshots as repair

    return repair(repo, dry_run, progress=progress)


def repair_data(
    repo: Repository, replica: Repository, *, progress: Callable[[str], None] | None = None
) -> DataRepairStats:
    """Heal lost or damaged data from `replica` (same master key: replicate's target): every
    pack is read and verified, good blobs of damaged packs are moved to new packs, what a
    snapshot needs and is not intact here is fetched from the replica, verified and stored,
    the index is rebuilt and the damaged packs deleted.

    Raises RepositoryError (the lock is held), StorageError."""
    from mover.maintenance.repair import repair_data as repair

    return repair(repo, replica, progress=progress)


def repair_config(
    backend: Backend, replica: Repository, password: bytes, *, kdf: KdfParams | None = None
) -> ConfigRepairReport:
    """Restore a damaged config or unreadable key files in the store `backend` from
    `replica`, which must prove that it shares the master key: the config sealed again, and a
    new key file wrapping the key with `password`. What can be read is left as it is.

    Raises RepositoryError (the replica does not share the key), StorageError."""
    from mover.maintenance.repair import repair_config as repair

    return repair(backend, replica, password, kdf)


# -- the mount ----------------------------------------------------------------------------
# Snapshots as read-only image files over FUSE (mover.mount, docs/mount.md).


@dataclass(frozen=True, kw_only=True)
class MountOptions:
    """How mount() serves the snapshots."""

    # Memory for decoded chunks, shared by all snapshots; at least two of the repository's
    # largest chunks. None: DEFAULT_MOUNT_CACHE_SIZE.
    cache_size: int | None = None
    allow_other: bool = False  # other users may read the mount (root or user_allow_other)
    on_mounted: Callable[[MountView], None] | None = None  # told once the mount is live


def load_fuse() -> None:
    """Check that the FUSE binding and libfuse can be loaded, before anything else is asked.

    Raises UsageError saying what to install."""
    from mover.mount import load_fuse as load

    load()


def check_mountpoint(path: str) -> None:
    """Check that `path` is an empty directory that can be mounted on.

    Raises UsageError."""
    from mover.mount import check_mountpoint as check_path

    check_path(path)


def mount(repo: Repository, mountpoint: str, *, options: MountOptions | None = None) -> None:
    """Serve every snapshot read-only at `mountpoint` (<short id>.img, latest.img,
    by-source/SOURCE/) until it is unmounted or the process is interrupted (SIGINT, SIGTERM,
    SIGHUP), under the repository's shared lock. Reads fetch only the chunks they touch.

    Raises UsageError (no FUSE; a bad mountpoint; a cache too small; no snapshots),
    StorageError."""
    from mover.mount import run_mount
    from mover.pipeline.reader import DEFAULT_CACHE_SIZE

    o = options or MountOptions()
    cache_size = DEFAULT_CACHE_SIZE if o.cache_size is None else o.cache_size
    run_mount(repo, mountpoint, cache_size, o.allow_other, o.on_mounted)


# -- the node benchmark -------------------------------------------------------------------


def benchmark_node(
    *,
    size: int = 256 << 20,
    threads: int | None = None,
    min_time: float = 0.5,
    progress: Callable[[str], None] | None = None,
) -> NodeBenchmark:
    """How fast this node runs each stage of the data path (chunking, BLAKE3, zstd, AEAD, the
    zero test) on `size` bytes of generated data, on one core and on `threads` (None: the
    CPUs this process may use); each measurement is repeated for `min_time` seconds and the
    best round counts. `progress` is told each stage's name as it starts."""
    from mover.tools import nodebench

    return nodebench.run(size=size, threads=threads, min_time=min_time, progress=progress)


# -- files inside a snapshot ----------------------------------------------------------------
# The ext2/3/4 file system of a volume snapshot, read through random access (mover.fs): only
# the chunks its structures and the files asked for lie in are fetched; nothing is restored.


@contextlib.contextmanager
def open_files(repo: Repository, snapshot: Snapshot) -> Iterator[FileSystem]:
    """The file system of `snapshot` (an ext2/3/4 image), under the repository's shared lock
    while the block runs.

    Raises UsageError (Ext4Error: not such a file system, or one damaged)."""
    from mover.fs.ext4 import Ext4
    from mover.pipeline.reader import open_snapshot as reader_of

    with reader_of(repo, snapshot) as reader:
        yield Ext4(reader.read, reader.size)


def list_files(
    fs: FileSystem, path: str, *, recursive: bool = False
) -> list[tuple[str, FileEntry]]:
    """(path, entry) for what is at `path`: a directory's entries (every level below with
    `recursive`), or the one entry of a file or symlink.

    Raises UsageError (no such path)."""
    from mover.fs.ext4 import Entry

    inode = fs.lookup(path, follow=False)
    where = "/" + "/".join(p for p in path.split("/") if p not in ("", "."))
    if not inode.is_dir:
        kind = "symlink" if inode.is_symlink else "file" if inode.is_file else "other"
        name = where.rsplit("/", 1)[-1]
        return [(where, Entry(name, inode.number, kind, inode.size, inode.mode, inode.mtime))]
    if recursive:
        return list(fs.walk(inode, where))
    entries = sorted(fs.entries(inode), key=lambda e: e.name)
    return [(f"{where.rstrip('/')}/{e.name}", e) for e in entries]


def copy_files(
    fs: FileSystem, path: str, to: str, *, progress: Callable[[Extracted], None] | None = None
) -> Extracted:
    """Copy `path` of the file system (a file, a directory and everything under it, or a
    symlink) into the directory `to`, which must exist; nothing there is overwritten.

    Raises UsageError (no such path; `to` not a directory; a name that exists there)."""
    from mover.fs.extract import extract

    return extract(fs, path, Path(to), progress)
