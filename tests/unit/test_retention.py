"""Retention policy (mover.maintenance.retention): synthetic snapshots in, expectations worked out
by hand.

Times are UTC unless a test says otherwise. Ids are short readable strings: the policy only
compares them (for ties), never parses them.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mover.errors import RepositoryError
from mover.maintenance.retention import (
    RULES,
    Group,
    Policy,
    Reason,
    apply_policy,
    bucket,
    snapshot_time,
)
from mover.objects.snapshot import Snapshot


def snap(time: str, sid: str, host: str = "node-1", source: str = "/dev/vda") -> Snapshot:
    return Snapshot(time=time, hostname=host, source=source, size=0, tree="00", id=sid)


def kept(groups: list[Group]) -> dict[str, list[str]]:
    """Kept id -> the rules that keep it."""
    return {d.snapshot.id: [r.rule for r in d.reasons] for g in groups for d in g.keep}


def removed(groups: list[Group]) -> set[str]:
    return {d.snapshot.id for g in groups for d in g.remove}


def test_empty_repository_gives_no_groups() -> None:
    assert apply_policy([], Policy(last=3, daily=7)) == []


def test_keep_last_keeps_the_newest_n_with_their_rank() -> None:
    snaps = [snap(f"2026-01-0{d}T12:00:00+00:00", f"s{d}") for d in range(1, 6)]
    groups = apply_policy(snaps, Policy(last=3))
    assert kept(groups) == {"s5": ["last"], "s4": ["last"], "s3": ["last"]}
    assert removed(groups) == {"s1", "s2"}
    (group,) = groups
    # newest first, ranked 1..3 of 3, no calendar bucket
    assert [(d.snapshot.id, d.reasons) for d in group.keep] == [
        ("s5", (Reason("last", 1, 3, ""),)),
        ("s4", (Reason("last", 2, 3, ""),)),
        ("s3", (Reason("last", 3, 3, ""),)),
    ]
    assert [d.snapshot.id for d in group.remove] == ["s2", "s1"]


def test_count_above_the_number_of_snapshots_keeps_all() -> None:
    snaps = [snap("2026-01-01T00:00:00+00:00", "a"), snap("2026-01-01T00:00:01+00:00", "b")]
    groups = apply_policy(snaps, Policy(last=10, daily=10, yearly=10))
    assert kept(groups) == {"b": ["last", "daily", "yearly"], "a": ["last"]}
    assert removed(groups) == set()


def test_daily_keeps_newest_of_each_day_and_skips_empty_days() -> None:
    snaps = [
        snap("2026-01-01T08:00:00+00:00", "jan1-morning"),
        snap("2026-01-01T20:00:00+00:00", "jan1-evening"),
        snap("2026-01-02T09:00:00+00:00", "jan2"),
        # no snapshot on Jan 3: the day does not count
        snap("2026-01-04T10:00:00+00:00", "jan4-a"),
        snap("2026-01-04T23:59:59.999999+00:00", "jan4-b"),
        snap("2025-12-31T23:00:00+00:00", "dec31"),
    ]
    groups = apply_policy(snaps, Policy(daily=3))
    assert kept(groups) == {"jan4-b": ["daily"], "jan2": ["daily"], "jan1-evening": ["daily"]}
    assert removed(groups) == {"jan4-a", "jan1-morning", "dec31"}
    assert [str(r) for d in groups[0].keep for r in d.reasons] == [
        "daily 1/3 (2026-01-04)",
        "daily 2/3 (2026-01-02)",
        "daily 3/3 (2026-01-01)",
    ]


def test_hourly_buckets_are_calendar_hours_not_sixty_minute_windows() -> None:
    snaps = [
        snap("2026-05-05T10:59:00+00:00", "10:59"),
        snap("2026-05-05T11:00:00+00:00", "11:00"),  # one minute later, but another hour
        snap("2026-05-05T11:30:00+00:00", "11:30"),
        snap("2026-05-05T13:05:00+00:00", "13:05"),
        snap("2026-05-05T09:10:00+00:00", "09:10"),
    ]
    groups = apply_policy(snaps, Policy(hourly=3))
    assert kept(groups) == {"13:05": ["hourly"], "11:30": ["hourly"], "10:59": ["hourly"]}
    assert removed(groups) == {"11:00", "09:10"}
    assert [r.bucket for d in groups[0].keep for r in d.reasons] == [
        "2026-05-05 13h",
        "2026-05-05 11h",
        "2026-05-05 10h",
    ]


def test_weekly_uses_iso_weeks_across_the_2024_2025_boundary() -> None:
    # ISO 8601: Mon 2024-12-30 and Wed 2025-01-01 are in week 2025-W01; Sat 2024-12-28 and
    # Sun 2024-12-29 in 2024-W52; Mon 2024-12-23 also in 2024-W52; Sun 2024-12-22 in 2024-W51.
    snaps = [
        snap("2024-12-22T12:00:00+00:00", "sun-22"),
        snap("2024-12-23T12:00:00+00:00", "mon-23"),
        snap("2024-12-28T12:00:00+00:00", "sat-28"),
        snap("2024-12-29T12:00:00+00:00", "sun-29"),
        snap("2024-12-30T12:00:00+00:00", "mon-30"),
        snap("2025-01-01T12:00:00+00:00", "wed-01"),
    ]
    groups = apply_policy(snaps, Policy(weekly=3))
    assert kept(groups) == {"wed-01": ["weekly"], "sun-29": ["weekly"], "sun-22": ["weekly"]}
    assert removed(groups) == {"mon-30", "sat-28", "mon-23"}
    assert [r.bucket for d in groups[0].keep for r in d.reasons] == [
        "2025-W01",
        "2024-W52",
        "2024-W51",
    ]


def test_weekly_week_53_spans_new_year_2020_2021() -> None:
    # Thu 2020-12-31 and Sat 2021-01-02 are both in 2020-W53; Mon 2021-01-04 starts 2021-W01.
    snaps = [
        snap("2020-12-31T12:00:00+00:00", "thu-31"),
        snap("2021-01-02T12:00:00+00:00", "sat-02"),
        snap("2021-01-04T00:00:00+00:00", "mon-04"),
    ]
    groups = apply_policy(snaps, Policy(weekly=5))
    assert kept(groups) == {"mon-04": ["weekly"], "sat-02": ["weekly"]}
    assert removed(groups) == {"thu-31"}
    assert bucket("weekly", datetime(2021, 1, 2, tzinfo=UTC))[1] == "2020-W53"


def test_monthly_and_yearly() -> None:
    snaps = [
        snap("2023-06-01T00:00:00+00:00", "2023-06"),
        snap("2023-12-31T23:59:59+00:00", "2023-12"),
        snap("2024-01-01T00:00:00+00:00", "2024-01-a"),
        snap("2024-01-31T00:00:00+00:00", "2024-01-b"),
        snap("2024-03-15T00:00:00+00:00", "2024-03"),
    ]
    assert kept(apply_policy(snaps, Policy(monthly=2))) == {
        "2024-03": ["monthly"],
        "2024-01-b": ["monthly"],
    }
    groups = apply_policy(snaps, Policy(yearly=5))
    assert kept(groups) == {"2024-03": ["yearly"], "2023-12": ["yearly"]}
    assert removed(groups) == {"2024-01-a", "2024-01-b", "2023-06"}


def test_rules_combine_a_snapshot_kept_by_any_rule_is_kept_with_every_reason() -> None:
    snaps = [
        snap("2026-01-10T10:00:00+00:00", "jan10-a"),
        snap("2026-01-10T18:00:00+00:00", "jan10-b"),
        snap("2026-01-09T18:00:00+00:00", "jan9"),
        snap("2026-01-08T18:00:00+00:00", "jan8"),
        snap("2025-12-20T18:00:00+00:00", "dec20"),
        snap("2025-12-01T18:00:00+00:00", "dec1"),
        snap("2025-11-30T18:00:00+00:00", "nov30"),
    ]
    groups = apply_policy(snaps, Policy(last=2, daily=2, monthly=3))
    assert kept(groups) == {
        "jan10-b": ["last", "daily", "monthly"],
        "jan10-a": ["last"],
        "jan9": ["daily"],
        "dec20": ["monthly"],
        "nov30": ["monthly"],
    }
    assert removed(groups) == {"jan8", "dec1"}


def test_ties_are_broken_by_id_and_do_not_depend_on_input_order() -> None:
    same = "2026-02-02T02:02:02.000002+00:00"
    snaps = [snap(same, "aaaa"), snap(same, "bbbb"), snap("2026-02-01T00:00:00+00:00", "older")]
    for _ in range(5):
        random.shuffle(snaps)
        # the larger id counts as the newer: it alone holds the day
        assert kept(apply_policy(snaps, Policy(daily=5))) == {"bbbb": ["daily"], "older": ["daily"]}
        assert kept(apply_policy(snaps, Policy(last=1))) == {"bbbb": ["last"]}
        # each tied snapshot is still a snapshot of its own for `last`
        assert kept(apply_policy(snaps, Policy(last=2))) == {"bbbb": ["last"], "aaaa": ["last"]}


def test_groups_are_per_hostname_and_source() -> None:
    t = "2026-03-0{}T12:00:00+00:00"
    snaps = [
        snap(t.format(1), "a1", "node-1", "/dev/a"),
        snap(t.format(2), "a2", "node-1", "/dev/a"),
        snap(t.format(3), "b1", "node-1", "/dev/b"),
        snap(t.format(4), "a-other-host", "node-2", "/dev/a"),
        snap(t.format(5), "b2", "node-1", "/dev/b"),
    ]
    groups = apply_policy(snaps, Policy(last=1))
    assert [(g.hostname, g.source) for g in groups] == [
        ("node-1", "/dev/a"),
        ("node-1", "/dev/b"),
        ("node-2", "/dev/a"),
    ]
    assert [[d.snapshot.id for d in g.keep] for g in groups] == [["a2"], ["b2"], ["a-other-host"]]
    assert [[d.snapshot.id for d in g.remove] for g in groups] == [["a1"], ["b1"], []]


def test_buckets_are_utc_whatever_offset_a_time_was_written_with() -> None:
    # 01:30 at +02:00 on March 1st is 23:30 UTC on February 28th; a time without an offset is
    # taken as UTC.
    snaps = [
        snap("2026-03-01T01:30:00+02:00", "feb28-utc"),
        snap("2026-02-28T10:00:00+00:00", "feb28-morning"),
        snap("2026-03-01T00:30:00", "mar1-naive"),
    ]
    groups = apply_policy(snaps, Policy(daily=10, monthly=10))
    assert kept(groups) == {"mar1-naive": ["daily", "monthly"], "feb28-utc": ["daily", "monthly"]}
    assert removed(groups) == {"feb28-morning"}
    assert snapshot_time(snaps[0]) == datetime(2026, 2, 28, 23, 30, tzinfo=UTC)


def test_zero_rules_are_off_and_a_policy_of_zeros_is_empty() -> None:
    assert Policy().empty()
    assert Policy(last=0, daily=0).empty()
    assert not Policy(yearly=1).empty()
    snaps = [snap("2026-01-01T00:00:00+00:00", "a"), snap("2026-01-02T00:00:00+00:00", "b")]
    assert kept(apply_policy(snaps, Policy(last=0, daily=1))) == {"b": ["daily"]}
    assert Policy(last=3, weekly=4, yearly=1).describe() == "the 3 last, 4 weekly and 1 yearly"


@pytest.mark.parametrize("bad", [-1, 1.5, "3", True, None])
def test_policy_refuses_negative_and_non_integer_counts(bad: object) -> None:
    with pytest.raises(ValueError, match="keep-daily"):
        Policy(daily=bad)  # type: ignore[arg-type]


def test_unreadable_time_is_a_repository_error_naming_the_snapshot() -> None:
    with pytest.raises(RepositoryError, match="deadbeef"):
        apply_policy([snap("yesterday", "deadbeef00")], Policy(last=1))


# -- a second, independent formulation, checked on generated histories ---------------------


def reference(snaps: list[Snapshot], policy: Policy) -> dict[str, set[str]]:
    """Kept id -> rules, by sets instead of a stream: per group and rule, the distinct buckets,
    newest N of them, and the newest snapshot (time, then id) in each."""
    out: dict[str, set[str]] = {}
    groups: dict[tuple[str, str], list[Snapshot]] = {}
    for s in snaps:
        groups.setdefault((s.hostname, s.source), []).append(s)
    for members in groups.values():
        order = sorted(members, key=lambda s: (snapshot_time(s), s.id))
        for rule, n in policy.counts().items():
            if rule == "last":
                chosen = order[::-1][:n]
            else:
                newest: dict[tuple[int, ...], Snapshot] = {}
                for s in order:
                    newest[bucket(rule, snapshot_time(s))[0]] = s  # later ones overwrite
                chosen = [newest[k] for k in sorted(newest, reverse=True)[:n]]
            for s in chosen:
                out.setdefault(s.id, set()).add(rule)
    return out


_START = datetime(2023, 12, 20, tzinfo=UTC)
histories = st.lists(
    st.tuples(
        st.integers(0, 500 * 24 * 60),  # minutes after the start: ~16 months
        st.sampled_from([("n1", "/dev/a"), ("n1", "/dev/b"), ("n2", "/dev/a")]),
    ),
    max_size=60,
)
policies = st.builds(Policy, *[st.integers(0, 6) for _ in RULES])


@given(histories, policies)
def test_matches_the_set_based_reference(
    history: list[tuple[int, tuple[str, str]]], policy: Policy
) -> None:
    snaps = [
        snap((_START + timedelta(minutes=m)).isoformat(), f"id{i:03d}", host, source)
        for i, (m, (host, source)) in enumerate(history)
    ]
    groups = apply_policy(snaps, policy)
    got = {sid: set(rules) for sid, rules in kept(groups).items()}
    assert got == reference(snaps, policy)
    assert removed(groups) == {s.id for s in snaps} - set(got)
    for g in groups:
        for decisions in (g.keep, g.remove):
            times = [(snapshot_time(d.snapshot), d.snapshot.id) for d in decisions]
            assert times == sorted(times, reverse=True)  # newest first
