"""The error vocabulary: one root, a few precise kinds, each with its exit code.

Every message is one line a user can act on: what is wrong, and what to do.
"""

from __future__ import annotations


class MoverError(Exception):
    """Root of every error mover raises on purpose."""

    exit_code = 1


class UsageError(MoverError):
    """Bad input from the user (arguments, parameters, files named on the command line)."""

    exit_code = 2


class NativeBuildError(MoverError):
    """The compiled core is missing or cannot run on this machine."""

    exit_code = 3


class RepositoryError(MoverError):
    """The repository is missing, not a repository, locked out (wrong password) or damaged."""


class WrongPassword(RepositoryError):
    """The password opens none of the repository's keys."""


class IntegrityError(RepositoryError):
    """Stored data does not match its id or its authentication tag: it was damaged or altered."""


class SourceError(MoverError):
    """The backup source or the restore target cannot be used as asked."""


class StorageError(MoverError):
    """The storage backend failed; `temporary` says whether retrying may help."""

    def __init__(self, message: str, temporary: bool = False) -> None:
        super().__init__(message)
        self.temporary = temporary


class ObjectNotFound(StorageError):
    """The named object does not exist."""


class ObjectLocked(StorageError):
    """The object is under an S3 Object Lock retention (or legal hold) and cannot be deleted
    yet; this is the protection working, not a fault."""
