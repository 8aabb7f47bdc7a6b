"""Sizes and durations on the command line: they live in mover.units (the library and the
Kubernetes side use them too); re-exported here for the verbs."""

from __future__ import annotations

from mover.units import (
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
    "parse_duration",
    "parse_size",
]
