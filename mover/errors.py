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
