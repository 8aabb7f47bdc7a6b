"""Repository administration: keys, locks, repairs. Part of mover.api: import from mover.api,
not from here."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mover.crypto import KdfParams
    from mover.maintenance.repair import (
        ConfigRepairReport,
        DataRepairStats,
        IndexRepairStats,
        SnapshotRepairReport,
    )
    from mover.objects.keys import KeyInfo
    from mover.objects.locks import LockInfo
    from mover.objects.repository import (
        Repository,
    )
    from mover.storage.base import Backend


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
