"""Random access to a snapshot (mover.pipeline.reader) agrees with restore, byte for byte, on a
real local repository: random ranges, every chunk and tree node boundary (a tree rebuilt with
fanout 3, so that a read crosses leaves and interior nodes), holes, the end of the volume, empty
reads; only the chunks a read touches are fetched; the caches stay within their bounds."""

from __future__ import annotations

import random
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mover.chunking import ChunkerParams
from mover.content import blob
from mover.content.pack import KIND_TREE, PackBuilder, PackEntry
from mover.crypto import KdfParams
from mover.errors import IntegrityError, UsageError
from mover.objects.locks import list_locks
from mover.objects.repository import RepoConfig, Repository
from mover.objects.snapshot import Snapshot
from mover.objects.tree import TreeBuilder, walk
from mover.pipeline.backup import run_backup
from mover.pipeline.reader import (
    BoundedCache,
    ParsedNode,
    SnapshotReader,
    open_snapshot,
    parse_node,
    read_range,
)
from mover.pipeline.restore import run_restore
from mover.storage.local import LocalBackend

KiB, MiB = 1 << 10, 1 << 20
PASSWORD = b"reader tests"
PARAMS = ChunkerParams(4 * KiB, 16 * KiB, 64 * KiB)
FANOUT = 3


def source_bytes() -> bytes:
    """Random data, holes (zeros longer than a chunk), compressible text, an odd size."""
    rng = random.Random(19)
    text = b"".join(b"line %d of a log file, much alike\n" % i for i in range(15_000))
    return b"".join(
        [
            rng.randbytes(600 * KiB),
            bytes(500 * KiB),
            text[: 500 * KiB],
            bytes(400 * KiB + 3),
            rng.randbytes(1 * MiB + 12_345),
        ]
    )


def with_fanout(repo: Repository, snapshot: Snapshot, fanout: int) -> Snapshot:
    """The same volume under a tree of `fanout` entries per node (several levels for a few
    hundred chunks), its nodes stored in a new pack: a second snapshot of the same bytes."""
    pack = PackBuilder()
    stored: set[bytes] = set()

    def store(node: bytes) -> bytes:
        node_id = repo.master.chunk_id_of(node)
        if node_id not in stored and node_id not in repo.index:
            stored.add(node_id)
            pack.add(node_id, blob.encode(repo.sealer, node_id, node, 3), KIND_TREE)
        return node_id

    builder = TreeBuilder(store, fanout)
    for extent in walk(repo.read_blob, bytes.fromhex(snapshot.tree)):
        builder.add(extent.length, extent.chunk_id)
    root = builder.finish()
    pack_id, data = pack.finish(repo.sealer)
    repo.write_pack(pack_id, data)
    repo.write_index(
        [(pack_id, PackEntry(e.chunk_id, e.offset, e.length, e.kind)) for e in pack.entries]
    )
    deep = replace(snapshot, tree=root.hex(), source="deep", id="")
    return replace(deep, id=repo.write_snapshot(deep))


class Volume:
    def __init__(self, root: Path) -> None:
        self.data = source_bytes()
        source = root / "source.img"
        source.write_bytes(self.data)
        self.repo = Repository.init(
            LocalBackend(root / "repo"), PASSWORD, RepoConfig(PARAMS), KdfParams(8192, 1, 1)
        )
        with open(source, "rb") as f:
            self.flat = run_backup(self.repo, f, "source.img", checkpoint_interval=None)
        self.deep = with_fanout(self.repo, self.flat, FANOUT)
        self.restored = {}
        for snapshot in (self.flat, self.deep):
            target = root / f"restored-{snapshot.id[:8]}.img"
            run_restore(self.repo, snapshot, str(target))
            self.restored[snapshot.id] = target.read_bytes()
        self.extents = list(walk(self.repo.read_blob, bytes.fromhex(self.flat.tree)))

    def expected(self, snapshot: Snapshot, offset: int, length: int) -> bytes:
        return self.restored[snapshot.id][offset : offset + length]


@pytest.fixture(scope="module")
def volume(tmp_path_factory: pytest.TempPathFactory) -> Volume:
    v = Volume(tmp_path_factory.mktemp("reader"))
    # The restores are the oracle: they must be the source, and the two trees must differ.
    assert v.restored[v.flat.id] == v.restored[v.deep.id] == v.data
    assert v.flat.tree != v.deep.tree
    assert sum(1 for e in v.extents if e.chunk_id is None) >= 2  # holes
    assert len(v.extents) > 3 * FANOUT**3  # the deep tree has at least four levels
    return v


@pytest.fixture(params=["flat", "deep"])
def snapshot(request: pytest.FixtureRequest, volume: Volume) -> Snapshot:
    found: Snapshot = getattr(volume, request.param)
    return found


def test_random_ranges_match_the_restore(volume: Volume, snapshot: Snapshot) -> None:
    rng = random.Random(7)
    size = snapshot.size
    with SnapshotReader(volume.repo, snapshot) as reader:
        for _ in range(400):
            offset = rng.randrange(0, size + 1000)
            length = rng.choice([0, 1, rng.randrange(1, 5000), rng.randrange(1, 300 * KiB)])
            assert reader.read(offset, length) == volume.expected(snapshot, offset, length), (
                offset,
                length,
            )
        assert reader.read(0, size) == volume.data


def test_every_chunk_boundary(volume: Volume, snapshot: Snapshot) -> None:
    """Around every boundary between chunks and holes (which includes every leaf's and every
    interior node's first and last byte): the bytes either side, and reads across it."""
    with SnapshotReader(volume.repo, snapshot, readahead=0) as reader:
        for extent in volume.extents[1:]:
            b = extent.offset
            for offset, length in ((b - 1, 1), (b, 1), (b - 1, 2), (b - 3000, 7000)):
                got = reader.read(offset, length)
                assert got == volume.expected(snapshot, offset, length), (offset, length)


def test_extents_cover_exactly_the_range(volume: Volume, snapshot: Snapshot) -> None:
    with SnapshotReader(volume.repo, snapshot) as reader:
        assert list(reader.extents(0, snapshot.size)) == volume.extents
        middle = volume.extents[len(volume.extents) // 2]
        inside = list(reader.extents(middle.offset + 1, middle.length - 2))
        assert inside == [middle]
        across = list(reader.extents(middle.offset + middle.length - 1, 2))
        assert across[0] == middle and across[1].offset == middle.offset + middle.length
        assert list(reader.extents(snapshot.size, 10)) == []
        assert list(reader.extents(5, 0)) == []


@given(st.integers(0, 4 * MiB), st.integers(0, 2 * MiB))
def test_any_range_property(volume: Volume, offset: int, length: int) -> None:
    reader = SnapshotReader(volume.repo, volume.deep, cache_size=256 * KiB, readahead=0)
    assert reader.read(offset, length) == volume.data[offset : offset + length]


def test_end_of_volume_and_empty_reads(volume: Volume) -> None:
    size = volume.flat.size
    with SnapshotReader(volume.repo, volume.flat) as reader:
        assert reader.read(size - 10, 100) == volume.data[-10:]  # short read at the end
        assert reader.read(size, 5) == b""  # EOF
        assert reader.read(size + 12345, 5) == b""
        loads = reader.chunks.stats.loads
        assert reader.read(1000, 0) == b""  # zero length: nothing fetched
        assert reader.chunks.stats.loads == loads
        with pytest.raises(UsageError, match="must be >= 0"):
            reader.read(-1, 10)
        with pytest.raises(UsageError, match="must be >= 0"):
            reader.read(0, -1)


def test_holes_are_zeros_without_a_fetch(volume: Volume, snapshot: Snapshot) -> None:
    hole = next(e for e in volume.extents if e.chunk_id is None and e.length > 100 * KiB)
    with SnapshotReader(volume.repo, snapshot) as reader:
        got = reader.read(hole.offset + 10, hole.length - 20)
        assert got == bytes(hole.length - 20)
        assert reader.chunks.stats.loads == 0


def test_only_the_chunks_a_read_touches_are_fetched(volume: Volume) -> None:
    chunks = [e for e in volume.extents if e.chunk_id is not None]
    with SnapshotReader(volume.repo, volume.flat, readahead=0) as reader:
        one = chunks[3]
        reader.read(one.offset + 5, one.length - 10)
        assert reader.chunks.stats.loads == 1
        assert reader.chunks.stats.load_bytes == one.length
        # A range over chunks 10..14 (from inside the first to inside the last): five fetches.
        first, last = chunks[10], chunks[14]
        assert all(e.chunk_id for e in volume.extents if first.offset <= e.offset <= last.offset)
        reader.read(first.offset + 1, last.offset + 1 - first.offset)
        assert reader.chunks.stats.loads == 6
        reader.read(first.offset, last.offset + last.length - first.offset)  # cached now
        assert reader.chunks.stats.loads == 6


def test_caches_stay_within_their_bounds(volume: Volume, snapshot: Snapshot) -> None:
    """Memory does not grow with the volume: a whole read through caches smaller than it."""
    limit = 2 * PARAMS.max_size
    nodes = BoundedCache[ParsedNode](2000)  # a few nodes of the deep tree
    reader = SnapshotReader(volume.repo, snapshot, cache_size=limit, nodes=nodes)
    got = bytearray()
    peak_chunks = peak_nodes = 0
    for offset in range(0, snapshot.size, 100_000):
        got += reader.read(offset, 100_000)
        peak_chunks = max(peak_chunks, reader.chunks.size)
        peak_nodes = max(peak_nodes, nodes.size)
    reader.close()
    assert got == volume.data
    assert 0 < peak_chunks <= limit
    assert peak_nodes <= 2000  # the flat tree's one leaf is larger: read again, never kept
    assert nodes.stats.loads > 1
    assert reader.chunks.stats.load_bytes >= len(volume.data) - 2 * MiB  # evicted, refetched


def test_readahead_grows_with_a_sequential_run(volume: Volume) -> None:
    def settled(reader: SnapshotReader, start: int, length: int) -> None:
        deadline = time.monotonic() + 60
        ahead = [e for e in reader.extents(start, length) if e.chunk_id is not None]
        while not all(e.chunk_id in reader.chunks for e in ahead):
            assert time.monotonic() < deadline, f"readahead did not fetch {start}+{length}"
            time.sleep(0.01)

    def beyond(reader: SnapshotReader, offset: int) -> list[int]:
        """Chunks starting at offset or later that are cached or being fetched."""
        return [
            e.offset
            for e in reader.extents(offset, volume.flat.size - offset)
            if e.chunk_id is not None and e.chunk_id in reader.chunks
        ]

    step = 64 * KiB
    with SnapshotReader(volume.repo, volume.flat, readahead=MiB) as reader:
        reader.read(0, step)
        assert beyond(reader, 2 * step + PARAMS.max_size) == []  # a first read: no readahead
        reader.read(step, step)  # a run of 128 KiB: as much is read ahead
        settled(reader, 2 * step, 2 * step)
        assert beyond(reader, 4 * step + PARAMS.max_size) == []
        for offset in range(2 * step, MiB, step):  # a run of 1 MiB: the full window
            assert reader.read(offset, step) == volume.data[offset : offset + step]
        settled(reader, MiB, MiB)
        assert reader.read(MiB, MiB) == volume.data[MiB : 2 * MiB]
    assert not [t for t in threading.enumerate() if t.name.startswith("mover-readahead")]


def test_threads_reading_at_once(volume: Volume) -> None:
    reader = SnapshotReader(volume.repo, volume.deep, cache_size=MiB)
    errors: list[str] = []

    def run(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(60):
            offset, length = rng.randrange(0, volume.deep.size), rng.randrange(0, 200 * KiB)
            if reader.read(offset, length) != volume.data[offset : offset + length]:
                errors.append(f"{offset}+{length}")

    threads = [threading.Thread(target=run, args=(seed,)) for seed in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    reader.close()
    assert errors == []


def test_cache_loads_a_key_once_for_concurrent_callers() -> None:
    cache = BoundedCache[bytes](100)
    started, release = threading.Event(), threading.Event()
    calls: list[int] = []

    def slow() -> tuple[bytes, int]:
        calls.append(1)
        started.set()
        release.wait(30)
        return b"x" * 10, 10

    results: list[bytes] = []
    first = threading.Thread(target=lambda: results.append(cache.get(b"k", slow)))
    first.start()
    started.wait(30)
    second = threading.Thread(target=lambda: results.append(cache.get(b"k", slow)))
    second.start()
    time.sleep(0.05)
    assert b"k" in cache
    release.set()
    first.join()
    second.join()
    assert results == [b"x" * 10] * 2 and len(calls) == 1
    assert cache.stats.loads == 1 and cache.size == 10


def test_cache_passes_a_load_error_to_every_waiter_and_keeps_nothing() -> None:
    cache = BoundedCache[bytes](100)

    def broken() -> tuple[bytes, int]:
        raise IntegrityError("chunk 0123 does not match its id")

    with pytest.raises(IntegrityError):
        cache.get(b"k", broken)
    assert b"k" not in cache and cache.size == 0
    assert cache.get(b"k", lambda: (b"ok", 2)) == b"ok"  # tried again, not remembered failed
    assert cache.get(b"big", lambda: (b"y" * 200, 200)) == b"y" * 200  # over the bound: not kept
    assert b"big" not in cache and cache.size == 2


def test_unknown_node_format_is_integrity_error() -> None:
    with pytest.raises(IntegrityError, match="unknown format"):
        parse_node(bytes(32), b"XXXX\x00\x00\x00\x00")
    with pytest.raises(IntegrityError, match="truncated"):
        parse_node(bytes(32), b"MVTL\x02\x00\x00\x00\x00")


def test_a_damaged_chunk_fails_its_reads_only(tmp_path: Path) -> None:
    data = source_bytes()
    source = tmp_path / "source.img"
    source.write_bytes(data)
    repo = Repository.init(
        LocalBackend(tmp_path / "repo"), PASSWORD, RepoConfig(PARAMS), KdfParams(8192, 1, 1)
    )
    with open(source, "rb") as f:
        snapshot = run_backup(repo, f, "source.img", checkpoint_interval=None)
    extents = list(walk(repo.read_blob, bytes.fromhex(snapshot.tree)))
    victim = [e for e in extents if e.chunk_id is not None][5]
    assert victim.chunk_id is not None
    location = repo.index.get(victim.chunk_id)
    assert location is not None
    pack = next((tmp_path / "repo" / "data").rglob(location.pack_id.hex()))
    raw = bytearray(pack.read_bytes())
    raw[location.offset + location.length // 2] ^= 0xFF
    pack.chmod(0o644)
    pack.write_bytes(bytes(raw))
    with SnapshotReader(repo, snapshot, readahead=0) as reader:
        with pytest.raises(IntegrityError, match=victim.chunk_id.hex()[:16]):
            reader.read(victim.offset + 1, 10)
        with pytest.raises(IntegrityError):  # not remembered as good, nor cached
            reader.read(victim.offset, 1)
        after = victim.offset + victim.length
        assert reader.read(after, 100 * KiB) == data[after : after + 100 * KiB]
        assert reader.read(0, victim.offset) == data[: victim.offset]


def test_open_snapshot_holds_the_shared_lock(volume: Volume) -> None:
    with open_snapshot(volume.repo, volume.flat) as reader:
        held = list_locks(volume.repo)
        assert [lock.kind for lock in held] == ["shared"]
        assert reader.read(5, 10) == volume.data[5:15]
    assert list_locks(volume.repo) == []
    assert read_range(volume.repo, volume.deep, 1000, 20) == volume.data[1000:1020]
    assert list_locks(volume.repo) == []


def test_an_empty_snapshot_reads_nothing(tmp_path: Path) -> None:
    source = tmp_path / "empty.img"
    source.write_bytes(b"")
    repo = Repository.init(
        LocalBackend(tmp_path / "repo"), PASSWORD, RepoConfig(PARAMS), KdfParams(8192, 1, 1)
    )
    with open(source, "rb") as f:
        snapshot = run_backup(repo, f, "empty.img", checkpoint_interval=None)
    assert snapshot.size == 0
    with SnapshotReader(repo, snapshot) as reader:
        assert reader.read(0, 10) == b""
        assert list(reader.extents(0, 10)) == []
