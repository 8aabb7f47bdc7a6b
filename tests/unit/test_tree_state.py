"""A tree builder stopped at any entry and restored from its state finishes the same tree as one
that never stopped (what makes a resumed backup's root equal an uninterrupted one's)."""

from __future__ import annotations

import os

import blake3
import pytest

from mover.errors import IntegrityError
from mover.objects.tree import TreeBuilder, walk


def entries(count: int) -> list[tuple[int, bytes | None]]:
    return [(100 + i, None if i % 7 == 3 else os.urandom(32)) for i in range(count)]


@pytest.mark.parametrize("fanout", [2, 3, 8])
@pytest.mark.parametrize("count", [1, 2, 9, 27, 64, 100])
def test_restored_builder_finishes_the_same_tree(fanout: int, count: int) -> None:
    store: dict[bytes, bytes] = {}

    def put(node: bytes) -> bytes:
        node_id = blake3.blake3(node).digest()
        store[node_id] = node
        return node_id

    extents = entries(count)
    whole = TreeBuilder(put, fanout)
    for length, chunk_id in extents:
        whole.add(length, chunk_id)
    root = whole.finish()

    for stop in range(count + 1):
        first = TreeBuilder(put, fanout)
        for length, chunk_id in extents[:stop]:
            first.add(length, chunk_id)
        state = first.state()
        node_ids, chunk_ids = first.references()
        assert all(n in store for n in node_ids)
        partial = len(chunk_ids)
        assert partial < fanout and partial <= stop
        resumed = TreeBuilder.from_state(put, state)
        assert resumed.size == sum(length for length, _ in extents[:stop])
        assert resumed.state() == state
        for length, chunk_id in extents[stop:]:
            resumed.add(length, chunk_id)
        assert resumed.finish() == root, f"stopped at {stop}"
    got = [(e.length, e.chunk_id) for e in walk(store.__getitem__, root)]
    assert got == extents


def test_state_of_another_format_is_refused() -> None:
    with pytest.raises(IntegrityError, match="unknown format"):
        TreeBuilder.from_state(lambda node: b"", b"MVTL" + bytes(40))
    state = TreeBuilder(lambda node: b"", 4).state()
    with pytest.raises(IntegrityError, match="trailing"):
        TreeBuilder.from_state(lambda node: b"", state + b"x")
