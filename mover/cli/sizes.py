"""Byte sizes (4096, 64KiB, 1MiB, 2GiB, 1.5GB) and durations (90s, 15m, 1h, 2d) on the
command line."""

from __future__ import annotations

import re

from mover.errors import UsageError

_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "m": 1000**2,
    "mb": 1000**2,
    "g": 1000**3,
    "gb": 1000**3,
    "t": 1000**4,
    "tb": 1000**4,
    "kib": 1 << 10,
    "mib": 1 << 20,
    "gib": 1 << 30,
    "tib": 1 << 40,
}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def parse_size(text: str, what: str, minimum: int = 0) -> int:
    match = _SIZE.match(text)
    unit = match.group(2).lower() if match else ""
    if not match or unit not in _UNITS:
        raise UsageError(f"{what}: {text!r} is not a size; write e.g. 4096, 64KiB, 256MiB or 1GiB")
    value = int(float(match.group(1)) * _UNITS[unit])
    if value < minimum:
        raise UsageError(f"{what}: {text!r} is below the minimum of {minimum} bytes")
    return value


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|)\s*$")
_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str, what: str) -> float:
    match = _DURATION.match(text)
    if not match:
        raise UsageError(f"{what}: {text!r} is not a duration; write e.g. 0, 90s, 15m, 1h or 2d")
    return float(match.group(1)) * _SECONDS[match.group(2)]
