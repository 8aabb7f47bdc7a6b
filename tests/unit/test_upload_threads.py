"""A writer runs as many pack uploads as its backend's capabilities say pay off, not by its type.

Backends here are real ones (MemoryBackend, LocalBackend, the composed stack) under a wrapper
that declares another number of connections: no code of mover's is replaced.
"""

from __future__ import annotations

import dataclasses
import random
import threading
from pathlib import Path

import pytest

from mover.chunking import ChunkerParams
from mover.crypto import KdfParams
from mover.objects.packwriter import MAX_UPLOADS, upload_threads
from mover.objects.repository import RepoConfig, Repository
from mover.pipeline.backup import run_backup
from mover.storage.base import Backend, Capabilities
from mover.storage.limiting import LimitingBackend
from mover.storage.local import LocalBackend
from mover.storage.memory import MemoryBackend
from mover.storage.stack import open_backend
from mover.storage.wrapper import Wrapper

PASSWORD = b"pw"
SMALL = RepoConfig(ChunkerParams(16 << 10, 64 << 10, 256 << 10), pack_size=256 << 10)
PACKS = "data/"


class Declared(Wrapper):
    """Says it has `connections` connections; passes every call through."""

    def __init__(self, inner: Backend, connections: int) -> None:
        super().__init__(inner)
        self.connections = connections

    @property
    def capabilities(self) -> Capabilities:
        return dataclasses.replace(self.inner.capabilities, connections=self.connections)


class Rendezvous(Wrapper):
    """The first `meet` pack writes wait until all of them are in flight at once (a barrier):
    fewer upload threads than `meet` break it. Records which threads wrote packs."""

    def __init__(self, inner: Backend, meet: int) -> None:
        super().__init__(inner)
        self.barrier = threading.Barrier(meet, timeout=30) if meet > 1 else None
        self.meet = meet
        self.writers: set[str] = set()
        self.packs = 0
        self._lock = threading.Lock()

    def write(self, name: str, data: bytes | memoryview) -> None:
        if name.startswith(PACKS):
            with self._lock:
                self.writers.add(threading.current_thread().name)
                self.packs += 1
                waits = self.barrier is not None and self.packs <= self.meet
            if waits:
                assert self.barrier is not None
                self.barrier.wait()
        self.inner.write(name, data)


def repo_on(backend: Backend) -> Repository:
    return Repository.init(backend, PASSWORD, SMALL, KdfParams(8 * 1024, 1, 1))


@pytest.mark.parametrize("connections", [1, 2, 3, MAX_UPLOADS, 40])
def test_upload_threads_follow_the_declared_connections(connections: int) -> None:
    repo = repo_on(Declared(MemoryBackend(), connections))
    assert upload_threads(repo) == min(connections, MAX_UPLOADS)


def test_upload_threads_of_real_backends(tmp_path: Path) -> None:
    # The counts before capabilities: one on a local disk, four on anything else.
    assert upload_threads(repo_on(LocalBackend(tmp_path / "raw"))) == 1
    assert upload_threads(repo_on(open_backend(str(tmp_path / "stacked")))) == 1
    assert upload_threads(repo_on(MemoryBackend())) == MAX_UPLOADS
    assert upload_threads(repo_on(open_backend("memory://upload-threads"))) == MAX_UPLOADS
    # A concurrency limit below that lowers it: uploads beyond it would only wait there.
    assert upload_threads(repo_on(LimitingBackend(MemoryBackend(), 2))) == 2


@pytest.mark.parametrize("connections", [1, 3])
def test_a_backup_runs_exactly_that_many_uploads(tmp_path: Path, connections: int) -> None:
    watched = Rendezvous(MemoryBackend(), meet=connections)
    repo = repo_on(Declared(watched, connections))
    source = tmp_path / "source.img"
    source.write_bytes(random.Random(connections).randbytes(4 << 20))  # ~16 packs of 256 KiB
    with open(source, "rb", buffering=0) as f:
        run_backup(repo, f, "src", threads=2, checkpoint_interval=None)
    assert watched.packs > connections
    # The barrier let the first `connections` packs through only when all were in flight at
    # once; no more threads than that ever wrote a pack.
    assert len(watched.writers) == connections
    assert all(name.startswith("mover-upload") for name in watched.writers)
