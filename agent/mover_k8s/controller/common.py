"""What the reconcilers share: durations in a spec, the owner reference and the name of the work
items a Backup or a Restore makes, and the age of a status timestamp."""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime, timedelta

from mover_k8s import api
from mover_k8s.errors import SpecError
from mover_k8s.k8s.client import Obj

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(h|m|s)")


def parse_ttl(text: str) -> timedelta:
    if not text:
        return timedelta(0)
    parts = _DURATION.findall(text)
    if not parts or "".join(a + b for a, b in parts) != text:
        raise SpecError("InvalidTTL", f"spec.ttl {text!r} is not a duration like 720h or 90m")
    unit = {"h": 3600, "m": 60, "s": 1}
    return timedelta(seconds=sum(float(n) * unit[u] for n, u in parts))


def owner_ref(obj: Obj) -> Obj:
    return {
        "apiVersion": obj.get("apiVersion", api.API_VERSION),
        "kind": obj.get("kind"),
        "name": obj["metadata"]["name"],
        "uid": obj["metadata"].get("uid", ""),
        "controller": True,
        "blockOwnerDeletion": True,
    }


def item_name(owner: str, namespace: str, pvc: str) -> str:
    """Deterministic, so a retried step finds the item it made before. An owner name longer
    than the 40 characters kept is in the digest too: two Backups of one volume whose names
    differ only after them (per-namespace runs: `SCHEDULE-NAMESPACE-TIME`) get two items."""
    key = f"{namespace}/{pvc}" if len(owner) <= 40 else f"{owner}/{namespace}/{pvc}"
    digest = hashlib.blake2b(key.encode(), digest_size=4).hexdigest()
    return f"{owner[:40]}-{pvc[:12]}-{digest}".lower()


def parse_stamp(stamp: object) -> datetime | None:
    """A status timestamp (`2026-12-05T04:00:00Z`) as a time; None if it is not one."""
    if not isinstance(stamp, str) or not stamp:
        return None
    try:
        return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        return None


def seconds_since(stamp: str) -> float:
    """Seconds from a status timestamp (`2026-12-05T04:00:00Z`) to now; 0 if it is not one."""
    try:
        then = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        return 0.0
    return (datetime.now(UTC) - then).total_seconds()
