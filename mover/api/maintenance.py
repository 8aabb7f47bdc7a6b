"""Forget, prune, check and replicate. Part of mover.api: import from mover.api, not from here."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mover.errors import ObjectNotFound, UsageError
from mover.maintenance.retention import Group, Policy, apply_policy

if TYPE_CHECKING:
    from mover.crypto import KdfParams
    from mover.maintenance.check import CheckReport
    from mover.maintenance.prune import PruneStats
    from mover.objects.repository import (
        Repository,
    )
    from mover.pipeline.replicate import ReplicateStats
    from mover.storage.base import Backend
    from mover.storage.stack import StorageOptions


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
