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

import importlib
from typing import TYPE_CHECKING, Any

from mover.console import emit_json, emit_table, error_line, human_rate, status
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
    from mover.crypto import KdfParams
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
    from mover.pipeline.changed import ChangedRanges, ChangeListWrong, find_parent
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

# The functions and option objects, each group in a module of its own.
from mover.api.admin import (
    PasswordChange,
    add_key,
    break_stale_locks,
    change_password,
    list_keys,
    list_locks,
    remove_key,
    repair_config,
    repair_data,
    repair_index,
    repair_snapshots,
)
from mover.api.maintenance import (
    PruneOptions,
    Replica,
    check,
    forget,
    forget_by_policy,
    init_replica,
    open_replica,
    prune,
    replicate,
)
from mover.api.reading import (
    MountOptions,
    benchmark_node,
    check_mountpoint,
    copy_files,
    list_files,
    load_fuse,
    mount,
    open_files,
)
from mover.api.repositories import (
    InitOptions,
    RepositoryKey,
    check_chunk_sizes,
    init_repository,
    init_repository_in,
    local_directory,
    object_lock_enabled,
    open_repository,
    open_repository_in,
    open_storage,
    reopen_repository,
    repository_key,
    storage_metrics,
)
from mover.api.snapshots import (
    RepositoryStats,
    damaged_snapshots,
    extents,
    find_snapshot,
    get_document,
    has_snapshot,
    put_document,
    repository_stats,
    resolve_snapshot_ids,
    snapshots,
)
from mover.api.volumes import (
    BackupOptions,
    RestoreOptions,
    backup,
    bad_ranges_json,
    changed_ranges,
    restore,
    source_size,
    write_bad_ranges,
)

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
    "ChangeListWrong",
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
    # --verify-unchanged found a difference: the change list missed a change (a UsageError).
    "ChangeListWrong": ("mover.pipeline.changed", "ChangeListWrong"),
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
