"""Sizes and durations on the command line: they live in mover.units (the library and the
Kubernetes side use them too), offered by mover.api; re-exported here for the verbs."""

from __future__ import annotations

from mover.api import (
    format_age,
    format_duration,
    format_rate,
    format_size,
    parse_duration,
    parse_size,
)

__all__ = [
    "format_age",
    "format_duration",
    "format_rate",
    "format_size",
    "mib",
    "parse_duration",
    "parse_size",
]


def mib(n: int) -> str:
    """Bytes as the verbs' summary lines give them: MiB with one decimal."""
    return f"{n / 2**20:,.1f} MiB"
