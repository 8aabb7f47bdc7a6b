"""The API's time stamps: RFC 3339 in UTC, with seconds (conditions) or microseconds (Lease
renewTime / acquireTime, metav1.MicroTime)."""

from __future__ import annotations

from datetime import UTC, datetime

SECONDS = "%Y-%m-%dT%H:%M:%SZ"
MICROSECONDS = "%Y-%m-%dT%H:%M:%S.%fZ"


def now() -> str:
    return datetime.now(UTC).strftime(SECONDS)


def micro_now() -> str:
    return datetime.now(UTC).strftime(MICROSECONDS)


def parse(stamp: str) -> datetime | None:
    """Either form; None when it is neither."""
    for fmt in (MICROSECONDS, SECONDS):
        try:
            return datetime.strptime(stamp, fmt).replace(tzinfo=UTC)
        except ValueError:
            continue
    return None
