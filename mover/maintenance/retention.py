"""Retention policy: which snapshots `forget --keep-*` keeps, and why. Pure: no I/O.

The semantics are restic's, so that people who know `restic forget` can predict mover's:

- Snapshots are grouped by (hostname, source) -- restic's default grouping by host and
  paths -- and the policy applies to each group on its own. A volume's history never keeps
  or removes another volume's snapshots.
- In a group, snapshots are taken newest first. `last N` keeps the N newest. `hourly N`,
  `daily N`, `weekly N`, `monthly N` and `yearly N` cut time into calendar buckets (hour,
  day, ISO 8601 week, month, year) and keep the newest snapshot of each of the N most recent
  buckets that hold a snapshot; empty buckets do not count. A snapshot kept by any rule is
  kept, with every rule that keeps it as a reason; the rest are removed.
- Buckets are in UTC, not the local time restic uses: agents on many nodes, in many time
  zones, write to one repository, and a day must mean the same to all of them.
- Ties (two snapshots of a group with the same time) are broken by id, the larger id counting
  as the newer, so the outcome never depends on listing order. Each still counts as its own
  snapshot for `last`; only one of them can be a bucket's newest.
- A rule of 0 is off. A policy whose rules are all 0 keeps nothing; callers must refuse it
  (as restic does) rather than remove every snapshot.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime

from mover.errors import RepositoryError
from mover.objects.snapshot import Snapshot

# The rules, in the order they are applied and reported.
RULES = ("last", "hourly", "daily", "weekly", "monthly", "yearly")


@dataclass(frozen=True)
class Policy:
    """How many snapshots (last) or calendar buckets (the others) to keep per group."""

    last: int = 0
    hourly: int = 0
    daily: int = 0
    weekly: int = 0
    monthly: int = 0
    yearly: int = 0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if type(value) is not int or value < 0:
                raise ValueError(f"keep-{f.name} must be an integer >= 0, not {value!r}")

    def counts(self) -> dict[str, int]:
        return {rule: getattr(self, rule) for rule in RULES}

    def empty(self) -> bool:
        """True when no rule keeps anything (applying it would remove every snapshot)."""
        return not any(self.counts().values())

    def describe(self) -> str:
        """E.g. `the 3 last, 7 daily and 4 weekly`."""
        parts = [f"{n} {rule}" for rule, n in self.counts().items() if n]
        if not parts:
            return "nothing"
        if len(parts) == 1:
            return f"the {parts[0]}"
        return f"the {', '.join(parts[:-1])} and {parts[-1]}"


@dataclass(frozen=True)
class Reason:
    """One rule keeping a snapshot: the `rank`-th of the rule's `count` (1 is the newest),
    for calendar rules in `bucket` (e.g. `2026-11-25` for daily, `2026-W48` for weekly)."""

    rule: str
    rank: int
    count: int
    bucket: str

    def __str__(self) -> str:
        where = f" ({self.bucket})" if self.bucket else ""
        return f"{self.rule} {self.rank}/{self.count}{where}"


@dataclass(frozen=True)
class Decision:
    snapshot: Snapshot
    reasons: tuple[Reason, ...]  # empty: removed

    @property
    def keep(self) -> bool:
        return bool(self.reasons)


@dataclass(frozen=True)
class Group:
    """One (hostname, source) and the decision on each of its snapshots, newest first."""

    hostname: str
    source: str
    decisions: tuple[Decision, ...]

    @property
    def keep(self) -> tuple[Decision, ...]:
        return tuple(d for d in self.decisions if d.keep)

    @property
    def remove(self) -> tuple[Decision, ...]:
        return tuple(d for d in self.decisions if not d.keep)


def snapshot_time(snapshot: Snapshot) -> datetime:
    """The snapshot's time in UTC (a time without an offset is taken to be UTC)."""
    try:
        when = datetime.fromisoformat(snapshot.time)
    except (TypeError, ValueError):
        raise RepositoryError(
            f"snapshot {snapshot.id[:8]} has an unreadable time {snapshot.time!r}; "
            "run `mover check`, or forget it by id"
        ) from None
    if when.tzinfo is None:
        return when.replace(tzinfo=UTC)
    return when.astimezone(UTC)


# Calendar rules: the bucket key (ordered like time) and its label.
_BUCKETS: dict[str, Callable[[datetime], tuple[tuple[int, ...], str]]] = {
    "hourly": lambda t: ((t.year, t.month, t.day, t.hour), f"{t:%Y-%m-%d %H}h"),
    "daily": lambda t: ((t.year, t.month, t.day), f"{t:%Y-%m-%d}"),
    "weekly": lambda t: (
        (t.isocalendar().year, t.isocalendar().week),
        f"{t.isocalendar().year}-W{t.isocalendar().week:02d}",
    ),
    "monthly": lambda t: ((t.year, t.month), f"{t:%Y-%m}"),
    "yearly": lambda t: ((t.year,), f"{t:%Y}"),
}


def bucket(rule: str, when: datetime) -> tuple[tuple[int, ...], str]:
    """The calendar bucket of a UTC time under a rule other than `last`: (key, label)."""
    return _BUCKETS[rule](when.astimezone(UTC))


def newest_first(snapshots: Iterable[Snapshot]) -> list[Snapshot]:
    return sorted(snapshots, key=lambda s: (snapshot_time(s), s.id), reverse=True)


def apply_to_group(snapshots: Sequence[Snapshot], policy: Policy) -> list[Decision]:
    """Decisions for one group's snapshots, newest first."""
    counts = policy.counts()
    remaining = dict(counts)
    last_key: dict[str, tuple[int, ...] | None] = dict.fromkeys(RULES)
    decisions = []
    for snapshot in newest_first(snapshots):
        when = snapshot_time(snapshot)
        reasons = []
        for rule in RULES:
            if remaining[rule] == 0:
                continue
            if rule == "last":
                label = ""
            else:
                key, label = bucket(rule, when)
                if key == last_key[rule]:
                    continue  # a newer snapshot already holds this bucket
                last_key[rule] = key
            remaining[rule] -= 1
            reasons.append(Reason(rule, counts[rule] - remaining[rule], counts[rule], label))
        decisions.append(Decision(snapshot, tuple(reasons)))
    return decisions


def apply_policy(snapshots: Iterable[Snapshot], policy: Policy) -> list[Group]:
    """Group by (hostname, source), sorted, and apply the policy to each group."""
    by_group: dict[tuple[str, str], list[Snapshot]] = {}
    for snapshot in snapshots:
        by_group.setdefault((snapshot.hostname, snapshot.source), []).append(snapshot)
    groups = []
    for (hostname, source), members in sorted(by_group.items()):
        groups.append(Group(hostname, source, tuple(apply_to_group(members, policy))))
    return groups
