"""Byte sizes (4096, 64KiB, 1MiB, 2GiB, 1.5GB) and durations (90s, 15m, 1h, 2d) as people write
them (parse_size, parse_duration) and read them (format_size, format_rate, format_duration,
format_age). Not part of the CLI: the library (mover.tools.sampledata) and the commands that join
`mover` from other packages (through mover.api) use them too."""

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


_BINARY = ("KiB", "MiB", "GiB", "TiB")  # what parse_size reads


def format_size(n: float) -> str:
    """Bytes for people in binary units, as the data path prints them and parse_size reads them
    back: `512 B`, `1.5 KiB`, `512.0 MiB`, `1.3 GiB` (one decimal from KiB up)."""
    if n < 1024:
        return f"{max(n, 0):.0f} B"
    value = n / 1024
    unit = 0
    # Up a unit while this one would print 1024.0 or more.
    while round(value, 1) >= 1024 and unit < len(_BINARY) - 1:
        value /= 1024
        unit += 1
    return f"{value:.1f} {_BINARY[unit]}"


def format_rate(bytes_per_second: float) -> str:
    """`310.5 MiB/s`."""
    return f"{format_size(bytes_per_second)}/s"


def format_duration(seconds: float) -> str:
    """A duration to the second, in at most two units: `22s`, `3m10s`, `2h05m`, `3d04h`."""
    s = max(int(seconds), 0)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def format_age(seconds: float) -> str:
    """How old something is, in one unit as kubectl prints AGE: `45s`, `3m`, `2h`, `5d`, `1y`."""
    s = max(int(seconds), 0)
    for unit, size in (("y", 365 * 86400), ("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size:
            return f"{s // size}{unit}"
    return f"{s}s"
