"""Races between backups, prune, locks and check, each driven to one bad interleaving.

Every scenario runs the real code on real local repositories. An interleaving is forced by
wrapping a real function with monkeypatch (the wrapper does something at that moment, then
calls the original) or by holding a backup in its progress callback. Most tests end with
`check --read-data` and a bit-exact restore of every snapshot; the others assert the outcome
the race must have (a writer taken for dead writes nothing, prune frees space, a retry resumes
from its checkpoint).
"""

from __future__ import annotations

import contextlib
import os
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mover.crypto import KdfParams
from mover.errors import RepositoryError, StorageError
from mover.maintenance import prune as maintenance
from mover.maintenance.check import run_check
from mover.maintenance.forget import forget
from mover.maintenance.prune import prune
from mover.objects.locks import Lock, list_locks, writer
from mover.objects.repository import Repository
from mover.objects.snapshot import Snapshot
from mover.pipeline.backup import BackupStats, run_backup
from mover.storage.local import LocalBackend
from tests.integration.conftest import PASSWORD
from tests.integration.test_many_writers import (
    SMALL,
    HeldBackup,
    assert_repository_sound,
    backup_file,
    open_repo,
    write_source,
)

MiB = 1 << 20


@pytest.fixture
def repo_dir(tmp_path: Path) -> Path:
    path = tmp_path / "repo"
    Repository.init(LocalBackend(path), PASSWORD.encode(), SMALL, KdfParams(8 * 1024, 1, 1))
    return path


def backup_with(repo: Repository, source: Path, **kwargs: Any) -> Snapshot:
    """run_backup on an open Repository (a writer that holds it, and its index, across calls)."""
    with open(source, "rb") as f:
        return run_backup(repo, f, str(source), threads=2, **kwargs)


def extended(path: Path, base: Path, extra: int, seed: int) -> Path:
    """base's bytes followed by `extra` new ones: a backup of it dedups against base's packs."""
    path.write_bytes(base.read_bytes() + random.Random(seed).randbytes(extra))
    return path


def forgotten_packs(repo_dir: Path, tmp_path: Path, size: int) -> tuple[Path, Snapshot, Path]:
    """A kept snapshot of a.img and a forgotten one of x.img: x's packs are garbage that prune
    condemns. Returns a.img, its snapshot, and x.img."""
    a = write_source(tmp_path / "a.img", 2 * MiB, 1)
    x = write_source(tmp_path / "x.img", size, 2)
    kept = backup_file(repo_dir, a)
    gone = backup_file(repo_dir, x)
    forget(open_repo(repo_dir), [gone.id])
    return a, kept, x


def stored_bytes(repo_dir: Path) -> int:
    return sum(p.stat().st_size for p in (repo_dir / "data").rglob("*") if p.is_file())


def test_backup_finishing_during_phase_2_keeps_its_old_unindexed_packs(
    repo_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A long backup's packs are older than the unindexed grace period and indexed only at its
    end. It finishes (index written, lock released) while prune is in phase 2: prune must see
    its new index file and not delete its packs as leftovers of a killed writer."""
    a = write_source(tmp_path / "a.img", MiB, 1)
    b = write_source(tmp_path / "b.img", 3 * MiB, 2)
    first = backup_file(repo_dir, a)
    held = HeldBackup(repo_dir, b, 3 * MiB, checkpoint_interval=0)
    two_hours_ago = time.time() - 7200  # the backup has been running that long
    for pack in (repo_dir / "data").rglob("*"):
        if pack.is_file():
            os.utime(pack, (two_hours_ago, two_hours_ago))
    finished: list[Snapshot] = []
    original = maintenance._delete_condemned

    def backup_ends_in_phase_2(*args: Any, **kwargs: Any) -> Any:
        finished.append(held.finish())
        return original(*args, **kwargs)

    monkeypatch.setattr(maintenance, "_delete_condemned", backup_ends_in_phase_2)
    try:
        stats = prune(open_repo(repo_dir))
    finally:
        held.go_on.set()  # should prune fail before phase 2
    assert stats.unindexed_deleted == 0
    [second] = finished
    assert_repository_sound(repo_dir, {first.id: a, second.id: b}, tmp_path)


def test_writer_whose_heartbeat_stalled_past_stale_after_writes_nothing(
    repo_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A backup's heartbeat request hangs longer than stale_after: a prune takes the writer for
    dead and deletes the condemned packs its index names. When the heartbeat lands at last,
    the writer must not dedup against those packs into a snapshot: it fails, writing none."""
    refresh, stale_after = 0.1, 1.0
    # Prune judges a lock by list_locks' stale_after: short here. W's lock beats every 0.1 s
    # (its parameters, from Lock's defaults, are short only while it is created); prune's
    # own lock keeps the long defaults, so that a slow heartbeat cannot stop prune.
    monkeypatch.setattr(list_locks, "__defaults__", (stale_after,))
    a, kept, x = forgotten_packs(repo_dir, tmp_path, 2 * MiB)
    x2 = extended(tmp_path / "x2.img", x, 100 << 10, 3)

    rw = open_repo(repo_dir)
    with contextlib.ExitStack() as held:
        with monkeypatch.context() as short:
            short.setattr(Lock.__init__, "__defaults__", (refresh, stale_after))
            lock = held.enter_context(writer(rw))  # backup W starts: its lock, then its index
        assert isinstance(lock, Lock) and lock.stale_after == stale_after
        rw.index  # noqa: B018
        first = prune(open_repo(repo_dir))
        assert first.packs_condemned > 0 and first.packs_waiting == first.packs_condemned

        stalled, land = threading.Event(), threading.Event()
        write = rw.backend.write

        def hung_heartbeat(name: str, data: bytes) -> None:
            if name.startswith(lock.name + "/") and not stalled.is_set():
                stalled.set()
                land.wait(60)  # one hung request (network trouble, S3 throttling)
            write(name, data)

        monkeypatch.setattr(rw.backend, "write", hung_heartbeat)
        try:
            assert stalled.wait(30)
            deadline = time.monotonic() + 30
            while not any(info.stale for info in list_locks(open_repo(repo_dir))):
                assert time.monotonic() < deadline
                time.sleep(0.05)
            second = prune(open_repo(repo_dir))  # W looks dead: its condemned packs go
            assert second.packs_deleted > 0
        finally:
            land.set()  # the heartbeat lands; W goes on and dedups against its index
        with pytest.raises(RepositoryError, match="taken for stale"):
            backup_with(rw, x2)
    rw.close()
    assert [s.id for s in open_repo(repo_dir).snapshots()] == [kept.id]
    assert_repository_sound(repo_dir, {kept.id: a}, tmp_path)


def test_retry_of_a_failed_writer_keeps_the_packs_it_reindexed(
    repo_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """W re-indexes condemned packs P, then fails to write its snapshot; its retry D dedups
    against P (W's index file names them); a prune meanwhile condemns P again, under a record
    that waits for D: P must not be deleted under the first, older record."""
    a, kept, x = forgotten_packs(repo_dir, tmp_path, 2 * MiB)
    x2 = extended(tmp_path / "x2.img", x, 100 << 10, 3)

    rw = open_repo(repo_dir)
    with pytest.raises(StorageError), writer(rw):
        rw.index  # noqa: B018 -- W read the index (naming x's packs)
        first = prune(open_repo(repo_dir))
        assert first.packs_condemned > 0 and first.packs_waiting == first.packs_condemned
        write = rw.backend.write

        def snapshot_put_fails(name: str, data: bytes) -> None:
            if name.startswith("snapshots/"):
                raise StorageError("PUT snapshots/...: connection reset")
            write(name, data)

        monkeypatch.setattr(rw.backend, "write", snapshot_put_fails)
        backup_with(rw, x2)  # re-indexes x's packs, then the snapshot PUT fails
    rw.close()

    rd = open_repo(repo_dir)
    with writer(rd):
        rd.index  # noqa: B018 -- D, W's retry, read the index (W's file names x's packs)
        prune(open_repo(repo_dir))
        retried = backup_with(rd, x2)
    rd.close()
    assert_repository_sound(repo_dir, {kept.id: a, retried.id: x2}, tmp_path)


def test_backup_finishing_while_prune_collects_live_chunks(
    repo_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A backup completes after prune read the index, while prune walks the snapshots (and a
    record of condemned packs is ready for phase 2): prune completes and deletes the garbage."""
    a, kept, _x = forgotten_packs(repo_dir, tmp_path, 2 * MiB)
    c = write_source(tmp_path / "c.img", 2 * MiB, 4)
    w = Lock(open_repo(repo_dir), "shared").acquire()  # a backup runs during the first prune
    first = prune(open_repo(repo_dir))
    assert first.packs_condemned > 0 and first.packs_waiting == first.packs_condemned
    w.release()

    finished: list[Snapshot] = []
    original = maintenance._keep_checkpoints

    def backup_ends_meanwhile(*args: Any, **kwargs: Any) -> Any:
        if not finished:
            finished.append(backup_file(repo_dir, c))
        return original(*args, **kwargs)

    monkeypatch.setattr(maintenance, "_keep_checkpoints", backup_ends_meanwhile)
    second = prune(open_repo(repo_dir))
    assert second.packs_deleted == first.packs_condemned
    assert_repository_sound(repo_dir, {kept.id: a, finished[0].id: c}, tmp_path)


def _first_call_runs(
    repo: Repository, monkeypatch: pytest.MonkeyPatch, action: Callable[[], Snapshot]
) -> list[Snapshot]:
    """Wraps repo.snapshots: its first call runs `action` (a backup ending at that moment)."""
    done: list[Snapshot] = []
    original = repo.snapshots

    def snapshots() -> list[Snapshot]:
        if not done:
            done.append(action())
        return original()

    monkeypatch.setattr(repo, "snapshots", snapshots)
    return done


def test_backup_finishing_while_prune_loads_the_index(
    repo_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A backup completes between prune's index load and its snapshot listing (the load of a
    large index takes minutes): prune must not call the repository damaged."""
    a = write_source(tmp_path / "a.img", MiB, 1)
    c = write_source(tmp_path / "c.img", MiB, 3)
    first = backup_file(repo_dir, a)
    pruning = open_repo(repo_dir)
    finished = _first_call_runs(pruning, monkeypatch, lambda: backup_file(repo_dir, c))
    prune(pruning)
    assert_repository_sound(repo_dir, {first.id: a, finished[0].id: c}, tmp_path)


def test_check_does_not_call_a_backup_finishing_meanwhile_damaged(
    repo_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A backup completes while check runs (between its index load and its snapshot listing,
    as during a long --read-data): its snapshot is not reported damaged."""
    a = write_source(tmp_path / "a.img", MiB, 1)
    c = write_source(tmp_path / "c.img", MiB, 3)
    first = backup_file(repo_dir, a)
    checking = open_repo(repo_dir)
    finished = _first_call_runs(checking, monkeypatch, lambda: backup_file(repo_dir, c))
    report = run_check(checking, read_data=True)
    assert report.ok, report.errors
    assert finished
    assert_repository_sound(repo_dir, {first.id: a, finished[0].id: c}, tmp_path)


def test_repacked_packs_are_deleted_despite_a_new_backup_of_the_same_data(
    repo_dir: Path, tmp_path: Path
) -> None:
    """Prune repacks half-dead packs; the next backup of the same source (between condemn and
    delete) shares chunks with them. Their live chunks were copied by the repack, so the next
    prune deletes the originals instead of resurrecting them: space is freed."""
    a = write_source(tmp_path / "a.img", 8 * MiB, 1)
    data = bytearray(a.read_bytes())
    rng = random.Random(5)
    for i in range(0, len(data), 512 << 10):  # 64 KiB changed in every 512 KiB
        data[i : i + (64 << 10)] = rng.randbytes(64 << 10)
    b = tmp_path / "b.img"
    b.write_bytes(bytes(data))
    gone = backup_file(repo_dir, a)
    kept = backup_file(repo_dir, b)
    forget(open_repo(repo_dir), [gone.id])
    before = stored_bytes(repo_dir)

    first = prune(open_repo(repo_dir), grace=3600)  # phase 2 waits (as for a running backup)
    assert first.packs_condemned > 0 and first.packs_written > 0
    again = backup_file(repo_dir, b)  # the next scheduled backup of b
    second = prune(open_repo(repo_dir), grace=0)
    assert second.packs_resurrected == 0
    assert second.packs_deleted == first.packs_condemned
    assert stored_bytes(repo_dir) < before
    assert_repository_sound(repo_dir, {kept.id: b, again.id: b}, tmp_path)


class Killed(Exception):
    pass


def test_checkpoint_of_a_killed_writer_keeps_the_condemned_packs_it_used(
    repo_dir: Path, tmp_path: Path
) -> None:
    """A checkpointed backup that deduplicated against condemned packs is killed; the next
    prune must keep what its checkpoint references, so that the retry resumes from it."""
    a, kept, x = forgotten_packs(repo_dir, tmp_path, 4 * MiB)
    x2 = extended(tmp_path / "x2.img", x, 4 * MiB, 3)

    def killed_after_two_checkpoints(stats: BackupStats) -> None:
        if stats.checkpoints >= 2:
            raise Killed

    rw = open_repo(repo_dir)
    with pytest.raises(Killed), writer(rw):
        rw.index  # noqa: B018
        first = prune(open_repo(repo_dir))
        assert first.packs_condemned > 0 and first.packs_waiting == first.packs_condemned
        backup_with(rw, x2, checkpoint_interval=MiB, progress=killed_after_two_checkpoints)
    rw.close()
    prune(open_repo(repo_dir))

    notes: list[str] = []
    retry = backup_with(open_repo(repo_dir), x2, checkpoint_interval=MiB, notify=notes.append)
    assert retry.stats["resumed_from"] > 0, notes
    assert_repository_sound(repo_dir, {kept.id: a, retry.id: x2}, tmp_path)
