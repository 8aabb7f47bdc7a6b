"""mover as a library: the supported surface, in one place.

Everything a program needs to use mover's repositories goes through here: open or create a
repository, back up and restore volumes, list and resolve snapshots, forget them (by id or by
retention policy), prune, check, replicate, store small JSON documents, read storage metrics,
and read any byte range of a snapshot without restoring it (SnapshotReader, read_range).
The Kubernetes side (mover_k8s) uses nothing else of mover but this module and mover.errors
(enforced by import-linter, pyproject.toml). The modules behind it are free to change; the
names here keep their meaning.

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

import importlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, cast

from mover.console import emit_json, emit_table
from mover.errors import IntegrityError, UsageError
from mover.maintenance.retention import Decision, Group, Policy, apply_policy
from mover.objects.snapshot import Snapshot
from mover.units import format_age, format_duration, format_rate, format_size

if TYPE_CHECKING:
    from mover.crypto import KdfParams, MasterKey
    from mover.maintenance.check import CheckReport
    from mover.maintenance.prune import PruneStats
    from mover.objects.repository import RepoConfig, Repository
    from mover.objects.tree import Extent
    from mover.pipeline.backup import BackupStats
    from mover.pipeline.changed import ChangedRanges, find_parent
    from mover.pipeline.ranges import RangeList, read_ranges
    from mover.pipeline.reader import SnapshotReader, open_snapshot, read_range
    from mover.pipeline.replicate import ReplicateStats
    from mover.pipeline.restore import BadRange, RestoreStats
    from mover.storage.metrics import FIELDS as STORAGE_METRIC_FIELDS
    from mover.storage.metrics import Metrics as StorageMetrics
    from mover.storage.s3config import ObjectLock
    from mover.storage.stack import StorageOptions

__all__ = [
    "STORAGE_METRIC_FIELDS",
    "BackupOptions",
    "BackupStats",
    "BadRange",
    "ChangedRanges",
    "CheckReport",
    "Decision",
    "Extent",
    "Group",
    "InitOptions",
    "KdfParams",
    "ObjectLock",
    "Policy",
    "PruneOptions",
    "PruneStats",
    "RangeList",
    "ReplicateStats",
    "RepoConfig",
    "Repository",
    "RepositoryKey",
    "RestoreOptions",
    "RestoreStats",
    "Snapshot",
    "SnapshotReader",
    "StorageMetrics",
    "StorageOptions",
    "apply_policy",
    "backup",
    "check",
    "emit_json",
    "emit_table",
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
    "init_replica",
    "init_repository",
    "open_repository",
    "open_snapshot",
    "prune",
    "put_document",
    "read_range",
    "read_ranges",
    "reopen_repository",
    "replicate",
    "repository_key",
    "restore",
    "snapshots",
    "source_size",
    "storage_metrics",
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
    from mover.objects.repository import Repository
    from mover.storage.stack import open_backend

    backend = open_backend(url, storage)
    try:
        return Repository.open(backend, password)
    except BaseException:
        backend.close()
        raise


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
    from mover.chunking import DEFAULT_PARAMS, ChunkerParams
    from mover.objects.repository import (
        DEFAULT_PACK_SIZE,
        DEFAULT_ZSTD_LEVEL,
        RepoConfig,
        Repository,
    )
    from mover.storage.stack import open_backend

    o = options or InitOptions()
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
    config = RepoConfig(chunker, pack_size, level, o.object_lock)
    backend = open_backend(url, storage)
    try:
        return Repository.init(backend, password, config, o.kdf)
    except BaseException:
        backend.close()
        raise


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
    from mover.maintenance.prune import forget as forget_ids

    return forget_ids(repo, list(refs))


def forget_by_policy(repo: Repository, policy: Policy, *, dry_run: bool = False) -> list[Group]:
    """Apply a retention policy to each (hostname, source) group of snapshots (restic's
    semantics, mover.maintenance.retention) and delete the snapshots it does not keep, unless
    `dry_run`. Returns the groups with each snapshot's decision and reasons.

    Raises UsageError (a policy that keeps nothing: all its rules are 0), StorageError."""
    if policy.empty():
        raise UsageError("a retention policy whose rules are all 0 would remove every snapshot")
    groups = apply_policy(repo.snapshots(), policy)
    remove = [d.snapshot.id for g in groups for d in g.remove]
    if remove and not dry_run:
        forget(repo, remove)
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
) -> ReplicateStats:
    """Copy snapshots (`refs`: ids, prefixes or `latest`; None: every one) from `source` to
    `target`, a replica sharing its key (init_replica), sending only the chunks the target
    lacks, oldest first; snapshots the target holds are skipped. `progress` gets (snapshot id,
    bytes sent for it, bytes it needs sent).

    Raises UsageError (an unknown ref), IntegrityError (a copy that does not verify),
    StorageError."""
    from mover.pipeline.replicate import ReplicateStats
    from mover.pipeline.replicate import replicate as run_replicate

    # Nothing asked: mover.pipeline.replicate would take it as all.
    if refs is not None and not refs:
        return ReplicateStats()
    return run_replicate(
        source, target, None if refs is None else list(refs), threads, progress=progress
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
