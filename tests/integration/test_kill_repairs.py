"""kill -9 during `repair index`, `repair data --from REPLICA`, `prune` and `replicate`, at
precise points, and a prune that deletes packs while four backups write.

Kill points are counted, not timed: tests/integration/killer.py runs the real function of a
verb on repositories opened through a storage wrapper that SIGKILLs its own process just before
(or just after) the N-th mutating call (write, delete), or the N-th reading call. A first run
without a kill counts the calls; then at least KILL_POINTS points spread over the whole run are
each tried on a fresh copy of a repository prepared once. After each kill:

- the killed holder's lock is seen dead at once (its process is gone), and re-running the verb
  through the real CLI succeeds at once, with MOVER_LOCK_STALE_AFTER at an hour;
- nothing was lost: `check --read-data`, right after the kill, finds no damaged snapshot beyond
  the damage the repair was run for (none for prune and replicate), and every snapshot is
  still there (for replicate, the source is byte for byte untouched);
- the re-run finished the job: `check --read-data` is clean (damage healed, no unindexed pack
  left), and at every RESTORE_EVERY-th point and the last, every snapshot restores bit-exact.

The same for `replicate --init-target` killed while it creates its target; and, without kills,
prunes that condemn and delete packs while four backups write.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from mover.crypto import KdfParams
from mover.maintenance.check import run_check
from mover.objects.locks import list_locks
from mover.objects.repository import Repository
from mover.pipeline.replicate import init_target
from mover.pipeline.restore import run_restore
from mover.storage.local import LocalBackend
from tests.integration.conftest import (
    MOVER,
    PASSWORD,
    MiB,
    assert_same_file,
    backup,
    init_repo,
    mover,
    mover_env,
    ok,
    out_json,
    pack_files,
    restore,
    tree_state,
)
from tests.integration.killer import KillPoint

ROOT = Path(__file__).resolve().parents[2]
KILL_POINTS = 30
RESTORE_EVERY = 5
WORKERS = 2  # kill points tried at once (each on its own copies)
SMALL_CHUNKS = ("--chunk-min", "16KiB", "--chunk-avg", "64KiB", "--chunk-max", "256KiB")
# Only a holder seen dead lets the next exclusive run in: an hour is never reached here.
NO_STALE_BY_AGE = {"MOVER_LOCK_STALE_AFTER": "3600"}


# Two Argon2id derivations at once in one process (cryptography 48, OpenSSL 4.0.3, lanes=4 as
# `mover init` writes) hang or fail with MemoryError: kill points run in two threads here.
_KDF = threading.Lock()


def open_repo(path: Path) -> Repository:
    with _KDF:
        return Repository.open(LocalBackend(path), PASSWORD.encode())


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def flip_byte(path: Path, at: int) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0x40
    path.chmod(0o600)
    path.write_bytes(bytes(data))


def damaged_snapshots(path: Path) -> set[str]:
    """The snapshots an in-process `check --read-data` finds damaged."""
    repo = open_repo(path)
    try:
        return set(run_check(repo, read_data=True).damaged_snapshots)
    finally:
        repo.close()


Ranges = list[tuple[int, int]]  # (offset, length)


def restorable(path: Path, images: dict[str, Path], where: Path) -> dict[str, Ranges]:
    """Every snapshot restored in process, going on past damage (restore --partial): the
    byte ranges it cannot restore, each snapshot; every other byte must equal its image."""
    repo = open_repo(path)
    bad: dict[str, Ranges] = {}
    try:
        for snapshot in repo.snapshots():
            out = where / f"partial-{snapshot.id[:8]}"
            stats = run_restore(repo, snapshot, str(out), force=True, partial=True)
            restored = bytearray(out.read_bytes())
            expected = images[snapshot.id].read_bytes()
            for r in stats.bad_ranges:
                restored[r.offset : r.offset + r.length] = expected[r.offset : r.offset + r.length]
            assert restored == expected, f"snapshot {snapshot.id[:8]} restores other bytes"
            out.unlink()
            bad[snapshot.id] = [(r.offset, r.length) for r in stats.bad_ranges]
    finally:
        repo.close()
    return bad


def covered(inner: Ranges, outer: Ranges) -> bool:
    """Whether every byte of `inner` is in `outer`."""
    runs: Ranges = []
    for offset, length in sorted(outer):
        if runs and offset <= runs[-1][0] + runs[-1][1]:
            start, n = runs[-1]
            runs[-1] = (start, max(n, offset + length - start))
        else:
            runs.append((offset, length))
    return all(any(o <= s and s + n <= o + m for o, m in runs) for s, n in inner)


# -- the repository every scenario starts from -----------------------------------------------


@dataclass
class Pristine:
    repo: Path  # three snapshots, pack size 1 MiB: ~20 packs; never written to by the tests
    replica: Path  # made by `mover replicate --init-target`
    images: dict[str, Path]  # snapshot id -> the image it restores to
    ids: dict[str, str]  # image name (a, b, c) -> snapshot id
    packs: dict[str, list[Path]]  # image name -> the packs its backup wrote
    index_files: dict[str, list[Path]]  # image name -> the index files its backup wrote


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Pristine:
    root = tmp_path_factory.mktemp("kill-repairs")
    a = random.Random(1).randbytes(8 * MiB)
    b = bytearray(a)  # a with 256 KiB changed in every MiB, and 1 MiB more: mostly shared
    rng = random.Random(2)
    for at in range(0, len(b), MiB):
        b[at : at + (256 << 10)] = rng.randbytes(256 << 10)
    b += rng.randbytes(MiB)
    c = random.Random(3).randbytes(6 * MiB)  # nothing in common with a and b
    repo = init_repo(root / "repo", "--pack-size", "1MiB", *SMALL_CHUNKS)
    images, ids, packs, index_files = {}, {}, {}, {}
    for name, data in (("a", a), ("b", b), ("c", c)):
        image = root / f"{name}.img"
        image.write_bytes(data)
        image.chmod(0o444)
        packs_before, index_before = pack_files(repo), set((repo / "index").glob("*"))
        snapshot_id = backup(repo, image)["id"]
        images[snapshot_id], ids[name] = image, snapshot_id
        packs[name] = sorted(pack_files(repo) - packs_before)
        index_files[name] = sorted(set((repo / "index").glob("*")) - index_before)
    replica = root / "replica"
    ok(mover("replicate", "--repo", repo, "--to", replica, "--init-target", "--kdf-memory", "8MiB"))
    assert len(pack_files(repo)) >= 15 and len(packs["c"]) >= 4
    return Pristine(repo, replica, images, ids, packs, index_files)


# -- scenarios --------------------------------------------------------------------------------


@dataclass
class Scenario:
    verb: str
    repo: Path  # copied for every kill point (replicate: the source, shared and never copied)
    other: Path | None  # the replica (repair data) or the target (replicate), copied too
    expected: dict[str, Path]  # snapshots of the checked repository after the re-run -> image
    rerun: Callable[[Path, Path | None], list[str | os.PathLike[str]]]  # CLI arguments
    damaged: set[str] = field(default_factory=set)  # snapshots damaged before the run
    images: dict[str, Path] = field(default_factory=dict)  # every snapshot id -> its image
    bad: dict[str, Ranges] = field(default_factory=dict)  # what could not be restored before

    def checked(self, repo: Path, other: Path | None) -> Path:
        """replicate writes (and so is checked) on its target, the other verbs on --repo."""
        return other if self.verb == "replicate" and other is not None else repo


def scenario(verb: str, pristine: Pristine, root: Path) -> Scenario:
    scn = _scenario(verb, pristine, root)
    scn.images = pristine.images
    checked = scn.checked(scn.repo, scn.other)
    assert damaged_snapshots(checked) == scn.damaged  # the damage meant, and only that
    scn.bad = restorable(checked, scn.images, root)
    assert {i for i, ranges in scn.bad.items() if ranges} == scn.damaged
    return scn


def _scenario(verb: str, pristine: Pristine, root: Path) -> Scenario:
    repo = root / "template"
    shutil.copytree(pristine.repo, repo)
    everything = dict(pristine.images)
    c = pristine.ids["c"]
    if verb == "repair-index":
        # c's index file damaged: what `repair index` is run for. a and b must never suffer.
        [c_index] = pristine.index_files["c"]
        flip_byte(repo / c_index.relative_to(pristine.repo), 100)
        return Scenario(verb, repo, None, everything, rerun_repair_index, {c})
    if verb == "repair-data":
        # Two of c's packs: one byte flipped in one (its other blobs are good), one deleted.
        flipped, deleted = (repo / p.relative_to(pristine.repo) for p in pristine.packs["c"][:2])
        flip_byte(flipped, flipped.stat().st_size // 2)
        deleted.unlink()
        return Scenario(verb, repo, pristine.replica, everything, rerun_repair_data, {c})
    if verb == "prune":
        # a forgotten: its packs are 3/4 live (b shares them), so all are repacked and condemned.
        ok(mover("forget", "--repo", repo, pristine.ids["a"]))
        kept = {i: image for i, image in everything.items() if i != pristine.ids["a"]}
        return Scenario(verb, repo, None, kept, rerun_prune)
    if verb == "replicate":
        target = root / "target-template"  # an empty replica: all three snapshots to copy
        init_target(open_repo(repo), LocalBackend(target), PASSWORD.encode(), KdfParams(8192))
        return Scenario(verb, repo, target, everything, rerun_replicate)
    raise ValueError(verb)


def rerun_repair_index(repo: Path, _other: Path | None) -> list[str | os.PathLike[str]]:
    return ["repair", "index", "--repo", repo]


def rerun_repair_data(repo: Path, replica: Path | None) -> list[str | os.PathLike[str]]:
    assert replica is not None
    return ["repair", "data", "--repo", repo, "--from", replica]


def rerun_prune(repo: Path, _other: Path | None) -> list[str | os.PathLike[str]]:
    return ["prune", "--repo", repo, "--repack-below", "100", "--unindexed-grace", "0"]


def rerun_replicate(source: Path, target: Path | None) -> list[str | os.PathLike[str]]:
    assert target is not None
    return ["replicate", "--repo", source, "--to", target]


# -- kill points ------------------------------------------------------------------------------


def killer(scn: Scenario, repo: Path, other: Path | None, kill: KillPoint | None) -> list[str]:
    args = [sys.executable, "-m", "tests.integration.killer", scn.verb, "--repo", str(repo)]
    if other is not None:
        args += ["--other", str(other)]
    return [*args, "--kill", str(kill)] if kill is not None else args


def spread(total: int, k: int) -> list[int]:
    """k distinct numbers from 1 to total (total >= k), evenly spread, both ends included."""
    if k == 1:
        return [total]
    return sorted({1 + round(i * (total - 1) / (k - 1)) for i in range(k)})


def kill_points(writes: int, reads: int, want: int = KILL_POINTS) -> list[KillPoint]:
    """`want` points over the mutating calls, before and after in turn; if there are fewer
    mutating calls than that, every one of them, and the rest over the reading calls."""
    chosen = [("write", n) for n in spread(writes, min(want, writes))]
    if len(chosen) < want:
        chosen += [("read", n) for n in spread(reads, want - len(chosen))]
    return [
        KillPoint(kind, n, "before" if i % 2 else "after") for i, (kind, n) in enumerate(chosen)
    ]


@contextmanager
def copies(scn: Scenario, where: Path) -> Iterator[tuple[Path, Path | None]]:
    """Fresh copies of the scenario's repositories (replicate's source is shared: it must not
    change) for one run, removed afterwards."""
    where.mkdir()
    repo = scn.repo if scn.verb == "replicate" else shutil.copytree(scn.repo, where / "repo")
    other = shutil.copytree(scn.other, where / "other") if scn.other is not None else None
    try:
        yield Path(repo), other
    finally:
        shutil.rmtree(where)


def count_calls(scn: Scenario, where: Path) -> dict[str, int]:
    """The calls of an uninterrupted run (which must leave a sound repository)."""
    with copies(scn, where) as (repo, other):
        proc = subprocess.run(
            killer(scn, repo, other, None), cwd=ROOT, env=mover_env(), capture_output=True
        )
        assert proc.returncode == 0, proc.stderr.decode(errors="replace")
        counts: dict[str, int] = json.loads(proc.stdout)
        assert damaged_snapshots(scn.checked(repo, other)) == set()
    return counts


def assert_locks_of_dead_holder(path: Path, pid: int) -> None:
    for lock in list_locks(open_repo(path), stale_after=3600):
        assert lock.stale and lock.reason == f"holder process {pid} on this host is gone", lock


def kill_at(
    scn: Scenario, point: KillPoint, where: Path, restores: bool, source: dict[str, str] | None
) -> None:
    with copies(scn, where) as (repo, other):
        checked = scn.checked(repo, other)
        with subprocess.Popen(
            killer(scn, repo, other, point),
            cwd=ROOT,
            env=mover_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        ) as proc:
            _out, err = proc.communicate(timeout=120)
        assert proc.returncode == -signal.SIGKILL, (
            f"not killed: exited {proc.returncode}: {err.decode(errors='replace')}"
        )

        # Nothing lost by the kill itself, before anything else runs: no new damage, and every
        # byte that could be restored before restores bit-exact.
        if scn.verb == "replicate":
            assert tree_state(repo) == source, "replicate changed its source"
        damaged = damaged_snapshots(checked)
        assert damaged <= scn.damaged, f"snapshots damaged by the kill: {damaged - scn.damaged}"
        bad = restorable(checked, scn.images, where)
        if scn.verb == "replicate":
            assert set(bad) <= set(scn.expected)
        else:
            assert set(bad) == set(scn.expected), "snapshots lost"
        for snapshot_id, ranges in bad.items():
            lost = scn.bad.get(snapshot_id, [])
            assert covered(ranges, lost), f"{snapshot_id[:8]} lost bytes: {ranges} (was {lost})"

        # The killed holder is dead at once; the same verb runs again at once and finishes.
        for path in (repo, other) if scn.verb == "repair-data" else (checked,):
            assert path is not None
            assert_locks_of_dead_holder(path, proc.pid)
        rerun = ok(mover(*scn.rerun(repo, other), "--json", env=NO_STALE_BY_AGE))
        if scn.verb == "repair-data":
            assert json.loads(rerun.stdout)["unhealed"] == []
        report = out_json(mover("check", "--repo", checked, "--read-data", "--json"))
        assert report["snapshots"] == len(scn.expected)
        if scn.verb == "replicate":
            names = LocalBackend(checked).list("snapshots/")  # not temp files of killed writes
            assert {n.removeprefix("snapshots/") for n in names} == set(scn.expected)
        else:  # repairs and prune leave no pack unindexed, prune no record and no temp file
            assert report["unindexed_packs"] == 0, report
        if scn.verb == "prune":
            assert report["temp_files"] == 0 and not any((repo / "gc").iterdir())
        if restores:
            for snapshot_id, image in scn.expected.items():
                out = where / f"{snapshot_id[:8]}.out"
                restore(checked, snapshot_id, out)
                assert_same_file(image, out)
                out.unlink()


@pytest.mark.slow  # 15-25 s each on two cores
@pytest.mark.parametrize("verb", ["repair-index", "repair-data", "prune", "replicate"])
def test_kill_at_every_point_loses_nothing_and_rerun_finishes(
    pristine: Pristine, tmp_path: Path, verb: str
) -> None:
    scn = scenario(verb, pristine, tmp_path)
    source = tree_state(scn.repo) if verb == "replicate" else None

    counts = count_calls(scn, tmp_path / "count")
    points = kill_points(counts["write"], counts["read"])
    assert len(points) >= KILL_POINTS

    def attempt(numbered: tuple[int, KillPoint]) -> str | None:
        i, point = numbered
        restores = i % RESTORE_EVERY == RESTORE_EVERY - 1 or i == len(points) - 1
        try:
            kill_at(scn, point, tmp_path / f"point-{i:02d}", restores, source)
        except Exception as exc:
            return f"kill at {point}: {type(exc).__name__}: {exc}"
        return None

    with ThreadPoolExecutor(WORKERS) as pool:
        failures = [f for f in pool.map(attempt, enumerate(points)) if f is not None]
    print(f"\n{verb}: {counts} calls, {len(points)} kill points ({points[0]} .. {points[-1]})")
    assert not failures, f"{len(failures)} of {len(points)} kill points failed:\n" + "\n".join(
        failures
    )


@pytest.mark.parametrize(
    "point",
    [
        "write:1:before",
        "write:1:after",  # a key file and no config: the next --init-target replaces it
        "write:2:before",
        "write:2:after",
    ],
)
def test_kill_while_replicate_creates_its_target(
    pristine: Pristine, tmp_path: Path, point: str
) -> None:
    """`replicate --init-target` killed while it creates the target (key file, then config):
    the same command run again creates it (or takes it as it is) and copies everything."""
    target = tmp_path / "target"
    args = [sys.executable, "-m", "tests.integration.killer", "replicate-init"]
    args += ["--repo", str(pristine.repo), "--other", str(target), "--kill", point]
    proc = subprocess.run(args, cwd=ROOT, env=mover_env(), capture_output=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode(errors="replace")
    again = ["replicate", "--repo", str(pristine.repo), "--to", str(target), "--init-target"]
    ok(mover(*again, "--kdf-memory", "8MiB", env=NO_STALE_BY_AGE))
    report = out_json(mover("check", "--repo", target, "--read-data", "--json"))
    assert report["snapshots"] == len(pristine.images)
    for snapshot_id, image in pristine.images.items():
        out = tmp_path / f"{snapshot_id[:8]}.out"
        restore(target, snapshot_id, out)
        assert_same_file(image, out)


# -- prune beside four writers ----------------------------------------------------------------


class FedBackup:
    """`mover backup -` of an image fed through its stdin: it cannot end before it is given the
    last byte, so a prune run in between runs beside it, whatever the timing. Once a MiB has
    gone in, the backup holds its lock and has read the index (both come before it reads its
    source)."""

    def __init__(self, repo: Path, image: bytes, log: Path) -> None:
        self.image = image
        self.fed = 0
        self.log = log
        with open(log, "wb") as err:
            self.proc = subprocess.Popen(
                # Two threads: the same bytes in flight (mover.pipeline.backup's window: two
                # batches a worker, at least INFLIGHT_BYTES) on any machine.
                [*MOVER, "backup", "--repo", str(repo), "-", "--threads", "2", "--json"],
                env=mover_env(),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
            )

    def feed_to(self, end: int) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(self.image[self.fed : end])
        self.proc.stdin.flush()
        self.fed = max(self.fed, end)

    def finish(self) -> str:
        self.feed_to(len(self.image))
        out, _ = self.proc.communicate(timeout=120)
        assert self.proc.returncode == 0, self.log.read_text()
        snapshot_id: str = json.loads(out)["id"]
        return snapshot_id


def prune_now(repo: Path) -> dict[str, Any]:
    result: dict[str, Any] = out_json(mover(*rerun_prune(repo, None), "--json"))
    assert_sound(repo)
    return result


def assert_sound(repo: Path) -> None:
    """Every snapshot there is restores now (its tree reads, every chunk indexed and stored),
    not only after a later prune: an in-process `check`."""
    report = run_check(open_repo(repo))
    assert report.ok, report.errors


def finish(writer: FedBackup, repo: Path) -> str:
    snapshot_id = writer.finish()
    assert_sound(repo)
    return snapshot_id


def wait_for_packs(repo: Path, count: int) -> None:
    """Until `count` packs are stored (backups upload theirs once 16 MiB are in flight)."""
    deadline = time.monotonic() + 120
    while len(pack_files(repo)) < count:
        assert time.monotonic() < deadline, f"{len(pack_files(repo))} packs, waited for {count}"
        time.sleep(0.02)


@pytest.mark.slow  # several seconds: runs in CI (CI=true) and with -m slow
def test_prune_deletes_condemned_packs_while_four_backups_write(tmp_path: Path) -> None:
    """Backups of old data whose snapshots were forgotten (so they dedup against packs prune
    condemns) and of data they share, prunes with no grace at all while they write: every
    snapshot restores bit-exact, and the garbage goes once no backup could use it."""
    repo = init_repo(tmp_path / "repo", "--pack-size", "256KiB", *SMALL_CHUNKS)
    rng = random.Random(10)
    images: dict[str, bytes] = {}
    keep = rng.randbytes(2 * MiB)
    images[backup(repo, write(tmp_path / "keep.img", keep))["id"]] = keep
    olds = [rng.randbytes(3 * MiB) for _ in range(4)]
    gone = [backup(repo, write(tmp_path / f"old{i}.img", old))["id"] for i, old in enumerate(olds)]
    ok(mover("forget", "--repo", repo, *gone))
    shared = rng.randbytes(MiB)  # stored by several writers at once: duplicates to repack
    new = [old[: 2 * MiB] + shared + rng.randbytes(27 * MiB) for old in olds]
    writers: list[FedBackup] = []
    try:
        images.update(prunes_beside_writers(repo, new, tmp_path, writers))
    finally:
        for w in writers:  # stopped if the test failed half way
            if w.proc.poll() is None:
                w.proc.kill()
                w.proc.communicate()

    last = prune_now(repo)  # no writer left: everything condemned goes
    assert last["packs_deleted"] > 0 and last["packs_waiting"] == 0
    assert not any((repo / "gc").iterdir())
    report = out_json(mover("check", "--repo", repo, "--read-data", "--json"))
    assert report["ok"] and report["snapshots"] == 4 and report["unindexed_packs"] == 0
    assert {s.id for s in open_repo(repo).snapshots()} == set(images)
    for snapshot_id, data in images.items():
        out = tmp_path / f"{snapshot_id[:8]}.out"
        restore(repo, snapshot_id, out)
        assert out.read_bytes() == data, f"snapshot {snapshot_id[:8]} restores other bytes"
        out.unlink()


def prunes_beside_writers(
    repo: Path, new: list[bytes], logs: Path, writers: list[FedBackup]
) -> dict[str, bytes]:
    """Four backups of `new`, five prunes among them; returns the snapshots kept -> data."""
    # Two writers start (they load the index naming the forgotten data's packs); the first
    # prune condemns those packs and must wait for both writers before deleting any.
    writers += [FedBackup(repo, new[i], logs / f"backup-{i}.log") for i in range(2)]
    for w in writers:
        w.feed_to(MiB)
    first = prune_now(repo)
    assert first["packs_condemned"] > 0 and first["packs_deleted"] == 0
    assert first["packs_waiting"] == first["packs_condemned"]
    # Two more start, which do not see the condemned packs. All four upload packs that no
    # index names yet: older than --unindexed-grace 0, only their writers' live locks keep
    # them from the prunes beside them.
    writers += [FedBackup(repo, new[i], logs / f"backup-{i}.log") for i in (2, 3)]
    stored = len(pack_files(repo))
    for w in writers:
        w.feed_to(26 * MiB)
    wait_for_packs(repo, stored + 32)
    prunes = [first, prune_now(repo)]
    forgotten = finish(writers[0], repo)
    prunes.append(prune_now(repo))
    snapshots = {finish(writers[1], repo): new[1]}
    # The first record waits for no one now: the packs no writer used again go while two
    # writers still write; the first new snapshot is forgotten, and its packs condemned.
    ok(mover("forget", "--repo", repo, forgotten))
    during = prune_now(repo)
    assert during["packs_deleted"] > 0 and during["packs_condemned"] > 0
    assert during["packs_waiting"] > 0  # the new record waits for the two writers left
    prunes.append(during)
    for w in writers[2:]:
        w.feed_to(28 * MiB)
    prunes.append(prune_now(repo))
    for i in (2, 3):
        snapshots[finish(writers[i], repo)] = new[i]
    assert all(p["unindexed_deleted"] == 0 for p in prunes), prunes
    return snapshots
