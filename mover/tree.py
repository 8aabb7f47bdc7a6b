"""The chunk list of a volume as a tree of blobs, so manifests stay small at any volume size.

Leaf node:     "MVTL" u32 n | n x (u8 kind, u32 length, [id[32] when kind is CHUNK])
Interior node: "MVTI" u32 n | n x (id[32], u64 span in bytes)
Nodes are blobs like data chunks (keyed-BLAKE3 ids, compressed, sealed, packed), so unchanged
subtrees deduplicate between snapshots, and the root id attests the whole volume: same bytes,
same chunks, same tree, same root.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from mover.errors import IntegrityError

LEAF = b"MVTL"
INTERIOR = b"MVTI"
CHUNK = 0
HOLE = 1
FANOUT = 8192  # entries per node: leaves of ~300 KiB covering ~8 GiB at 1 MiB chunks


@dataclass(frozen=True)
class Extent:
    offset: int
    length: int
    chunk_id: bytes | None  # None: a hole (zeros)


StoreNode = Callable[[bytes], bytes]  # stores a node's plaintext, returns its id
LoadNode = Callable[[bytes], bytes]


class TreeBuilder:
    """Streams extents in, keeps one partial node per level: memory O(FANOUT x depth)."""

    def __init__(self, store: StoreNode, fanout: int = FANOUT) -> None:
        self._store = store
        self._fanout = fanout
        self._leaf = bytearray()
        self._leaf_count = 0
        self._leaf_span = 0
        self._levels: list[list[tuple[bytes, int]]] = []
        self.size = 0

    def add(self, length: int, chunk_id: bytes | None) -> None:
        if chunk_id is None:
            self._leaf += struct.pack("<BI", HOLE, length)
        else:
            self._leaf += struct.pack("<BI", CHUNK, length) + chunk_id
        self._leaf_count += 1
        self._leaf_span += length
        self.size += length
        if self._leaf_count == self._fanout:
            self._flush_leaf()

    def _flush_leaf(self) -> None:
        node = LEAF + struct.pack("<I", self._leaf_count) + bytes(self._leaf)
        self._push(0, self._store(node), self._leaf_span)
        self._leaf.clear()
        self._leaf_count = 0
        self._leaf_span = 0

    def _push(self, level: int, node_id: bytes, span: int) -> None:
        if level == len(self._levels):
            self._levels.append([])
        self._levels[level].append((node_id, span))
        if len(self._levels[level]) == self._fanout:
            self._flush_level(level)

    def _flush_level(self, level: int) -> None:
        children = self._levels[level]
        node = INTERIOR + struct.pack("<I", len(children))
        node += b"".join(cid + struct.pack("<Q", span) for cid, span in children)
        span = sum(s for _, s in children)
        children.clear()
        self._push(level + 1, self._store(node), span)

    def finish(self) -> bytes:
        """The root id."""
        if self._leaf_count or not self._levels:
            self._flush_leaf()
        level = 0
        while True:
            top = level == len(self._levels) - 1
            if top and len(self._levels[level]) == 1:
                return self._levels[level][0][0]
            if self._levels[level]:
                self._flush_level(level)
            level += 1


def walk(load: LoadNode, root: bytes) -> Iterator[Extent]:
    """Extents in order, depth first: memory O(FANOUT x depth)."""
    offset = 0
    stack: list[Iterator[bytes]] = [iter([root])]
    while stack:
        node_id = next(stack[-1], None)
        if node_id is None:
            stack.pop()
            continue
        node = load(node_id)
        kind, (count,) = node[:4], struct.unpack_from("<I", node, 4)
        if kind == INTERIOR:
            stack.append(iter([node[8 + 40 * i : 8 + 40 * i + 32] for i in range(count)]))
        elif kind == LEAF:
            pos = 8
            for _ in range(count):
                entry_kind, length = struct.unpack_from("<BI", node, pos)
                pos += 5
                if entry_kind == CHUNK:
                    yield Extent(offset, length, node[pos : pos + 32])
                    pos += 32
                else:
                    yield Extent(offset, length, None)
                offset += length
        else:
            raise IntegrityError(f"tree node {node_id.hex()[:16]} has an unknown format")


def nodes(load: LoadNode, root: bytes) -> Iterator[tuple[bytes, bytes]]:
    """(id, plaintext) of every node, for check and prune."""
    stack = [root]
    while stack:
        node_id = stack.pop()
        node = load(node_id)
        yield node_id, node
        if node[:4] == INTERIOR:
            (count,) = struct.unpack_from("<I", node, 4)
            stack.extend(node[8 + 40 * i : 8 + 40 * i + 32] for i in range(count))


def leaf_chunks(node: bytes) -> Iterator[bytes]:
    if node[:4] != LEAF:
        return
    (count,) = struct.unpack_from("<I", node, 4)
    pos = 8
    for _ in range(count):
        kind = node[pos]
        pos += 5
        if kind == CHUNK:
            yield node[pos : pos + 32]
            pos += 32
