"""Resume: a backup SIGKILLed after a checkpoint, run again on the same source, starts at the
checkpoint: it reads only the rest and uploads nothing that was already stored, and its snapshot
is the one an uninterrupted backup makes (same tree root), restoring bit-exact."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mover.objects.checkpoint import INTERVAL_ENV, Checkpoints, identity_of
from mover.objects.repository import Repository
from mover.objects.tree import walk
from mover.storage.local import LocalBackend
from tests.integration.conftest import (
    MOVER,
    PASSWORD,
    MiB,
    assert_same_file,
    init_repo,
    mover,
    mover_env,
    ok,
    out_json,
    restore,
)
from tests.native.data import random_bytes

SIZE = 64 * MiB
INTERVAL = "2MiB"


@pytest.fixture(scope="module")
def volume(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """64 MiB of random data (every chunk new) with a zero run and a hole in it."""
    path = tmp_path_factory.mktemp("resume") / "volume.img"
    with open(path, "wb") as f:
        for i in range(SIZE // (4 * MiB)):
            if i == 5:
                f.write(bytes(4 * MiB))  # zeros written as data
            elif i == 9:
                f.seek(4 * MiB, os.SEEK_CUR)  # a hole
            else:
                f.write(random_bytes(4 * MiB, seed=100 + i))
        f.truncate(SIZE)
    path.chmod(0o444)
    return path


def backup_json(repo: Path, source: Path, *extra: str) -> tuple[dict[str, Any], str]:
    proc = mover("backup", "--repo", repo, source, "--json", *extra, env={INTERVAL_ENV: INTERVAL})
    result: dict[str, Any] = out_json(proc)
    return result, proc.stderr.decode(errors="replace")


def checkpoint_offsets(repo: Path) -> list[int]:
    folder = repo / "checkpoints"
    if not folder.is_dir():
        return []
    return [int(p.name.rsplit(".", 1)[1], 16) for p in folder.iterdir() if p.name[0] != "."]


class FinishedTooEarly(Exception):
    """The backup completed before it reached the planned kill point."""


def kill_after_checkpoint(repo: Path, source: Path, at: int, *extra: str) -> int:
    """Start a backup, SIGKILL it once a checkpoint at `at` bytes or further exists; the offset
    of the furthest checkpoint seen then."""
    with subprocess.Popen(
        [*MOVER, "backup", "--repo", str(repo), str(source), *extra],
        env=mover_env({INTERVAL_ENV: INTERVAL}),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    ) as proc:
        deadline = time.monotonic() + 300
        while proc.poll() is None and time.monotonic() < deadline:
            offsets = checkpoint_offsets(repo)
            if offsets and max(offsets) >= at:
                os.kill(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.001)
        rc = proc.wait()
    if rc != -signal.SIGKILL:
        raise FinishedTooEarly(f"the backup exited {rc} before a checkpoint at {at} bytes")
    return max(checkpoint_offsets(repo))


def interrupted(empty: Path, repo: Path, source: Path, ats: list[int], *extra: str) -> list[int]:
    """A copy of the empty repository at `repo` in which backups of source were killed after
    checkpoints at each of `ats` in turn; the offsets seen. A run that finishes before its kill
    point (a poller starved by other load) is retried from a fresh copy, twice at most."""
    for attempt in range(3):
        if repo.exists():
            shutil.rmtree(repo)
        shutil.copytree(empty, repo)
        try:
            return [kill_after_checkpoint(repo, source, at, *extra) for at in ats]
        except FinishedTooEarly:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def prefix_data_bytes(repo: Path, snapshot_id: str, end: int) -> int:
    """Bytes of non-hole chunks that start before `end` in a snapshot."""
    repository = Repository.open(LocalBackend(repo), PASSWORD.encode())
    root = bytes.fromhex(repository.find_snapshot(snapshot_id).tree)
    return sum(e.length for e in walk(repository.read_blob, root) if e.chunk_id and e.offset < end)


@pytest.fixture(scope="module")
def control(volume: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """An empty repository (to copy: same keys and chunker seed) and an uninterrupted backup of
    the volume in another copy of it."""
    base = tmp_path_factory.mktemp("control")
    empty = init_repo(base / "empty", "--pack-size", "1MiB")
    full = base / "full"
    shutil.copytree(empty, full)
    result, _ = backup_json(full, volume)
    assert result["stats"]["checkpoints"] >= 20
    assert not checkpoint_offsets(full), "a finished backup left a checkpoint"
    return empty, result | {"repo": full}


@pytest.mark.parametrize(
    ("at", "streams"),
    [(4 * MiB, 1), (24 * MiB, 1), (44 * MiB, 1), (52 * MiB, 1), (20 * MiB, 2), (50 * MiB, 2)],
)
def test_resume_after_sigkill(
    volume: Path,
    control: tuple[Path, dict[str, Any]],
    tmp_path: Path,
    at: int,
    streams: int,
) -> None:
    empty, full = control
    repo = tmp_path / "repo"
    (seen,) = interrupted(empty, repo, volume, [at], "--streams", str(streams))
    assert not (repo / "snapshots").exists() or not list((repo / "snapshots").iterdir())

    resumed, stderr = backup_json(repo, volume, "--streams", str(streams))
    stats = resumed["stats"]
    start = stats["resumed_from"]
    assert start >= seen >= at, stderr
    assert f"resuming {volume.resolve()} from byte {start}" in stderr
    # Read only what lies after the checkpoint (plus the few sample chunks that verify it).
    assert stats["bytes_read"] == SIZE - start
    assert stats["new_bytes"] + stats["reused_bytes"] + stats["zero_bytes"] == SIZE - start
    assert stats["resume_check_bytes"] <= 17 * MiB
    # Upload nothing that was stored before the checkpoint: every chunk here is unique, so
    # this run's new bytes are at most those after the checkpoint.
    before = prefix_data_bytes(full["repo"], full["id"], start)
    assert stats["new_bytes"] <= full["stats"]["new_bytes"] - before
    assert stats["stored_bytes"] < full["stats"]["stored_bytes"]
    # The same snapshot content as an uninterrupted backup, and no checkpoint left.
    assert resumed["tree"] == full["tree"] and resumed["size"] == SIZE
    assert not checkpoint_offsets(repo)
    out = tmp_path / "restored.img"
    restore(repo, resumed["id"], out)
    assert_same_file(volume, out)
    ok(mover("check", "--repo", repo, "--read-data"))


def test_resume_after_several_kills(
    volume: Path, control: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    """Killed three times, each run going on from the last one's checkpoint."""
    empty, full = control
    repo = tmp_path / "repo"
    seen = interrupted(empty, repo, volume, [10 * MiB, 30 * MiB, 50 * MiB])
    assert seen == sorted(seen)
    resumed, _ = backup_json(repo, volume)
    assert resumed["stats"]["resumed_from"] >= seen[-1]
    assert resumed["stats"]["bytes_read"] == SIZE - resumed["stats"]["resumed_from"]
    assert resumed["tree"] == full["tree"]
    ok(mover("check", "--repo", repo, "--read-data"))


def test_changed_source_ignores_the_checkpoint(
    volume: Path, control: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    empty, _ = control
    repo = tmp_path / "repo"
    source = tmp_path / "changing.img"
    shutil.copyfile(volume, source)
    interrupted(empty, repo, source, [20 * MiB])
    with open(source, "r+b") as f:  # one byte changed, before the checkpoint's offset
        f.seek(MiB)
        byte = f.read(1)
        f.seek(MiB)
        f.write(bytes([byte[0] ^ 1]))

    result, stderr = backup_json(repo, source)
    assert "ignoring checkpoint" in stderr and "the source changed" in stderr, stderr
    assert result["stats"]["resumed_from"] == 0
    assert result["stats"]["bytes_read"] == SIZE
    assert not checkpoint_offsets(repo)
    out = tmp_path / "restored.img"
    restore(repo, result["id"], out)
    assert_same_file(source, out)


def test_same_identity_other_bytes_ignores_the_checkpoint(
    volume: Path, control: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    """A block device has no modification time: the sample chunks are what tell a different
    volume at the same path. Here: the recorded identity, presented with other bytes."""
    empty, _ = control
    repo = tmp_path / "repo"
    (seen,) = interrupted(empty, repo, volume, [30 * MiB])
    other = tmp_path / "other.img"
    with open(volume, "rb") as f, open(other, "wb") as g:
        g.write(f.read())
    with open(other, "r+b") as g:
        g.seek(0)
        g.write(b"a different superblock")
    repository = Repository.open(LocalBackend(repo), PASSWORD.encode())
    notices: list[str] = []
    with open(volume, "rb") as f:
        identity = identity_of(f.fileno(), str(volume.resolve()))
    assert identity is not None
    with open(volume, "rb") as f:
        found = Checkpoints(repository, f.fileno(), identity, 1 << 21, notices.append).find()
    assert found is not None and found.offset == seen and notices == []
    with open(other, "rb") as g:
        found = Checkpoints(repository, g.fileno(), identity, 1 << 21, notices.append).find()
    assert found is None
    # One notice a checkpoint: a kill between writing one and deleting the previous leaves two.
    assert 1 <= len(notices) <= 2, notices
    assert all("bytes at 0 changed" in n for n in notices), notices


def test_prune_keeps_what_a_checkpoint_references(
    volume: Path, control: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    """A checkpoint is not a snapshot, but prune keeps what it references (once the killed
    backup's lock is stale, nothing else would): the next backup still resumes."""
    empty, full = control
    repo = tmp_path / "repo"
    interrupted(empty, repo, volume, [30 * MiB])
    time.sleep(1.1)
    stale = {"MOVER_LOCK_STALE_AFTER": "1"}
    ok(mover("prune", "--repo", repo, "--unindexed-grace", "0", env=stale))
    result, stderr = backup_json(repo, volume)
    assert result["stats"]["resumed_from"] > 0, stderr
    assert result["tree"] == full["tree"]
    out = tmp_path / "restored.img"
    restore(repo, result["id"], out)
    assert_same_file(volume, out)
    ok(mover("check", "--repo", repo, "--read-data"))


def test_checkpoint_past_its_age_is_dropped_by_prune(
    volume: Path, control: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    """Past the age limit prune drops the checkpoint and what only it kept; the next backup
    starts from 0 and is still exact."""
    empty, full = control
    repo = tmp_path / "repo"
    interrupted(empty, repo, volume, [30 * MiB])
    time.sleep(1.1)
    stale = {"MOVER_LOCK_STALE_AFTER": "1"}
    args = ("--unindexed-grace", "0", "--checkpoint-max-age", "0s", "--json")
    stats = out_json(mover("prune", "--repo", repo, *args, env=stale))
    assert stats["checkpoints_dropped"] >= 1
    result, stderr = backup_json(repo, volume)
    assert result["stats"]["resumed_from"] == 0, stderr
    assert result["tree"] == full["tree"]
    out = tmp_path / "restored.img"
    restore(repo, result["id"], out)
    assert_same_file(volume, out)
    ok(mover("check", "--repo", repo, "--read-data"))


def _loop_unavailable() -> str | None:
    if os.geteuid() != 0 or shutil.which("losetup") is None:
        return "needs root and losetup"
    if not Path("/dev/loop-control").exists():
        return "no /dev/loop-control"
    return None


@pytest.fixture
def loop_volume(volume: Path, tmp_path: Path) -> Iterator[Path]:
    """The volume behind a loop block device (no holes, no mtime: identity by rdev, size and
    sample chunks)."""
    reason = _loop_unavailable()
    if reason is not None:
        pytest.skip(reason)
    backing = tmp_path / "backing.img"
    shutil.copyfile(volume, backing)
    device = subprocess.run(
        ["losetup", "--find", "--show", str(backing)], check=True, capture_output=True, text=True
    ).stdout.strip()
    try:
        yield Path(device)
    finally:
        subprocess.run(["losetup", "--detach", device], check=False)


def test_block_device_streams_and_resume(
    loop_volume: Path, control: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    empty, full = control
    repo = tmp_path / "repo"
    (seen,) = interrupted(empty, repo, loop_volume, [30 * MiB], "--streams", "2")
    resumed, stderr = backup_json(repo, loop_volume, "--streams", "2")
    stats = resumed["stats"]
    assert stats["resumed_from"] >= seen, stderr
    assert stats["bytes_read"] == SIZE - stats["resumed_from"]
    assert resumed["tree"] == full["tree"]
    one, _ = backup_json(repo, loop_volume, "--checkpoint-every", "0")
    assert one["tree"] == full["tree"] and one["stats"]["bytes_read"] == SIZE
    out = tmp_path / "restored.img"
    restore(repo, resumed["id"], out)
    with open(loop_volume, "rb") as device, open(out, "rb") as restored:
        assert device.read() == restored.read()
    ok(mover("check", "--repo", repo, "--read-data"))
