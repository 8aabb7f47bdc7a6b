"""Packs streamed into a local repository (mover.objects.packwriter with Backend.open_stream):
the same bytes and names as packs built in memory, no pack under its name before it is whole,
nothing left behind by a failed backup, and a killed one's temp file for the leftovers cleanup.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import blake3
import pytest

from mover.chunking import ChunkerParams
from mover.content.pack import PackBuilder, StreamedPack, pack_name, read_pack_header
from mover.crypto import NONCE, KdfParams
from mover.errors import SourceError
from mover.maintenance.prune import prune
from mover.objects.repository import RepoConfig, Repository
from mover.pipeline import backup
from mover.pipeline.backup import run_backup
from mover.storage.base import Backend, Stream
from mover.storage.local import LocalBackend
from mover.storage.wrapper import PassingStream, Wrapper
from tests.integration.conftest import (
    MOVER,
    PASSWORD,
    FailingFile,
    MiB,
    init_repo,
    mover,
    mover_env,
    ok,
    write_image,
)
from tests.integration.test_many_writers import HeldBackup, assert_repository_sound, open_repo

SMALL = RepoConfig(ChunkerParams(16 << 10, 64 << 10, 256 << 10), pack_size=1 * MiB)


def fixed_nonces(monkeypatch: pytest.MonkeyPatch) -> None:
    """AEAD nonces all zero (never outside a test), so that two runs seal alike; every other
    random draw (temp file names, keys) stays random."""
    real = os.urandom
    monkeypatch.setattr(os, "urandom", lambda n: bytes(n) if n == NONCE else real(n))


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def assert_whole_packs(repo: Repository, root: Path) -> set[bytes]:
    """Every object under data/ is a whole pack: named by the BLAKE3 of its bytes, with a header
    that opens. Returns their ids."""
    stored = set()
    for path in (root / "data").rglob("*"):
        if path.is_file() and not path.name.startswith("."):
            assert blake3.blake3(path.read_bytes()).hexdigest() == path.name
            read_pack_header(repo.backend, repo.sealer, bytes.fromhex(path.name))
            stored.add(bytes.fromhex(path.name))
    return stored


def test_a_streamed_pack_is_the_pack_built_in_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = LocalBackend(tmp_path / "repo")
    repo = Repository.init(backend, b"pw", SMALL, KdfParams(8 << 10, 1, 1))
    fixed_nonces(monkeypatch)
    blobs = [(os.urandom(32), os.urandom(1000 + 7919 * i), i % 2) for i in range(40)]
    built: list[tuple[bytes, bytes]] = []
    for pack in (PackBuilder(bytearray(64 << 10)), PackBuilder()):
        for chunk_id, sealed, kind in blobs:
            pack.add(chunk_id, sealed, kind)
        pack_id, data = pack.finish(repo.sealer)
        built.append((pack_id, bytes(data)))
    stream = repo.open_pack_stream()
    assert stream is not None
    streamed = StreamedPack(stream)
    for chunk_id, sealed, kind in blobs:
        streamed.add(chunk_id, sealed, kind)
    pack_id = streamed.finish(repo.sealer)
    repo.commit_pack(pack_id, stream)
    stored = backend.read(pack_name(pack_id))
    assert built[0] == built[1] == (pack_id, stored)
    assert blake3.blake3(stored).digest() == pack_id
    assert read_pack_header(backend, repo.sealer, pack_id) == streamed.entries


def test_a_backup_streams_the_packs_a_buffered_backup_builds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same source into two copies of one repository: straight into the local directory
    (streamed) and through a wrapper that offers no stream (buffered). Same packs, same index."""
    source = write_image(tmp_path / "source.img", seed=5, size=6 * MiB)
    streamed, buffered = tmp_path / "streamed", tmp_path / "buffered"
    Repository.init(LocalBackend(streamed), PASSWORD.encode(), SMALL, KdfParams(8 << 10, 1, 1))
    shutil.copytree(streamed, buffered)
    fixed_nonces(monkeypatch)
    backends: list[Backend] = [LocalBackend(streamed), Wrapper(LocalBackend(buffered))]
    probe = backends[0].open_stream("data/")
    assert probe is not None
    probe.abort()
    assert backends[1].open_stream("data/") is None
    for backend in backends:
        repo = Repository.open(backend, PASSWORD.encode())
        with open(source, "rb", buffering=0) as f:
            stats = run_backup(repo, f, "src", threads=2, checkpoint_interval=None).stats
        assert stats["packs"] >= 3
    for part in ("data", "index"):
        assert files(streamed / part) == files(buffered / part)
    repo = Repository.open(LocalBackend(streamed), PASSWORD.encode())
    assert assert_whole_packs(repo, streamed) == repo.index.packs()
    assert LocalBackend(streamed).leftovers() == []
    ok(mover("check", "--repo", streamed, "--read-data"))


class Watched(Wrapper):
    """Passes streams through, as mover's own wrappers do, and records how each one ended."""

    def __init__(self, inner: Backend) -> None:
        super().__init__(inner)
        self.ended: list[str] = []

    def open_stream(self, prefix: str) -> Stream | None:
        stream = self.inner.open_stream(prefix)
        return None if stream is None else Ending(stream, self.ended)


class Ending(PassingStream):
    def __init__(self, inner: Stream, ended: list[str]) -> None:
        super().__init__(inner)
        self.ended = ended
        self.committed = False

    def commit(self, name: str) -> None:
        super().commit(name)
        self.committed = True
        self.ended.append("committed")

    def abort(self) -> None:
        super().abort()
        if not self.committed:
            self.ended.append("aborted")


def test_a_failed_backup_leaves_no_stream_and_indexes_only_stored_packs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A narrow window (2 MiB of chunks in flight), so that the packer is well into a pack when
    # the read fails, not waiting for the workers.
    monkeypatch.setattr(backup, "INFLIGHT_BYTES", 1 * MiB)
    monkeypatch.setattr(backup, "BATCH_BYTES", 256 << 10)
    source = write_image(tmp_path / "source.img", seed=6, size=16 * MiB)
    root = tmp_path / "repo"
    watched = Watched(LocalBackend(root))
    repo = Repository.init(watched, b"pw", SMALL, KdfParams(8 << 10, 1, 1))
    # Reads of 256 KiB failing at the 57th, after 14 MiB: packs stored, one filling.
    failing = FailingFile(source, fail_at=57, read_size=256 << 10)
    try:
        with pytest.raises(SourceError, match="Input/output error"):
            # A checkpoint at 8 MiB: an index file is written along the way.
            run_backup(repo, failing, "src", threads=2, checkpoint_interval=8 * MiB)  # type: ignore[arg-type]
    finally:
        failing.close()
    assert "committed" in watched.ended
    # The pack being filled when the read failed (the last one to end may be the commit of the
    # pack before it, on the upload thread).
    assert watched.ended.count("aborted") == 1
    assert LocalBackend(root).leftovers() == []
    reopened = Repository.open(LocalBackend(root), b"pw")
    indexed = reopened.index.packs()
    assert indexed, "no index was written before the failure"
    assert indexed <= assert_whole_packs(reopened, root)


def stream_files(root: Path, written: bool = True) -> list[Path]:
    """Temp files of packs being streamed; `written`: only those with bytes in them already."""
    return [p for p in (root / "data").glob(".stream-*") if not written or p.stat().st_size > 0]


def kill_while_streaming(repo: Path, source: Path) -> bool:
    """SIGKILLs a backup once a pack is half written; True when its temp file is left."""
    with subprocess.Popen(
        [*MOVER, "backup", "--repo", str(repo), str(source)],
        env=mover_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    ) as proc:
        deadline = time.monotonic() + 120
        while not stream_files(repo) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.001)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    return bool(stream_files(repo))


def test_a_killed_backup_leaves_its_stream_to_the_leftovers_cleanup(tmp_path: Path) -> None:
    source = write_image(tmp_path / "source.img", seed=7, size=64 * MiB)
    for attempt in range(5):  # the kill may fall just after a commit: then again
        repo = init_repo(tmp_path / f"repo-{attempt}", "--pack-size", "4MiB")
        if kill_while_streaming(repo, source):
            break
    else:
        pytest.fail("no kill in 5 fell while a pack was being written")
    opened = Repository.open(LocalBackend(repo), PASSWORD.encode())
    assert opened.index.packs() <= assert_whole_packs(opened, repo)
    assert LocalBackend(repo).leftovers() != []
    ok(mover("check", "--repo", repo))
    ok(mover("prune", "--repo", repo, "--unindexed-grace", "0"))
    assert LocalBackend(repo).leftovers() == []
    ok(mover("check", "--repo", repo))


def test_prune_spares_the_stream_of_a_live_backup(tmp_path: Path) -> None:
    """A pack's temp file may stay open longer than any grace (a slow source): prune, even with
    no grace at all, leaves it to its live writer (whose lock it sees), which then stores it."""
    root = tmp_path / "repo"
    Repository.init(LocalBackend(root), PASSWORD.encode(), SMALL, KdfParams(8 << 10, 1, 1))
    source = write_image(tmp_path / "source.img", seed=8, size=6 * MiB)
    held = HeldBackup(root, source, hold_at=3 * MiB, checkpoint_interval=None)
    deadline = time.monotonic() + 30
    while len(stream_files(root, written=False)) > 1 and time.monotonic() < deadline:
        time.sleep(0.01)  # the pack before it is being committed by the upload thread
    # The pack being filled when the backup was held (its blobs may still be gathered in
    # memory: StreamedPack writes WRITE_SIZE pieces).
    [stream] = stream_files(root, written=False)
    stats = prune(open_repo(root), unindexed_grace=0)
    assert stats.leftovers_deleted == 0 and stream.exists()
    snapshot = held.finish()
    assert LocalBackend(root).leftovers() == []
    assert_repository_sound(root, {snapshot.id: source}, tmp_path)
