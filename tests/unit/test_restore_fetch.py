"""Fetching a restore's batches (mover.pipeline.fetch) on a real local repository: the chunks of
a snapshot come back bit-exact, one storage read per run of blobs adjacent in a pack (not one a
chunk); a damaged blob fails with its chunk named; a recycled buffer never leaks old bytes into
a restore; and restores through small buffers and many batches are bit-exact."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from mover.chunking import ChunkerParams
from mover.crypto import KdfParams
from mover.errors import IntegrityError
from mover.objects.repository import RepoConfig, Repository
from mover.objects.snapshot import Snapshot
from mover.objects.tree import Extent, walk
from mover.pipeline.backup import run_backup
from mover.pipeline.fetch import Buffers, read_chunks
from mover.pipeline.restore import run_restore
from mover.storage.local import LocalBackend
from mover.storage.metrics import Metrics, MetricsBackend

KiB, MiB = 1 << 10, 1 << 20
PARAMS = ChunkerParams(4 * KiB, 16 * KiB, 64 * KiB)


def source_bytes() -> bytes:
    """Random data, a hole, compressible text: raw and zstd blobs, several 2 MiB batches."""
    rng = random.Random(5)
    text = b"".join(b"entry %d of a journal, much alike\n" % i for i in range(40_000))
    return rng.randbytes(2 * MiB + 999) + bytes(300 * KiB) + text[: 1 * MiB] + rng.randbytes(7)


class Volume:
    def __init__(self, root: Path) -> None:
        self.data = source_bytes()
        self.source = root / "source.img"
        self.source.write_bytes(self.data)
        self.metrics = Metrics()
        backend = MetricsBackend(LocalBackend(root / "repo"), self.metrics)
        self.repo = Repository.init(backend, b"fetch", RepoConfig(PARAMS), KdfParams(8192, 1, 1))
        with open(self.source, "rb") as f:
            self.snapshot = run_backup(self.repo, f, "source.img", checkpoint_interval=None)

    def chunks(self, snapshot: Snapshot | None = None) -> list[Extent]:
        tree = (snapshot or self.snapshot).tree
        return [e for e in walk(self.repo.read_blob, bytes.fromhex(tree)) if e.chunk_id]

    def reads(self) -> int:
        return self.metrics.get("read", "requests")


@pytest.fixture
def volume(tmp_path: Path) -> Volume:
    return Volume(tmp_path)


def runs(repo: Repository, extents: list[Extent]) -> int:
    """How many runs of blobs adjacent in one pack `extents` make, from the index."""
    count, end = 0, None
    for extent in extents:
        assert extent.chunk_id is not None
        location = repo.index.get(extent.chunk_id)
        assert location is not None
        if end != (location.pack_id, location.offset):
            count += 1
        end = (location.pack_id, location.offset + location.length)
    return count


def test_one_read_per_run_of_adjacent_blobs(volume: Volume) -> None:
    extents = volume.chunks()
    # A backup packs new chunks in order: far fewer runs than chunks (else this tests nothing).
    assert runs(volume.repo, extents) < len(extents) // 10
    out = bytearray(sum(e.length for e in extents))
    before = volume.reads()
    read_chunks(volume.repo, extents, memoryview(out))
    assert volume.reads() - before == runs(volume.repo, extents)
    assert out == b"".join(volume.data[e.offset : e.offset + e.length] for e in extents)


def test_a_batch_across_packs_and_out_of_order(volume: Volume) -> None:
    """Chunks of a batch need not lie together: each run is read where it is."""
    extents = volume.chunks()
    shuffled = random.Random(3).sample(extents, len(extents))
    out = bytearray(sum(e.length for e in shuffled))
    read_chunks(volume.repo, shuffled, memoryview(out))
    assert out == b"".join(volume.data[e.offset : e.offset + e.length] for e in shuffled)


def test_a_damaged_blob_is_named(volume: Volume, tmp_path: Path) -> None:
    extents = volume.chunks()
    victim = extents[len(extents) // 2]
    assert victim.chunk_id is not None
    location = volume.repo.index.get(victim.chunk_id)
    assert location is not None
    (pack,) = (tmp_path / "repo" / "data").glob(f"*/{location.pack_id.hex()}")
    with open(pack, "r+b") as f:
        f.seek(location.offset + location.length // 2)
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 1]))
    out = bytearray(sum(e.length for e in extents))
    with pytest.raises(IntegrityError, match=victim.chunk_id.hex()[:16]):
        read_chunks(volume.repo, extents, memoryview(out))


def test_a_chunk_of_another_length_than_the_tree_says(volume: Volume) -> None:
    extent = volume.chunks()[0]
    assert extent.chunk_id is not None
    for wrong in (extent.length - 1, extent.length + 1):
        with pytest.raises(IntegrityError, match="bytes long its tree says"):
            liar = Extent(extent.offset, wrong, extent.chunk_id)
            read_chunks(volume.repo, [liar], memoryview(bytearray(wrong)))


def test_buffers_are_recycled_and_bounded() -> None:
    buffers = Buffers(100)
    first = buffers.take(10)
    assert len(first) == 100 and buffers.cost(10) == 100  # a small batch holds a whole one
    buffers.give(first)
    assert buffers.take(100) is first  # reused
    buffers.give(first)
    large = buffers.take(150)  # a batch of one large chunk: its own buffer, not kept
    assert len(large) == 150 and buffers.cost(150) == 150
    buffers.give(large)
    assert buffers.take(100) is first
    assert buffers.take(100) is not large


def test_restores_reusing_buffers_are_exact(volume: Volume, tmp_path: Path) -> None:
    """Two snapshots restored one after the other, the second over a target full of other
    bytes (--force): every byte is the snapshot's, none left from a recycled buffer or the old
    file."""
    other = bytes(b ^ 0xFF for b in volume.data[: 1 * MiB]) + volume.data[1 * MiB :]
    volume.source.write_bytes(other)
    with open(volume.source, "rb") as f:
        second = run_backup(volume.repo, f, "source.img", checkpoint_interval=None)
    target = tmp_path / "out.img"
    for snapshot, expected in ((volume.snapshot, volume.data), (second, other)):
        for threads in (1, 3):
            run_restore(volume.repo, snapshot, str(target), force=True, threads=threads)
            assert target.read_bytes() == expected
