"""A Schedule's retention (mover.retention's policy over the Backups it made): spec.retention
read as a Policy, and which of one app's Backups the policy expires now."""

from __future__ import annotations

from datetime import UTC, datetime

from mover.api import Policy, Snapshot, apply_policy
from mover_k8s import api
from mover_k8s.controller.common import parse_stamp
from mover_k8s.errors import SpecError
from mover_k8s.k8s.client import Obj

RULES = ("last", "hourly", "daily", "weekly", "monthly", "yearly")
DEFAULT_KEEP_LAST = 7


def policy_of(spec: Obj) -> Policy:
    """spec.retention's rules (spec.keepLast is the `last` rule when retention has none; 7 when
    neither is given). Raises SpecError for a count that is not an integer >= 0, or a policy
    that would keep nothing."""
    retention = spec.get("retention")
    if retention is None:
        retention = {}
    if not isinstance(retention, dict):
        raise SpecError("InvalidRetention", "spec.retention must be a map of rule: count")
    unknown = sorted(set(retention) - set(RULES))
    if unknown:
        raise SpecError(
            "InvalidRetention",
            f"spec.retention has unknown rules {unknown}; known: {', '.join(RULES)}",
        )
    counts: dict[str, object] = dict(retention)
    if "last" not in counts:
        keep_last = spec.get("keepLast")
        if keep_last is not None:
            counts["last"] = keep_last
        elif not retention:
            counts["last"] = DEFAULT_KEEP_LAST
    for rule, value in counts.items():
        if type(value) is not int or value < 0:
            where = f"spec.retention.{rule}" if rule in retention else "spec.keepLast"
            raise SpecError("InvalidRetention", f"{where} must be an integer >= 0, not {value!r}")
    policy = Policy(**{rule: int(str(value)) for rule, value in counts.items()})
    if policy.empty():
        raise SpecError(
            "InvalidRetention",
            "the retention policy keeps nothing (every count is 0); keep at least one Backup",
        )
    return policy


def expired(meta: Obj, made: list[Obj], policy: Policy) -> list[str]:
    """Of one app's Backups, those the policy expires now."""
    done = [
        b
        for b in made
        if (b.get("status") or {}).get("phase") in api.DONE_PHASES and not expiring(b)
    ]
    completed = {b["metadata"]["name"]: b for b in done if b["status"]["phase"] == api.COMPLETED}
    snapshots = [
        Snapshot(
            time=finished_at(b).isoformat(), hostname="", source=meta["name"], size=0, tree="", id=n
        )
        for n, b in completed.items()
    ]
    expire: list[str] = []
    kept: list[datetime] = []
    for group in apply_policy(snapshots, policy):
        expire += [d.snapshot.id for d in group.remove]
        kept += [finished_at(completed[d.snapshot.id]) for d in group.keep]
    if kept:
        oldest = min(kept)
        expire += [
            b["metadata"]["name"]
            for b in done
            if b["status"]["phase"] != api.COMPLETED and finished_at(b) < oldest
        ]
    return expire


def finished_at(backup: Obj) -> datetime:
    """When a Backup ended (completionTimestamp), else when it was made."""
    status = backup.get("status") or {}
    meta = backup["metadata"]
    return (
        parse_stamp(status.get("completionTimestamp"))
        or parse_stamp(meta.get("creationTimestamp"))
        or datetime.min.replace(tzinfo=UTC)
    )


def expiring(backup: Obj) -> bool:
    """Whether a Backup has expired (its snapshots are being forgotten, then it is deleted)."""
    at = parse_stamp((backup.get("status") or {}).get("expiration"))
    return at is not None and at <= datetime.now(UTC)
