"""Consecutive holes merge into one tree entry, identically whether a backup ran straight
through or resumed from a checkpoint of the builder's state."""

from __future__ import annotations

import random

import blake3
import pytest

from mover.objects.tree import LEAF, MAX_HOLE, TreeBuilder, walk

Entry = tuple[int, bytes | None]


def merged(entries: list[Entry]) -> list[Entry]:
    """The plain rule: a hole following a hole joins it while the sum fits in a u32."""
    out: list[Entry] = []
    for length, chunk_id in entries:
        if chunk_id is None and out and out[-1][1] is None and out[-1][0] + length <= MAX_HOLE:
            out[-1] = (out[-1][0] + length, None)
        else:
            out.append((length, chunk_id))
    return out


def random_entries(seed: int, n: int) -> list[Entry]:
    rng = random.Random(seed)
    entries: list[Entry] = [
        (rng.randrange(1, 1 << 16), None if rng.random() < 0.7 else rng.randbytes(32))
        for _ in range(n)
    ]
    return [*entries, (MAX_HOLE - 5, None), (100, None), (MAX_HOLE, None), (7, b"x" * 32)]


class Store:
    def __init__(self) -> None:
        self.nodes: dict[bytes, bytes] = {}

    def __call__(self, node: bytes) -> bytes:
        node_id = blake3.blake3(node).digest()
        self.nodes[node_id] = node
        return node_id


def build(entries: list[Entry], store: Store) -> bytes:
    builder = TreeBuilder(store, fanout=64)
    for length, chunk_id in entries:
        builder.add(length, chunk_id)
    return builder.finish()


def test_holes_merge_by_the_plain_rule() -> None:
    entries = random_entries(1, 20_000)
    store = Store()
    root = build(entries, store)
    extents = [(e.length, e.chunk_id) for e in walk(store.nodes.__getitem__, root)]
    # Merging happens within a leaf: across leaves the walk shows two holes in a row.
    assert merged(extents) == merged(entries)
    assert len(extents) < len(entries) * 0.6
    leaf_entries = sum(
        int.from_bytes(node[4:8], "little") for node in store.nodes.values() if node[:4] == LEAF
    )
    assert leaf_entries == len(extents)


@pytest.mark.parametrize("cut", [1, 2, 63, 64, 65, 997, 5000, 14_001, 20_003])
def test_resumed_builder_merges_exactly_like_an_uninterrupted_one(cut: int) -> None:
    entries = random_entries(2, 20_000)
    store = Store()
    root = build(entries, store)
    first = TreeBuilder(store, fanout=64)
    for length, chunk_id in entries[:cut]:
        first.add(length, chunk_id)
    resumed = TreeBuilder.from_state(store, first.state())
    for length, chunk_id in entries[cut:]:
        resumed.add(length, chunk_id)
    assert resumed.finish() == root


@pytest.mark.parametrize("seed", range(6))
def test_add_holes_is_many_adds(seed: int) -> None:
    rng = random.Random(seed)
    plain, bulk = TreeBuilder(Store(), fanout=8), TreeBuilder(Store(), fanout=8)
    for _ in range(300):
        if rng.random() < 0.3:
            length, chunk_id = rng.randrange(1, 1 << 20), rng.randbytes(32)
            plain.add(length, chunk_id)
            bulk.add(length, chunk_id)
            continue
        # Lengths near the u32 limit make entries fill up in the middle of a run.
        length = rng.choice([1, 4096, 1 << 16, MAX_HOLE // 3, MAX_HOLE // 2 + 1, MAX_HOLE])
        count = rng.randrange(0, 40)
        for _ in range(count):
            plain.add(length, None)
        bulk.add_holes(length, count)
        assert bulk.state() == plain.state()
        assert (bulk.size, bulk.first, bulk.last) == (plain.size, plain.first, plain.last)
    assert bulk.finish() == plain.finish()
