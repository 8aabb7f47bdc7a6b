"""walk(..., size) over a damaged tree: an unreadable node becomes one Unreadable extent of its
span and the walk goes on, so the extents still cover [0, size) exactly."""

from __future__ import annotations

import random
import struct
from collections.abc import Callable

import pytest

from mover.errors import IntegrityError, StorageError
from mover.objects.tree import INTERIOR, LEAF, Extent, Unreadable, walk
from tests.unit.test_tree import build


def sample(count: int, seed: int) -> list[tuple[int, bytes | None]]:
    """Chunks and (never consecutive) holes of assorted lengths."""
    rng = random.Random(seed)
    return [(rng.randint(1, 5000), None if i % 5 == 4 else rng.randbytes(32)) for i in range(count)]


def loader(store: dict[bytes, bytes], damaged: set[bytes]) -> Callable[[bytes], bytes]:
    def load(node_id: bytes) -> bytes:
        if node_id in damaged:
            raise IntegrityError(f"chunk {node_id.hex()[:16]} failed authentication: damaged")
        return store[node_id]

    return load


def node_ranges(store: dict[bytes, bytes], root: bytes) -> dict[bytes, tuple[int, int]]:
    """Every node's [start, end) in the volume, by recursion over the undamaged tree."""
    found: dict[bytes, tuple[int, int]] = {}

    def visit(node_id: bytes, start: int) -> int:
        node = store[node_id]
        (count,) = struct.unpack_from("<I", node, 4)
        end = start
        if node[:4] == INTERIOR:
            for i in range(count):
                end = visit(node[8 + 40 * i : 8 + 40 * i + 32], end)
        else:
            assert node[:4] == LEAF
            pos = 8
            for _ in range(count):
                kind, length = struct.unpack_from("<BI", node, pos)
                pos += 5 + (32 if kind == 0 else 0)
                end += length
        found[node_id] = (start, end)
        return end

    visit(root, 0)
    return found


def expected_walk(
    store: dict[bytes, bytes], root: bytes, damaged: set[bytes]
) -> list[tuple[int, int, bytes | None, bool]]:
    """(offset, length, chunk id, unreadable) the walk must give: the undamaged extents, with
    those under a damaged node replaced by one unreadable range per topmost damaged node."""
    full = list(walk(store.__getitem__, root))
    ranges = node_ranges(store, root)
    # By start, and the outer of two nested ranges (the longer one) first.
    bad = sorted((ranges[n] for n in damaged), key=lambda r: (r[0], -r[1]))
    top: list[tuple[int, int]] = []
    for start, end in bad:
        if top and start < top[-1][1]:
            continue  # under a damaged node already listed
        top.append((start, end))
    out: list[tuple[int, int, bytes | None, bool]] = []
    for extent in full:
        inside = next((r for r in top if r[0] <= extent.offset < r[1]), None)
        if inside is None:
            out.append((extent.offset, extent.length, extent.chunk_id, False))
        elif extent.offset == inside[0]:
            out.append((inside[0], inside[1] - inside[0], None, True))
    return [o for o in out if o[1] > 0]


def as_tuples(extents: list[Extent]) -> list[tuple[int, int, bytes | None, bool]]:
    return [(e.offset, e.length, e.chunk_id, isinstance(e, Unreadable)) for e in extents]


def assert_covers(extents: list[Extent], size: int) -> None:
    offset = 0
    for e in extents:
        assert e.offset == offset, (e, offset)
        assert e.length > 0
        offset += e.length
    assert offset == size


@pytest.mark.parametrize("count", [1, 2, 5, 9, 27, 65])
@pytest.mark.parametrize("fanout", [2, 3, 4])
def test_undamaged_tree_walks_the_same_with_a_size(count: int, fanout: int) -> None:
    extents = sample(count, seed=count * 10 + fanout)
    root, store = build(extents, fanout)
    size = sum(length for length, _ in extents)
    plain = list(walk(store.__getitem__, root))
    tolerant = list(walk(store.__getitem__, root, size))
    assert tolerant == plain
    assert not any(isinstance(e, Unreadable) for e in tolerant)
    assert_covers(tolerant, size)


@pytest.mark.parametrize("count", [1, 4, 9, 27, 65])
@pytest.mark.parametrize("fanout", [2, 3, 4])
def test_each_single_damaged_node_is_one_unreadable_range(count: int, fanout: int) -> None:
    extents = sample(count, seed=count * 10 + fanout)
    root, store = build(extents, fanout)
    size = sum(length for length, _ in extents)
    ranges = node_ranges(store, root)
    assert set(ranges) == set(store)
    for node_id in store:
        got = list(walk(loader(store, {node_id}), root, size))
        assert_covers(got, size)
        assert as_tuples(got) == expected_walk(store, root, {node_id})
        (bad,) = [e for e in got if isinstance(e, Unreadable)]
        start, end = ranges[node_id]
        assert (bad.offset, bad.length) == (start, end - start)
        assert node_id.hex()[:16] in bad.reason and "failed authentication" in bad.reason


def test_a_damaged_root_is_the_whole_volume() -> None:
    extents = sample(40, seed=7)
    root, store = build(extents, 3)
    size = sum(length for length, _ in extents)
    got = list(walk(loader(store, {root}), root, size))
    assert len(got) == 1
    assert isinstance(got[0], Unreadable)
    assert (got[0].offset, got[0].length, got[0].chunk_id) == (0, size, None)


@pytest.mark.parametrize("seed", range(20))
def test_several_damaged_nodes(seed: int) -> None:
    rng = random.Random(seed)
    fanout = rng.choice([2, 3, 4])
    extents = sample(rng.randint(10, 120), seed=seed)
    root, store = build(extents, fanout)
    size = sum(length for length, _ in extents)
    below_root = sorted(set(store) - {root})
    damaged = set(rng.sample(below_root, rng.randint(2, min(6, len(below_root)))))
    got = list(walk(loader(store, damaged), root, size))
    assert_covers(got, size)
    assert as_tuples(got) == expected_walk(store, root, damaged)
    assert any(isinstance(e, Unreadable) for e in got)


def test_a_leaf_of_unknown_format_is_unreadable() -> None:
    extents = sample(30, seed=3)
    root, store = build(extents, 4)
    size = sum(length for length, _ in extents)
    ranges = node_ranges(store, root)
    leaf = next(n for n, node in store.items() if node[:4] == LEAF and ranges[n][0] > 0)
    store[leaf] = b"MVTX" + store[leaf][4:]
    got = list(walk(store.__getitem__, root, size))
    assert_covers(got, size)
    (bad,) = [e for e in got if isinstance(e, Unreadable)]
    start, end = ranges[leaf]
    assert (bad.offset, bad.length) == (start, end - start)
    assert "unknown format" in bad.reason and leaf.hex()[:16] in bad.reason
    with pytest.raises(IntegrityError, match="unknown format"):
        list(walk(store.__getitem__, root))


def test_without_a_size_damage_stops_the_walk() -> None:
    extents = sample(30, seed=5)
    root, store = build(extents, 3)
    leaf = next(n for n, node in store.items() if node[:4] == LEAF)
    with pytest.raises(IntegrityError, match="failed authentication"):
        list(walk(loader(store, {leaf}), root))


def test_a_temporary_storage_error_is_not_damage() -> None:
    extents = sample(30, seed=6)
    root, store = build(extents, 3)
    leaf = next(n for n, node in store.items() if node[:4] == LEAF)

    def load(node_id: bytes) -> bytes:
        if node_id == leaf:
            raise StorageError("connection reset", temporary=True)
        return store[node_id]

    with pytest.raises(StorageError, match="connection reset"):
        list(walk(load, root, sum(length for length, _ in extents)))

    def load_gone(node_id: bytes) -> bytes:
        if node_id == leaf:
            raise StorageError("object is shorter than expected")
        return store[node_id]

    got = list(walk(load_gone, root, sum(length for length, _ in extents)))
    assert sum(isinstance(e, Unreadable) for e in got) == 1


def test_an_empty_volume_with_a_damaged_root_has_no_extents() -> None:
    root, store = build([], 4)
    assert list(walk(loader(store, {root}), root, 0)) == []
