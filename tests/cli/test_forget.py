"""`mover forget` through the real command line, on real local repositories.

Backups are real (`mover backup` of small generated images). Snapshots at chosen times are made
the way tests/integration/test_bad_input.py makes them: a copy of a real snapshot's manifest
(same tree, so same data) written through the repository API with another time or hostname.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from mover.objects.repository import Repository
from mover.storage.local import LocalBackend
from tests.integration.conftest import (
    PASSWORD,
    MiB,
    assert_one_error_line,
    assert_same_file,
    backup,
    init_repo,
    mover,
    ok,
    out_json,
    pack_files,
    restore,
    snapshot_list,
    tree_state,
    write_image,
)


def open_api(repo: Path) -> Repository:
    return Repository.open(LocalBackend(repo), PASSWORD.encode())


@dataclasses.dataclass
class History:
    repo: Path
    ids: dict[str, str]  # name -> snapshot id
    host: str  # this machine's hostname, as backup recorded it
    source_a: str
    source_b: str


@pytest.fixture
def history(tmp_path: Path) -> History:
    """Three (hostname, source) groups, all at hand-chosen UTC times:
    (host, a.img): a1 Jan 1 12:00, a2 Jan 2 08:00, a3 Jan 2 20:00, a4 Jan 5 12:00 (2026)
    (other-node, a.img): b1 Jan 3 00:00, b2 Jan 3 23:00
    (host, b.img): c1 2025-12-31 23:59:59
    """
    repo = init_repo(tmp_path / "repo")
    real_a = backup(repo, write_image(tmp_path / "a.img", seed=21, size=1 * MiB))
    real_b = backup(repo, write_image(tmp_path / "b.img", seed=22, size=1 * MiB))
    api = open_api(repo)
    by_id = {s.id: s for s in api.snapshots()}
    base_a, base_b = by_id[real_a["id"]], by_id[real_b["id"]]
    plan = {
        "a1": (base_a, base_a.hostname, "2026-01-01T12:00:00+00:00"),
        "a2": (base_a, base_a.hostname, "2026-01-02T08:00:00+00:00"),
        "a3": (base_a, base_a.hostname, "2026-01-02T20:00:00+00:00"),
        "a4": (base_a, base_a.hostname, "2026-01-05T12:00:00+00:00"),
        "b1": (base_a, "other-node", "2026-01-03T00:00:00+00:00"),
        "b2": (base_a, "other-node", "2026-01-03T23:00:00+00:00"),
        "c1": (base_b, base_b.hostname, "2025-12-31T23:59:59+00:00"),
    }
    ids = {
        name: api.write_snapshot(dataclasses.replace(base, hostname=host, time=time, id=""))
        for name, (base, host, time) in plan.items()
    }
    for real in (base_a, base_b):  # only the hand-timed copies remain
        api.backend.delete(f"snapshots/{real.id}")
    api.close()
    assert {s["id"] for s in snapshot_list(repo)} == set(ids.values())
    return History(repo, ids, base_a.hostname, base_a.source, base_b.source)


POLICY = ("--keep-last", "1", "--keep-daily", "2")
# Worked out by hand from the fixture's times, per group, newest first.
KEEP = {"a4": ["last", "daily"], "a3": ["daily"], "b2": ["last", "daily"], "c1": ["last", "daily"]}
REMOVE = ["a2", "a1", "b1"]


def by_group(report: dict[str, Any], h: History) -> dict[tuple[str, str], Any]:
    names = {v: k for k, v in h.ids.items()}
    return {
        (g["hostname"], g["source"]): (
            [(names[e["id"]], e["reasons"]) for e in g["keep"]],
            [names[e["id"]] for e in g["remove"]],
        )
        for g in report["groups"]
    }


def expected_groups(h: History) -> dict[tuple[str, str], Any]:
    return {
        (h.host, h.source_a): ([("a4", KEEP["a4"]), ("a3", KEEP["a3"])], ["a2", "a1"]),
        ("other-node", h.source_a): ([("b2", KEEP["b2"])], ["b1"]),
        (h.host, h.source_b): ([("c1", KEEP["c1"])], []),
    }


def test_dry_run_json_shows_keep_and_remove_with_reasons_and_changes_nothing(
    history: History,
) -> None:
    h = history
    before = tree_state(h.repo)
    report = out_json(mover("forget", "--repo", h.repo, *POLICY, "--dry-run", "--json"))
    assert report["dry_run"] is True
    assert report["policy"] == {
        "last": 1,
        "hourly": 0,
        "daily": 2,
        "weekly": 0,
        "monthly": 0,
        "yearly": 0,
    }
    assert by_group(report, h) == expected_groups(h)
    assert sorted(report["remove"]) == sorted(h.ids[n] for n in REMOVE)
    assert sorted(report["keep"]) == sorted(h.ids[n] for n in KEEP)
    assert report["removed"] == []
    assert report["prune"] is None
    assert tree_state(h.repo) == before


def test_dry_run_text_says_would_and_gives_each_rule(history: History) -> None:
    h = history
    before = tree_state(h.repo)
    proc = ok(mover("forget", "--repo", h.repo, *POLICY, "--dry-run", env={"COLUMNS": "200"}))
    out = proc.stdout.decode()
    assert "keep the 1 last and 2 daily snapshots of each (hostname, source)" in out
    assert "last 1/1, daily 1/2 (2026-01-05)" in out
    assert "daily 2/2 (2026-01-02)" in out
    assert h.ids["a1"][:8] in out and h.ids["b1"][:8] in out
    assert "dry run: would remove 3 snapshots; nothing was changed" in out
    assert tree_state(h.repo) == before


def test_policy_removes_exactly_what_the_dry_run_showed(history: History) -> None:
    h = history
    dry = out_json(mover("forget", "--repo", h.repo, *POLICY, "--dry-run", "--json"))
    report = out_json(mover("forget", "--repo", h.repo, *POLICY, "--json"))
    assert report["dry_run"] is False
    assert by_group(report, h) == expected_groups(h)
    assert sorted(report["removed"]) == sorted(h.ids[n] for n in REMOVE) == sorted(dry["remove"])
    assert {s["id"] for s in snapshot_list(h.repo)} == {h.ids[n] for n in KEEP}
    ok(mover("check", "--repo", h.repo))
    # Applying the same policy again removes nothing more.
    again = out_json(mover("forget", "--repo", h.repo, *POLICY, "--json"))
    assert again["removed"] == [] and sorted(again["keep"]) == sorted(h.ids[n] for n in KEEP)


def test_weekly_and_yearly_rules_through_the_cli(history: History) -> None:
    # ISO weeks: a4 (Mon Jan 5) is 2026-W02; a1..a3 and b1..b2 are 2026-W01; c1 (Wed Dec 31
    # 2025) is also 2026-W01. Years: c1 is the only 2025 snapshot of its group.
    h = history
    report = out_json(
        mover("forget", "--repo", h.repo, "--keep-weekly", "1", "--keep-yearly", "3", "--json")
    )
    assert by_group(report, h) == {
        (h.host, h.source_a): ([("a4", ["weekly", "yearly"])], ["a3", "a2", "a1"]),
        ("other-node", h.source_a): ([("b2", ["weekly", "yearly"])], ["b1"]),
        (h.host, h.source_b): ([("c1", ["weekly", "yearly"])], []),
    }


def test_prune_after_forget_frees_the_data_only_removed_snapshots_used(tmp_path: Path) -> None:
    repo = init_repo(tmp_path / "repo")
    volume = tmp_path / "volume.img"
    write_image(volume, seed=31, size=4 * MiB)
    old = backup(repo, volume)
    write_image(volume, seed=32, size=4 * MiB)  # the same source, all new content
    new = backup(repo, volume)
    stored = sum(p.stat().st_size for p in pack_files(repo))

    report = out_json(mover("forget", "--repo", repo, "--keep-last", "1", "--prune", "--json"))
    assert report["removed"] == [old["id"]]
    assert report["keep"] == [new["id"]]
    assert report["prune"] is not None and report["prune"]["bytes_freed"] > 0
    after = sum(p.stat().st_size for p in pack_files(repo))
    assert after < stored - 2 * MiB  # the old content was at least half of it
    ok(mover("check", "--repo", repo, "--read-data"))
    restore(repo, new["id"], tmp_path / "restored.img")
    assert_same_file(volume, tmp_path / "restored.img")

    # Nothing left to remove: prune is not run.
    again = out_json(mover("forget", "--repo", repo, "--keep-last", "1", "--prune", "--json"))
    assert again["removed"] == [] and again["prune"] is None


def test_dry_run_with_prune_removes_and_prunes_nothing(tmp_path: Path) -> None:
    repo = init_repo(tmp_path / "repo")
    volume = write_image(tmp_path / "volume.img", seed=41, size=1 * MiB)
    backup(repo, volume)
    write_image(volume, seed=42, size=1 * MiB)
    backup(repo, volume)
    before = tree_state(repo)
    report = out_json(
        mover("forget", "--repo", repo, "--keep-last", "1", "--prune", "--dry-run", "--json")
    )
    assert len(report["remove"]) == 1 and report["removed"] == [] and report["prune"] is None
    assert tree_state(repo) == before


def test_policy_on_an_empty_repository_removes_nothing(tmp_path: Path) -> None:
    repo = init_repo(tmp_path / "repo")
    report = out_json(mover("forget", "--repo", repo, "--keep-daily", "7", "--json"))
    assert report["groups"] == [] and report["remove"] == [] and report["removed"] == []


def test_explicit_ids_still_work_with_and_without_dry_run(history: History) -> None:
    h = history
    target = h.ids["a2"]
    before = tree_state(h.repo)
    dry = out_json(mover("forget", "--repo", h.repo, target[:10], "--dry-run", "--json"))
    assert dry["remove"] == [target] and dry["removed"] == [] and dry["policy"] is None
    assert tree_state(h.repo) == before

    # An id and a prefix of it name one snapshot: removed once.
    report = out_json(mover("forget", "--repo", h.repo, target, target[:10], "--json"))
    assert report["removed"] == [target]
    assert target not in {s["id"] for s in snapshot_list(h.repo)}
    assert len(snapshot_list(h.repo)) == len(h.ids) - 1
    proc = ok(mover("forget", "--repo", h.repo, h.ids["a1"]))
    assert proc.stdout.decode().strip() == f"removed snapshot {h.ids['a1'][:8]}"


BAD = [
    (["{a1}", "--keep-last", "1"], "not both"),
    ([], "nothing to forget"),
    (["--dry-run"], "nothing to forget"),
    (["--keep-last", "-1"], "--keep-last -1: a count must be 0 or more"),
    (["--keep-daily", "1.5"], "not a valid integer"),
    (["--keep-weekly", "many"], "--keep-weekly"),
    (["--keep-hourly"], "--keep-hourly"),
    (["--keep-last", "0"], "every --keep-* given is 0"),
    (["--keep-monthly", "0", "--keep-yearly", "0"], "every --keep-* given is 0"),
    (["--keep-last", "1", "--unindexed-grace", "1h"], "only with --prune"),
    (["--keep-last", "1", "--prune", "--unindexed-grace", "soon"], "--unindexed-grace"),
    (["abcdef0123"], "no snapshot"),
    (["{a1}", "not-an-id"], "not a snapshot id"),
]


@pytest.mark.parametrize(("args", "says"), BAD, ids=[" ".join(a) or "none" for a, _ in BAD])
def test_bad_input_is_one_line_exit_2_and_changes_nothing(
    history: History, args: list[str], says: str
) -> None:
    h = history
    before = tree_state(h.repo)
    argv = [a.format(**h.ids) for a in args]
    proc = mover("forget", "--repo", h.repo, *argv, "--json")
    line = assert_one_error_line(proc, exit_code=2)
    assert says in line, line
    assert tree_state(h.repo) == before


def test_wrong_password_with_a_policy_changes_nothing(history: History) -> None:
    h = history
    before = tree_state(h.repo)
    proc = mover(
        "forget", "--repo", h.repo, *POLICY, "--prune", env={"MOVER_PASSWORD": PASSWORD + "x"}
    )
    assert_one_error_line(proc, exit_code=1, starts="wrong password")
    assert tree_state(h.repo) == before
