"""Byte sizes on the command line: 4096, 64KiB, 1MiB, 2GiB, 1.5GB."""

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
