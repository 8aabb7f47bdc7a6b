"""Errors of the Kubernetes side, rooted in mover's vocabulary (mover.errors) so that the `mover`
command maps them to its exit codes.

`reason` is the CamelCase word a status condition carries (`RepositoryNotFound`, `NoAgent`...):
the controller writes it into the condition, the message into its message.
"""

from __future__ import annotations

from mover.errors import MoverError, UsageError


class KubeError(MoverError):
    """The Kubernetes API refused or failed a call; `status` is its HTTP status (0: no answer)."""

    def __init__(
        self, message: str, status: int = 0, reason: str = "", temporary: bool = False
    ) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.temporary = temporary


class NotFound(KubeError):
    """The object or resource does not exist."""


class Conflict(KubeError):
    """409: the object exists already, or was changed since it was read (stale resourceVersion)."""


class SpecError(UsageError):
    """A Backup, Restore or work item asks for something impossible; `reason` names why in one
    word for the status condition. Raised before anything is changed."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class Cancelled(MoverError):
    """The work item was cancelled (spec.cancel); nothing was stored for it."""


class CbtError(MoverError):
    """Changed block tracking failed: the snapshot metadata service is missing, unreachable,
    refused the call, or sent a list that breaks its own promises. The backup reads the whole
    volume instead; nothing stored is affected."""
