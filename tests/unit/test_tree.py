"""The chunk-list tree: any shape round-trips, and equal content gives an equal root."""

from __future__ import annotations

import os

import blake3
import pytest

from mover.objects.tree import Extent, TreeBuilder, leaf_chunks, nodes, walk


def build(extents: list[tuple[int, bytes | None]], fanout: int) -> tuple[bytes, dict[bytes, bytes]]:
    store: dict[bytes, bytes] = {}

    def put(node: bytes) -> bytes:
        node_id = blake3.blake3(node).digest()
        store[node_id] = node
        return node_id

    builder = TreeBuilder(put, fanout=fanout)
    for length, chunk_id in extents:
        builder.add(length, chunk_id)
    root = builder.finish()
    assert builder.size == sum(length for length, _ in extents)
    return root, store


@pytest.mark.parametrize("count", [0, 1, 2, 3, 4, 5, 8, 9, 16, 17, 27, 64, 65, 100])
@pytest.mark.parametrize("fanout", [2, 3, 4])
def test_any_shape_round_trips(count: int, fanout: int) -> None:
    extents = [(1000 + i, None if i % 5 == 4 else os.urandom(32)) for i in range(count)]
    root, store = build(extents, fanout)
    got = list(walk(store.__getitem__, root))
    offset = 0
    expected = []
    for length, chunk_id in extents:
        expected.append(Extent(offset, length, chunk_id))
        offset += length
    assert got == expected
    listed = [c for _, node in nodes(store.__getitem__, root) for c in leaf_chunks(node)]
    assert sorted(listed) == sorted(c for _, c in extents if c is not None)


def test_same_extents_same_root_different_extents_different_root() -> None:
    extents = [(4096, os.urandom(32)) for _ in range(50)]
    root_a, _ = build(extents, 4)
    root_b, _ = build(list(extents), 4)
    assert root_a == root_b
    changed = [*extents[:-1], (4096, os.urandom(32))]
    assert build(changed, 4)[0] != root_a
