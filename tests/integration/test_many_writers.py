"""Many writers at once, and prune beside them (two-phase garbage collection, locks).

Interleavings are driven through the real pipeline: a backup runs in a thread and is held at a
chosen point by its progress callback while prune runs on its own Repository object, as a
second process would. Every scenario ends with `check --read-data` and a bit-exact restore of
every snapshot, which is what fails if prune ever deletes a pack a snapshot needs.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mover.chunking import ChunkerParams
from mover.crypto import KdfParams
from mover.maintenance.check import run_check
from mover.maintenance.forget import forget
from mover.maintenance.prune import REPACK_BELOW, prune
from mover.objects.locks import Lock, list_locks
from mover.objects.repository import RepoConfig, Repository
from mover.objects.snapshot import Snapshot
from mover.pipeline import backup as backup_module
from mover.pipeline.backup import BackupStats, run_backup
from mover.pipeline.restore import run_restore
from mover.storage.local import LocalBackend
from tests.integration.conftest import (
    MOVER,
    PASSWORD,
    assert_one_error_line,
    file_digest,
    init_repo,
    mover,
    mover_env,
    ok,
    out_json,
)

MiB = 1 << 20
SMALL = RepoConfig(ChunkerParams(16 << 10, 64 << 10, 256 << 10), pack_size=256 << 10)


@pytest.fixture
def repo_dir(tmp_path: Path) -> Path:
    path = tmp_path / "repo"
    Repository.init(LocalBackend(path), PASSWORD.encode(), SMALL, KdfParams(8 * 1024, 1, 1))
    return path


def open_repo(path: Path) -> Repository:
    return Repository.open(LocalBackend(path), PASSWORD.encode())


def write_source(path: Path, size: int, seed: int) -> Path:
    path.write_bytes(random.Random(seed).randbytes(size))
    return path


def backup_file(
    path: Path, source: Path, progress: Callable[[BackupStats], None] | None = None
) -> Snapshot:
    repo = open_repo(path)
    try:
        with open(source, "rb") as f:
            return run_backup(repo, f, str(source), threads=2, progress=progress)
    finally:
        repo.close()


def assert_repository_sound(path: Path, sources: dict[str, Path], tmp_path: Path) -> None:
    """check --read-data is clean and every snapshot restores bit-exact."""
    repo = open_repo(path)
    report = run_check(repo, read_data=True)
    assert report.ok, report.errors
    snapshots = repo.snapshots()
    assert {s.id for s in snapshots} == set(sources)
    for snapshot in snapshots:
        target = tmp_path / f"restored-{snapshot.id[:8]}"
        run_restore(repo, snapshot, str(target), force=True)
        assert file_digest(target) == file_digest(sources[snapshot.id]), snapshot.id
        target.unlink()
    repo.close()


class HeldBackup:
    """A backup in a daemon thread, stopped by its progress callback once `hold_at` bytes went
    through it, until finish(); keyword arguments go to run_backup."""

    def __init__(self, repo_dir: Path, source: Path, hold_at: int, **kwargs: Any) -> None:
        self.reached = threading.Event()
        self.go_on = threading.Event()
        self.result: Snapshot | None = None
        self.error: BaseException | None = None

        def progress(stats: BackupStats) -> None:
            done = stats.new_bytes + stats.reused_bytes + stats.zero_bytes  # consumed, in order
            if done >= hold_at and not self.go_on.is_set():
                self.reached.set()
                self.go_on.wait(60)

        def run() -> None:
            repo = open_repo(repo_dir)
            try:
                with open(source, "rb") as f:
                    self.result = run_backup(
                        repo, f, str(source), threads=2, progress=progress, **kwargs
                    )
            except BaseException as exc:
                self.error = exc
            finally:
                repo.close()
                self.reached.set()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        assert self.reached.wait(60)
        assert self.error is None, self.error

    def finish(self) -> Snapshot:
        self.go_on.set()
        self.thread.join(60)
        assert not self.thread.is_alive()
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result


@pytest.mark.parametrize("hold_fraction", [0.0, 0.3, 0.7, 1.0])
def test_backup_that_dedups_against_condemned_packs_keeps_them(
    repo_dir: Path, tmp_path: Path, hold_fraction: float
) -> None:
    """A backup of data whose only snapshot was forgotten loads an index naming those packs;
    prune condemns them while the backup runs. The backup's snapshot must still restore."""
    size = 6 * MiB
    data = write_source(tmp_path / "a.img", size, 1)
    first = backup_file(repo_dir, data)
    forget(open_repo(repo_dir), [first.id])

    held = HeldBackup(repo_dir, data, int(size * hold_fraction))
    stats = prune(open_repo(repo_dir))
    # The running backup may hold the old index: nothing it may use is deleted yet.
    assert stats.packs_condemned > 0
    assert stats.packs_deleted == 0 and stats.packs_waiting == stats.packs_condemned
    again = prune(open_repo(repo_dir))  # a second prune meanwhile deletes nothing either
    assert again.packs_deleted == 0 and again.packs_waiting > 0
    second = held.finish()
    assert second.stats["reused_bytes"] == size  # all of it from the condemned packs
    # It restores at once: before its snapshot, the backup indexed again what it used.
    assert_repository_sound(repo_dir, {second.id: data}, tmp_path)

    after = prune(open_repo(repo_dir))
    assert after.packs_waiting == 0 and after.packs_deleted == 0
    assert_repository_sound(repo_dir, {second.id: data}, tmp_path)
    assert list(open_repo(repo_dir).backend.list("gc/")) == []


def test_prune_resurrects_packs_a_lockless_writer_used(repo_dir: Path, tmp_path: Path) -> None:
    """Defence in depth: a writer that took no lock (as an older mover would) and wrote its
    snapshot after the packs were condemned; phase 2 finds the snapshot and keeps them."""
    data = write_source(tmp_path / "a.img", 3 * MiB, 9)
    first = backup_file(repo_dir, data)
    forget(open_repo(repo_dir), [first.id])
    lockless = open_repo(repo_dir)
    lockless.index  # noqa: B018 -- read before prune, as a writer that started earlier would
    first_prune = prune(open_repo(repo_dir), grace=3600)  # condemns; phase 2 waits an hour
    condemned = first_prune.packs_condemned
    assert condemned > 0 and first_prune.packs_waiting == condemned
    with open(data, "rb") as f:
        second = run_backup.__wrapped__(lockless, f, str(data))  # type: ignore[attr-defined]
    assert second.stats["new_bytes"] == 0
    stats = prune(open_repo(repo_dir))
    assert stats.packs_resurrected == condemned and stats.packs_deleted == 0
    assert stats.index_files_written == 1
    assert_repository_sound(repo_dir, {second.id: data}, tmp_path)


def test_garbage_is_deleted_once_no_backup_could_use_it(repo_dir: Path, tmp_path: Path) -> None:
    old = write_source(tmp_path / "old.img", 4 * MiB, 2)
    new = write_source(tmp_path / "new.img", 4 * MiB, 3)
    gone = backup_file(repo_dir, old)
    kept = backup_file(repo_dir, new)
    forget(open_repo(repo_dir), [gone.id])
    # A backup that starts after the packs were condemned does not see them: it stores anew.
    held = HeldBackup(repo_dir, new, 2 * MiB)
    stats = prune(open_repo(repo_dir))
    assert stats.packs_condemned > 0 and stats.packs_waiting == stats.packs_condemned
    third = held.finish()
    stats = prune(open_repo(repo_dir))
    assert stats.packs_deleted > 0 and stats.packs_resurrected == 0
    assert stats.bytes_freed >= 4 * MiB * 0.9
    assert_repository_sound(repo_dir, {kept.id: new, third.id: new}, tmp_path)


def test_concurrent_writers_all_succeed_and_dedup(repo_dir: Path, tmp_path: Path) -> None:
    """Four processes back up at once (shared and private data); then a fifth finds it all."""
    shared = random.Random(7).randbytes(3 * MiB)
    sources = []
    for i in range(4):
        path = tmp_path / f"src{i}.img"
        path.write_bytes(shared + random.Random(100 + i).randbytes(MiB))
        sources.append(path)
    env = mover_env({"MOVER_PASSWORD": PASSWORD})
    procs = [
        subprocess.Popen(
            [*MOVER, "backup", "--repo", str(repo_dir), str(src), "--json"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for src in sources
    ]
    ids: dict[str, Path] = {}
    for proc, src in zip(procs, sources, strict=True):
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode()
        ids[json.loads(out)["id"]] = src
    assert len(list(open_repo(repo_dir).backend.list("index/"))) >= 4  # one writer, one file
    # Data indexed by any writer is not stored again.
    fifth = backup_file(repo_dir, sources[2])
    assert fifth.stats["new_bytes"] == 0
    ids[fifth.id] = sources[2]
    assert list_locks(open_repo(repo_dir)) == []  # every writer let go of its lock
    assert_repository_sound(repo_dir, ids, tmp_path)
    # Writers running at once cannot see each other's packs, so the shared part may have been
    # stored more than once (how often depends on the interleaving); prune drops the redundant
    # copies: afterwards each distinct byte is stored about once (a pack at least REPACK_BELOW
    # used is kept whole, dead copies and all), and nothing is lost.
    stats = prune(open_repo(repo_dir))
    assert stats.packs_deleted == stats.packs_condemned
    stored = sum(p.stat().st_size for p in (repo_dir / "data").rglob("*") if p.is_file())
    assert stored < (3 + 4) * MiB / REPACK_BELOW + 256 * 1024
    assert_repository_sound(repo_dir, ids, tmp_path)


def test_compaction_merges_many_small_index_files(repo_dir: Path, tmp_path: Path) -> None:
    ids = {}
    for i in range(11):
        src = write_source(tmp_path / f"s{i}.img", 200_000, 50 + i)
        ids[backup_file(repo_dir, src).id] = src
    assert len(list(open_repo(repo_dir).backend.list("index/"))) == 11
    stats = prune(open_repo(repo_dir))
    assert stats.index_files_deleted == 11 and stats.index_files_written == 1
    assert len(list(open_repo(repo_dir).backend.list("index/"))) == 1
    assert_repository_sound(repo_dir, ids, tmp_path)


def test_prunes_exclude_each_other(repo_dir: Path, tmp_path: Path) -> None:
    repo = open_repo(repo_dir)
    data = write_source(tmp_path / "a.img", MiB, 4)
    snap = backup_file(repo_dir, data)
    before = sorted(repo.backend.list(""))
    with Lock(repo, "exclusive"):
        line = assert_one_error_line(mover("prune", "--repo", repo_dir), exit_code=1)
    assert "another prune holds the repository" in line
    locks_left = [n for n in repo.backend.list("") if n.startswith("locks/")]
    assert locks_left == []
    assert sorted(repo.backend.list("")) == before
    assert_repository_sound(repo_dir, {snap.id: data}, tmp_path)


def test_killed_backup_leaves_a_lock_that_is_stale_at_once(tmp_path: Path) -> None:
    """Its holder ran on this host and is gone: prune does not wait for it, and
    --break-stale removes it, well before MOVER_LOCK_STALE_AFTER."""
    repo_dir = init_repo(tmp_path / "repo")
    old = write_source(tmp_path / "old.img", 2 * MiB, 5)
    gone = out_json(mover("backup", "--repo", repo_dir, old, "--json"))
    ok(mover("forget", "--repo", repo_dir, gone["id"]))
    big = tmp_path / "big.img"
    big.write_bytes(random.Random(6).randbytes(64 * MiB))
    proc = subprocess.Popen([*MOVER, "backup", "--repo", str(repo_dir), str(big)], env=mover_env())
    repo = open_repo(repo_dir)
    deadline = time.monotonic() + 60
    while not list_locks(repo) and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()

    [lock] = out_json(mover("locks", "--repo", repo_dir, "--json"))["locks"]
    assert lock["kind"] == "shared" and lock["stale"]
    assert lock["reason"] == f"holder process {proc.pid} on this host is gone"
    done = out_json(mover("prune", "--repo", repo_dir, "--json"))
    assert done["packs_deleted"] > 0 and done["packs_waiting"] == 0 and done["waiting_for"] == []
    broken = out_json(mover("locks", "--repo", repo_dir, "--break-stale", "--json"))
    assert len(broken["broken"]) == 1 and broken["locks"] == []
    assert out_json(mover("check", "--repo", repo_dir, "--read-data", "--json"))["ok"]


def test_writer_that_lost_its_lock_writes_no_snapshot(repo_dir: Path, tmp_path: Path) -> None:
    """A backup whose lock was broken (taken for dead) must not write a snapshot: a prune may
    have deleted what it deduplicated against."""
    data = write_source(tmp_path / "a.img", 2 * MiB, 8)
    held = HeldBackup(repo_dir, data, MiB)
    repo = open_repo(repo_dir)
    for lock in list_locks(repo):
        for name in list(repo.backend.list(f"{lock.name}/")):
            repo.backend.delete(name)
    with pytest.raises(Exception, match="lost the repository lock"):
        held.finish()
    assert list(repo.backend.list("snapshots/")) == []


def test_packs_of_a_running_backup_survive_prune_whatever_their_age(
    repo_dir: Path, tmp_path: Path
) -> None:
    """Packs a backup has uploaded but not yet indexed look like leftovers of a killed one;
    prune must leave them while their writer runs, even past the unindexed grace period
    (a slow writer indexes only every INDEX_FLUSH chunks)."""
    data = write_source(tmp_path / "a.img", 6 * MiB, 10)
    held = HeldBackup(repo_dir, data, 4 * MiB)
    packs = [p for p in (repo_dir / "data").rglob("*") if p.is_file()]
    assert packs  # uploaded, not yet indexed (the index is written at the end)
    assert not list((repo_dir / "index").glob("*"))
    stats = prune(open_repo(repo_dir), unindexed_grace=0)  # no grace: only the lock protects
    assert stats.unindexed_deleted == 0
    snapshot = held.finish()
    assert_repository_sound(repo_dir, {snapshot.id: data}, tmp_path)


def test_restore_running_during_prune_keeps_its_packs(repo_dir: Path, tmp_path: Path) -> None:
    old = write_source(tmp_path / "old.img", 4 * MiB, 11)
    gone = backup_file(repo_dir, old)
    reached, go_on = threading.Event(), threading.Event()
    errors: list[BaseException] = []
    target = tmp_path / "restored.img"

    def hold(stats: object) -> None:
        reached.set()
        go_on.wait(60)

    def run() -> None:
        repo = open_repo(repo_dir)
        try:
            run_restore(repo, repo.find_snapshot(gone.id), str(target), progress=hold)
        except BaseException as exc:
            errors.append(exc)
        finally:
            reached.set()

    thread = threading.Thread(target=run)
    thread.start()
    assert reached.wait(60)
    forget(open_repo(repo_dir), [gone.id])
    stats = prune(open_repo(repo_dir))  # the restore still reads the forgotten snapshot's packs
    assert stats.packs_condemned > 0 and stats.packs_deleted == 0
    go_on.set()
    thread.join(60)
    assert errors == []
    assert file_digest(target) == file_digest(old)
    assert prune(open_repo(repo_dir)).packs_deleted == stats.packs_condemned


@pytest.mark.parametrize("seed", range(1, 9))
def test_random_interleavings_of_writers_forget_and_prune(
    repo_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed: int
) -> None:
    """Backups held at random points (index files flushed every few chunks, so some have
    written part of their index), forgets and prunes in between, in a seeded random order;
    whatever the order, every snapshot left restores bit-exact and check is clean."""
    monkeypatch.setattr(backup_module, "INDEX_FLUSH", 8)
    rng = random.Random(seed)
    shared = rng.randbytes(MiB)
    sources = []
    for i in range(4):
        path = tmp_path / f"src{i}.img"
        path.write_bytes(shared[: rng.randrange(MiB)] + rng.randbytes(rng.randrange(1, 2 * MiB)))
        sources.append(path)
    snapshots: dict[str, Path] = {}
    for _ in range(6):
        running = []
        for _ in range(rng.randrange(1, 3)):
            source = rng.choice(sources)
            hold = rng.randrange(source.stat().st_size + 1)
            running.append((HeldBackup(repo_dir, source, hold), source))
        if snapshots and rng.random() < 0.6:
            gone = rng.choice(sorted(snapshots))
            forget(open_repo(repo_dir), [gone])
            del snapshots[gone]
        prune(open_repo(repo_dir))
        rng.shuffle(running)
        for held, source in running:
            snapshots[held.finish().id] = source
            # Sound at once, not only after a later prune.
            assert run_check(open_repo(repo_dir)).ok
            if rng.random() < 0.5:
                prune(open_repo(repo_dir))
                assert run_check(open_repo(repo_dir)).ok
    prune(open_repo(repo_dir))
    assert_repository_sound(repo_dir, snapshots, tmp_path)
    assert list(open_repo(repo_dir).backend.list("gc/")) == []  # nothing left waiting
