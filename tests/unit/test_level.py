"""`compression: auto`: the zstd level follows how busy the CPUs are, between 1 and the
repository's level, and never changes what a backup's tree says."""

from __future__ import annotations

import os
import random
from dataclasses import replace
from pathlib import Path

import pytest

from mover.chunking import ChunkerParams
from mover.crypto import KdfParams, MasterKey
from mover.objects.repository import RepoConfig, Repository
from mover.pipeline import level
from mover.pipeline.backup import run_backup
from mover.pipeline.level import AdaptiveLevel, FixedLevel, level_for, usable_cpus
from mover.pipeline.restore import run_restore
from mover.storage.memory import MemoryBackend

STEP = level.PERIOD * 1.5  # a little more than a period


class Clocks:
    """Wall and CPU clocks that the test moves: `run(seconds, busy)` spends `seconds` of wall
    time with the process using `busy` of its CPUs."""

    def __init__(self, cpus: float) -> None:
        self.cpus, self.wall, self.cpu = cpus, 100.0, 5.0

    def run(self, seconds: float, busy: float) -> None:
        self.wall += seconds
        self.cpu += seconds * busy * self.cpus


def steered(ceiling: int, cpus: float = 2.0) -> tuple[AdaptiveLevel, Clocks]:
    clocks = Clocks(cpus)
    return AdaptiveLevel(ceiling, cpus, lambda: clocks.wall, lambda: clocks.cpu), clocks


def test_busy_cpus_step_the_level_down_to_one_and_no_lower() -> None:
    control, clocks = steered(3)
    assert control.level == 3
    for _ in range(5):
        clocks.run(STEP, 0.95)
        control.tick()
    assert list(control.levels) == [2, 1, 1, 1, 1]


def test_idle_cpus_step_it_back_up_to_the_ceiling_and_no_higher() -> None:
    control, clocks = steered(3)
    for busy in (0.9, 0.9, 0.2, 0.2, 0.2):
        clocks.run(STEP, busy)
        control.tick()
    assert list(control.levels) == [2, 1, 2, 3, 3]


def test_in_between_the_level_holds() -> None:
    # Level 1 frees CPU: a utilisation between IDLE and BUSY must not raise it straight back.
    control, clocks = steered(3)
    clocks.run(STEP, 0.9)
    control.tick()
    for _ in range(4):
        clocks.run(STEP, (level.IDLE + level.BUSY) / 2)
        control.tick()
    assert list(control.levels) == [2, 2, 2, 2, 2]


def test_no_decision_before_a_period_has_passed() -> None:
    control, clocks = steered(3)
    for _ in range(10):
        clocks.run(level.PERIOD / 20, 1.0)
        control.tick()
    assert list(control.levels) == [] and control.level == 3
    clocks.run(STEP, 1.0)
    control.tick()
    assert control.level == 2


def test_utilisation_is_measured_against_the_usable_cpus() -> None:
    # One core fully busy is 50% of two CPUs (not busy) but 100% of one (busy).
    two, clocks2 = steered(3, cpus=2.0)
    one, clocks1 = steered(3, cpus=1.0)
    clocks2.run(STEP, 0.5)
    clocks1.run(STEP, 1.0)
    two.tick()
    one.tick()
    assert (two.level, one.level) == (3, 2)


def test_fixed_levels_and_no_compression_never_move() -> None:
    assert isinstance(level_for(3, adaptive=False), FixedLevel)
    assert isinstance(level_for(0, adaptive=True), FixedLevel)  # 0: the owner chose none
    fixed = level_for(7, adaptive=False)
    fixed.tick()
    assert fixed.level == 7
    assert isinstance(level_for(3, adaptive=True), AdaptiveLevel)


@pytest.mark.parametrize(
    ("cpu_max", "cfs", "expected"),
    [
        ("50000 100000\n", None, 0.5),
        ("max 100000\n", ("25000", "100000"), None),  # v2 says none: v1's files are not read
        ("garbage\n", None, None),
        (None, None, None),
        (None, ("150000\n", "100000\n"), 1.5),  # cgroup v1
        (None, ("-1\n", "100000\n"), None),
    ],
)
def test_usable_cpus_follow_the_cgroup_quota(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    cpu_max: str | None,
    cfs: tuple[str, str] | None,
    expected: float | None,
) -> None:
    path = tmp_path / "cpu.max"
    if cpu_max is not None:
        path.write_text(cpu_max)
    cfs_dir = tmp_path / "cpu"
    cfs_dir.mkdir()
    if cfs is not None:
        (cfs_dir / "cpu.cfs_quota_us").write_text(cfs[0])
        (cfs_dir / "cpu.cfs_period_us").write_text(cfs[1])
    monkeypatch.setattr(level, "CPU_MAX", path)
    monkeypatch.setattr(level, "CFS_DIR", cfs_dir)
    unlimited = float(len(os.sched_getaffinity(0)))
    assert usable_cpus() == (min(expected, unlimited) if expected is not None else unlimited)


def test_config_says_auto_and_older_configs_stay_fixed() -> None:
    params = ChunkerParams(16 << 10, 64 << 10, 256 << 10)
    auto = RepoConfig(params, zstd_level=3, adaptive_level=True)
    assert b'"compression": "auto"' in auto.to_json()
    assert RepoConfig.from_json(auto.to_json()).adaptive_level
    fixed = RepoConfig(params, zstd_level=3)
    assert b"compression" not in fixed.to_json()  # what configs written before auto hold
    assert not RepoConfig.from_json(fixed.to_json()).adaptive_level


def text(size: int, seed: int) -> bytes:
    rnd = random.Random(seed)
    words = [f"w{rnd.randrange(5000)}" for _ in range(4000)]
    out = bytearray()
    while len(out) < size:
        out += (" ".join(rnd.choices(words, k=12)) + f" {rnd.random()}\n").encode()
    return bytes(out[:size])


def test_a_busy_auto_backup_stores_level_1_chunks_under_the_same_tree(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A cgroup quota of 1% of a CPU makes every period busy, and a period of 0 decides at every
    # batch, so the auto backup drops to level 1 after its first batches.
    quota = tmp_path / "cpu.max"
    quota.write_text("1000 100000\n")
    monkeypatch.setattr(level, "CPU_MAX", quota)
    monkeypatch.setattr(level, "PERIOD", 0.0)
    data = text(24 << 20, seed=7)
    config = RepoConfig(ChunkerParams(16 << 10, 64 << 10, 256 << 10), zstd_level=3)
    master = MasterKey.generate()
    kdf = KdfParams(8 * 1024, 1, 1)
    fixed = Repository.init(MemoryBackend(), b"pw", config, kdf, master=master)
    auto_config = replace(config, adaptive_level=True)
    auto = Repository.init(MemoryBackend(), b"pw", auto_config, kdf, master=master)

    source = tmp_path / "text"
    source.write_bytes(data)
    with source.open("rb") as f:
        by_fixed = run_backup(fixed, f, "text", threads=2)
    with source.open("rb") as f:
        by_auto = run_backup(auto, f, "text", threads=2)

    assert by_auto.tree == by_fixed.tree  # same chunks, same ids: the level is not in them
    assert by_auto.stats["new_chunks"] == by_fixed.stats["new_chunks"]
    # Level 1 compresses text less than 3: the auto backup stored more bytes for the same chunks.
    assert by_auto.stats["stored_bytes"] > by_fixed.stats["stored_bytes"]
    out = tmp_path / "restored"
    run_restore(auto, by_auto, str(out))
    assert out.read_bytes() == data
