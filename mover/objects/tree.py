"""The chunk list of a volume as a tree of blobs, so manifests stay small at any volume size.

Leaf node:     "MVTL" u32 n | n x (u8 kind, u32 length, [id[32] when kind is CHUNK])
Interior node: "MVTI" u32 n | n x (id[32], u64 span in bytes)
Nodes are blobs like data chunks (keyed-BLAKE3 ids, compressed, sealed, packed), so unchanged
subtrees deduplicate between snapshots, and the root id attests the whole volume: same bytes,
same chunks, same tree, same root.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass

from mover.errors import IntegrityError, MoverError, StorageError

LEAF = b"MVTL"
INTERIOR = b"MVTI"
STATE = b"MVTS"  # a TreeBuilder's state, in a checkpoint (never a node)
CHUNK = 0
HOLE = 1
# A hole entry's length is a u32; a writer merges consecutive holes up to this.
MAX_HOLE = (1 << 32) - 1
FANOUT = 8192  # entries per node: leaves of ~300 KiB covering ~8 GiB at 1 MiB chunks


@dataclass(frozen=True)
class Extent:
    offset: int
    length: int
    chunk_id: bytes | None  # None: a hole (zeros), or an Unreadable range


@dataclass(frozen=True)
class Unreadable(Extent):
    """A range of the volume whose tree node cannot be read (damage): walk(..., size) yields
    it, with chunk_id None, instead of stopping."""

    reason: str = ""


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
        # (length, id) of the first and the last entry added to this builder (checkpoint samples)
        self.first: tuple[int, bytes | None] | None = None
        self.last: tuple[int, bytes | None] | None = None
        self._hole_at: int | None = None  # where in the leaf its last entry is, if a hole

    def add(self, length: int, chunk_id: bytes | None) -> None:
        self.last = (length, chunk_id)
        if self.size == 0:
            self.first = self.last
        self._leaf_span += length
        self.size += length
        if chunk_id is None:
            at = self._hole_at
            if at is not None:
                (held,) = struct.unpack_from("<I", self._leaf, at + 1)
                if held + length <= MAX_HOLE:
                    # Consecutive holes make one entry: a sparse volume's zero chunks would
                    # otherwise cost an entry (and a restore step) per minimum-size chunk.
                    struct.pack_into("<I", self._leaf, at + 1, held + length)
                    return
            self._hole_at = len(self._leaf)
            self._leaf += struct.pack("<BI", HOLE, length)
        else:
            self._hole_at = None
            self._leaf += struct.pack("<BI", CHUNK, length) + chunk_id
        self._leaf_count += 1
        if self._leaf_count == self._fanout:
            self._flush_leaf()

    def add_holes(self, length: int, count: int) -> None:
        """The same as `count` calls of add(length, None), in time proportional to the entries
        it makes rather than to count (a 10 TiB hole is 168 million minimum-size chunks)."""
        while count > 0:
            at = self._hole_at
            if at is not None:
                (held,) = struct.unpack_from("<I", self._leaf, at + 1)
                n = min((MAX_HOLE - held) // length, count)
                if n:
                    struct.pack_into("<I", self._leaf, at + 1, held + n * length)
                    self._leaf_span += n * length
                    self.size += n * length
                    self.last = (length, None)
                    count -= n
                    continue
            self.add(length, None)  # a new entry (and a full leaf flushed), as add() decides
            count -= 1

    def _flush_leaf(self) -> None:
        node = LEAF + struct.pack("<I", self._leaf_count) + bytes(self._leaf)
        self._push(0, self._store(node), self._leaf_span)
        self._leaf.clear()
        self._leaf_count = 0
        self._leaf_span = 0
        self._hole_at = None

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

    def state(self) -> bytes:
        """What the builder holds (the partial leaf, the ids of stored nodes not yet in a parent):
        O(fanout x depth) bytes whatever the size, for a backup checkpoint
        (mover.objects.checkpoint).

        "MVTS" u32 fanout, u64 size, u32 leaf count, u64 leaf span, u32 leaf bytes, the leaf
        entries as in a leaf node, u32 levels, per level u32 n, n x (id[32], u64 span).
        """
        out = bytearray(STATE)
        out += struct.pack(
            "<IQIQI", self._fanout, self.size, self._leaf_count, self._leaf_span, len(self._leaf)
        )
        out += self._leaf
        out += struct.pack("<I", len(self._levels))
        for level in self._levels:
            out += struct.pack("<I", len(level))
            for node_id, span in level:
                out += node_id + struct.pack("<Q", span)
        return bytes(out)

    @classmethod
    def from_state(cls, store: StoreNode, state: bytes) -> TreeBuilder:
        """A builder that goes on exactly where the one that produced `state` stood: the tree
        it finishes is the one the first builder would have finished given the same entries."""
        if state[:4] != STATE:
            raise IntegrityError("tree builder state has an unknown format")
        fanout, size, leaf_count, leaf_span, leaf_len = struct.unpack_from("<IQIQI", state, 4)
        pos = 4 + struct.calcsize("<IQIQI")
        builder = cls(store, fanout)
        builder.size = size
        builder._leaf_count, builder._leaf_span = leaf_count, leaf_span
        builder._leaf = bytearray(state[pos : pos + leaf_len])
        builder._hole_at = _last_hole(builder._leaf, leaf_count)
        pos += leaf_len
        (levels,) = struct.unpack_from("<I", state, pos)
        pos += 4
        for _ in range(levels):
            (n,) = struct.unpack_from("<I", state, pos)
            pos += 4
            entries = []
            for _ in range(n):
                (span,) = struct.unpack_from("<Q", state, pos + 32)
                entries.append((state[pos : pos + 32], span))
                pos += 40
            builder._levels.append(entries)
        if pos != len(state):
            raise IntegrityError("tree builder state has trailing bytes")
        return builder

    def references(self) -> tuple[list[bytes], list[bytes]]:
        """(stored node ids, chunk ids of the partial leaf) that the builder holds."""
        nodes = [node_id for level in self._levels for node_id, _ in level]
        return nodes, list(leaf_chunks(LEAF + struct.pack("<I", self._leaf_count) + self._leaf))

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


def walk(load: LoadNode, root: bytes, size: int | None = None) -> Iterator[Extent]:
    """Extents in order, depth first: memory O(FANOUT x depth).

    Without `size`, a node that cannot be loaded or read stops the walk (load's error, or
    IntegrityError). With `size` (the volume's size, the root's span) the walk tolerates
    damage: a node that load cannot give (a MoverError, except a temporary StorageError) or of
    an unknown format comes out as one Unreadable extent of its span (from its parent, or
    `size` for the root) and the walk goes on, so the extents still cover [0, size) exactly.
    Chunks and holes are yielded the same either way.
    """
    offset = 0
    spans = size is not None
    stack: list[Iterator[tuple[bytes, int | None]]] = [iter([(root, size)])]
    while stack:
        entry = next(stack[-1], None)
        if entry is None:
            stack.pop()
            continue
        node_id, span = entry
        node, damage = _load_node(load, node_id, span)
        kind = node[:4]
        if damage is None and kind == INTERIOR:
            stack.append(iter(_child_entries(node, spans)))
            continue
        if damage is None and kind == LEAF:
            offset = yield from _leaf_extents(node, offset)
            continue
        if damage is None:
            damage = f"tree node {_short(node_id)} has an unknown format"
        if span is None:
            raise IntegrityError(damage)
        if span:
            yield Unreadable(offset, span, None, damage)
            offset += span


def _load_node(load: LoadNode, node_id: bytes, span: int | None) -> tuple[bytes, str | None]:
    """(the node, None); when the walk tolerates damage (span known), a node that load cannot
    give is (b"", why) instead. A temporary storage failure is raised either way: not damage,
    the node may be readable once the storage is back."""
    if span is None:
        return load(node_id), None
    try:
        return load(node_id), None
    except MoverError as exc:
        if isinstance(exc, StorageError) and exc.temporary:
            raise
        return b"", f"tree node {_short(node_id)}: {exc}"


def _child_entries(node: bytes, spans: bool) -> list[tuple[bytes, int | None]]:
    """(child id, its span, or None when spans are not wanted) of an interior node."""
    (count,) = struct.unpack_from("<I", node, 4)
    if spans:
        return [
            (node[8 + 40 * i : 8 + 40 * i + 32], _span_at(node, 8 + 40 * i + 32))
            for i in range(count)
        ]
    return [(node[8 + 40 * i : 8 + 40 * i + 32], None) for i in range(count)]


def _leaf_extents(node: bytes, offset: int) -> Generator[Extent, None, int]:
    """The chunks and holes of a leaf, from `offset` on; returns the offset after them."""
    (count,) = struct.unpack_from("<I", node, 4)
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
    return offset


def _span_at(node: bytes, pos: int) -> int:
    (span,) = struct.unpack_from("<Q", node, pos)
    return int(span)


def _short(node_id: bytes) -> str:
    return node_id.hex()[:16]


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


def _last_hole(leaf: bytes | bytearray, count: int) -> int | None:
    """Where the last of a partial leaf's `count` entries starts, when it is a hole."""
    pos, last = 0, None
    for _ in range(count):
        last = pos if leaf[pos] == HOLE else None
        pos += 5 if leaf[pos] == HOLE else 37
    return last


def children(node: bytes) -> list[bytes]:
    """The child ids of an interior node; none for a leaf."""
    if node[:4] != INTERIOR:
        return []
    (count,) = struct.unpack_from("<I", node, 4)
    return [node[8 + 40 * i : 8 + 40 * i + 32] for i in range(count)]
