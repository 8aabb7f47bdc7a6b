"""Opening and creating repositories, and the storage stack they are opened on. Part of
mover.api: import from mover.api, not from here."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from mover.errors import UsageError

if TYPE_CHECKING:
    from mover.crypto import KdfParams, MasterKey
    from mover.objects.repository import (
        RepoConfig,
        Repository,
    )
    from mover.storage.base import Backend
    from mover.storage.metrics import Metrics as StorageMetrics
    from mover.storage.s3config import (
        ObjectLock,
    )
    from mover.storage.stack import StorageOptions


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
    # Each backup steers the level between 1 and zstd_level by what bounds it (None: mover's
    # default, on; mover.pipeline.level).
    adaptive_level: bool | None = None
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
    adaptive = o.zstd_level is None if o.adaptive_level is None else o.adaptive_level
    return RepoConfig(chunker, pack_size, level, o.object_lock, adaptive)


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
