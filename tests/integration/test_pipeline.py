"""The batched backup pipeline under pressure, and the restore's background flush.

Backup: tiny read buffers, batches and in-flight windows make buffers recycle constantly while
worker threads still hash views of them. Any view read after its buffer was reused would change
a chunk's id, so the snapshot's root must equal the one a roomy run gives, and the restore must
be bit-exact."""

from __future__ import annotations

import errno
import os
import random
import threading
from pathlib import Path

import pytest

from mover.chunking import ChunkerParams
from mover.crypto import KdfParams
from mover.errors import SourceError
from mover.objects.repository import RepoConfig, Repository
from mover.pipeline import backup as backup_module
from mover.pipeline import restore as restore_module
from mover.pipeline.backup import run_backup
from mover.pipeline.restore import run_restore
from mover.storage.local import LocalBackend
from tests.integration.conftest import PASSWORD, file_digest

KiB, MiB = 1 << 10, 1 << 20
PARAMS = ChunkerParams(8 * KiB, 32 * KiB, 128 * KiB)


def make_source(path: Path) -> None:
    """Random data, zero runs, repeated blocks (dedup inside one backup) and odd lengths."""
    rng = random.Random(5)
    block = rng.randbytes(300 * KiB)
    with open(path, "wb") as f:
        for i in range(40):
            kind = i % 4
            if kind == 0:
                f.write(rng.randbytes(rng.randrange(1, 700 * KiB)))
            elif kind == 1:
                f.write(bytes(rng.randrange(1, 500 * KiB)))
            elif kind == 2:
                f.write(block)
            else:
                f.write(rng.randbytes(rng.randrange(1, 64)) * rng.randrange(1, 4000))


def new_repo(path: Path, like: Repository | None = None) -> Repository:
    repo = Repository.init(
        LocalBackend(path), PASSWORD.encode(), RepoConfig(PARAMS), KdfParams(8192, 1, 1)
    )
    if like is not None:  # the same keys, so chunk ids and roots compare across repositories
        repo = Repository(repo.backend, like.master, like.config, repo.id)
    return repo


@pytest.mark.parametrize(
    ("read_size", "batch", "window"),
    [(5 * KiB + 3, 1, 1), (64 * KiB + 1, 40 * KiB, 100 * KiB), (1 * MiB, 3 * MiB, 2 * MiB)],
)
def test_recycled_buffers_never_change_a_chunk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, read_size: int, batch: int, window: int
) -> None:
    source = tmp_path / "source.img"
    make_source(source)
    roomy = new_repo(tmp_path / "roomy")
    with open(source, "rb", buffering=0) as f:
        reference = run_backup(roomy, f, "src", threads=2, checkpoint_interval=None)

    monkeypatch.setattr(backup_module, "READ_SIZE", read_size)
    monkeypatch.setattr(backup_module, "BATCH_BYTES", batch)
    monkeypatch.setattr(backup_module, "INFLIGHT_BYTES", window)
    tight = new_repo(tmp_path / "tight", like=roomy)
    with open(source, "rb", buffering=0) as f:
        got = run_backup(tight, f, "src", threads=4, checkpoint_interval=None)
    assert got.tree == reference.tree
    assert got.stats["new_chunks"] == reference.stats["new_chunks"]
    assert got.stats["reused_chunks"] == reference.stats["reused_chunks"] > 0
    target = tmp_path / "restored.img"
    run_restore(tight, got, str(target))
    assert file_digest(target) == file_digest(source)


def test_a_stream_source_through_recycled_buffers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pipe hands out short reads of any length: each one is a piece with its own lease."""
    source = tmp_path / "source.img"
    make_source(source)
    monkeypatch.setattr(backup_module, "READ_SIZE", 96 * KiB)
    monkeypatch.setattr(backup_module, "INFLIGHT_BYTES", 200 * KiB)
    repo = new_repo(tmp_path / "repo")
    r, w = os.pipe()

    def feed() -> None:
        with open(source, "rb") as src, os.fdopen(w, "wb") as out:
            while block := src.read(7 * KiB + 11):
                out.write(block)

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    with os.fdopen(r, "rb", buffering=0) as f:
        snapshot = run_backup(repo, f, "stdin", threads=3)
    writer.join(10)
    target = tmp_path / "restored.img"
    run_restore(repo, snapshot, str(target))
    assert file_digest(target) == file_digest(source)


def test_restore_flushes_in_the_background_and_reports_its_disk_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The restore flushes every FLUSH_EVERY bytes from another thread. A write error that
    only the flush sees (Linux reports it once: the final fsync may then pass) must still fail
    the restore, with the target named as incomplete."""
    source = tmp_path / "source.img"
    make_source(source)
    repo = new_repo(tmp_path / "repo")
    with open(source, "rb", buffering=0) as f:
        snapshot = run_backup(repo, f, "src", checkpoint_interval=None)
    monkeypatch.setattr(restore_module, "FLUSH_EVERY", 256 * KiB)
    flushed: list[int] = []
    real = os.fdatasync
    monkeypatch.setattr(restore_module.os, "fdatasync", lambda fd: flushed.append(fd) or real(fd))
    good = tmp_path / "good.img"
    run_restore(repo, snapshot, str(good))
    # The flusher ran while the restore went on (the restore's own last flush is os.fsync).
    # Not >= 2: wake-ups that come while a flush runs make one flush, so on a loaded machine
    # several FLUSH_EVERY steps may coalesce into a single one.
    assert len(flushed) >= 1
    assert file_digest(good) == file_digest(source)

    def failing(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(restore_module.os, "fdatasync", failing)
    bad = tmp_path / "bad.img"
    with pytest.raises(SourceError, match=r"cannot write restore target .*bad\.img.*incomplete"):
        run_restore(repo, snapshot, str(bad))
