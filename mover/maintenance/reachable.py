"""What prune (mover.maintenance.prune) decides by: the chunks that snapshots and checkpoints
reference (LiveSet), where a blob can be read now (Blobs), the packs that index files name
(Named), and the records (gc/<id>) that condemn packs.

A record is sealed JSON (associated data b"gc"): the condemned packs, when, and the snapshots
that existed; `gc/<id>.writers` beside it names the backups (their shared locks) that were
running when it was written. docs/format.md describes both.
"""

from __future__ import annotations

import array
import bisect
import json
import time
from collections.abc import Callable, Iterable
from typing import Any

from mover._native import index_run as native
from mover.content import blob
from mover.content.index import Index, Location, decode_rows
from mover.content.pack import pack_name, read_pack_header
from mover.errors import IntegrityError, ObjectNotFound
from mover.objects.checkpoint import Held
from mover.objects.repository import Repository
from mover.objects.snapshot import Snapshot
from mover.objects.tree import leaf_chunks, nodes


class LiveSet:
    """The 8-byte prefixes of chunk ids, sorted; duplicates are squeezed out as it grows, so it
    holds about one entry per distinct chunk however many snapshots share them."""

    def __init__(self) -> None:
        self.values = array.array("Q")
        self._squeezed = 0

    def add(self, chunk_id: bytes) -> None:
        self.values.append(native.prefix_of(chunk_id))
        if len(self.values) >= 2 * self._squeezed + (1 << 20):
            self.squeeze()

    def squeeze(self) -> None:
        kept = native.sort_unique_u64(memoryview(self.values))
        del self.values[kept:]
        self._squeezed = kept

    def add_tree(self, blobs: Blobs, root: bytes) -> None:
        """Every node of the tree under root, and every chunk its leaves name."""
        for node_id, node in nodes(blobs.read, root):
            self.add(node_id)
            for chunk_id in leaf_chunks(node):
                self.add(chunk_id)

    def add_snapshots(self, blobs: Blobs, snapshots: Iterable[Snapshot]) -> None:
        for snapshot in snapshots:
            self.add_tree(blobs, bytes.fromhex(snapshot.tree))
        self.squeeze()

    def __bool__(self) -> bool:
        return bool(self.values)

    def add_checkpoint(self, blobs: Blobs, held: Held) -> None:
        for chunk_id in held.chunk_ids:
            self.add(chunk_id)
        for node in held.node_ids:
            self.add_tree(blobs, node)

    def __contains__(self, chunk_id: bytes) -> bool:
        """After squeeze()."""
        key = native.prefix_of(chunk_id)
        at = bisect.bisect_left(self.values, key)
        return at < len(self.values) and self.values[at] == key


class Blobs:
    """Reads blobs for prune's walks of snapshot trees, wherever they are now: through the
    index prune loaded, else through the index files as they are now (a backup that finished
    during prune, or a copy made by this prune's repack), else from condemned packs (a
    snapshot of a writer that took no lock; phase 2 then keeps them)."""

    def __init__(self, repo: Repository) -> None:
        self.repo = repo
        self._current: Index | None = None
        self._condemned: Index | None = None

    def read(self, chunk_id: bytes) -> bytes:
        views: tuple[Callable[[], Index], ...] = (
            self._loaded_index,
            self.current_index,
            self._condemned_index,
        )
        for view in views:
            location = view().get(chunk_id)
            if location is None:
                continue
            try:
                sealed = self.repo.backend.read(
                    pack_name(location.pack_id), location.offset, location.length
                )
            except ObjectNotFound:
                continue  # deleted by this prune after a repack copied it: look further
            return blob.decode(self.repo.master, self.repo.sealer, chunk_id, sealed)
        raise IntegrityError(f"chunk {chunk_id.hex()[:16]} is in no index: repository damaged")

    def _loaded_index(self) -> Index:
        return self.repo.index

    def current_index(self) -> Index:
        """The index files as they are now (loaded once, on first need)."""
        if self._current is None:
            index = Index()
            self.repo._load_index_files(index, list(self.repo.backend.list("index/")))
            self._current = index
        return self._current

    def forget_current(self) -> None:
        self._current = None

    def _condemned_index(self) -> Index:
        if self._condemned is None:
            index = Index()
            for name in self.repo.backend.list("gc/"):
                if name.endswith(".writers"):
                    continue
                for pack in read_record(self.repo, name)["packs"]:
                    pack_id = bytes.fromhex(pack)
                    try:
                        entries = read_pack_header(self.repo.backend, self.repo.sealer, pack_id)
                    except ObjectNotFound:
                        continue
                    for e in entries:
                        index.add(e.chunk_id, Location(pack_id, e.offset, e.length, e.kind))
            self._condemned = index
        return self._condemned


class Named:
    """The packs that index files name, kept up to date with index files written by others
    (backups finishing while prune runs): a pack named by any index file is never deleted."""

    def __init__(self, repo: Repository, packs: set[bytes], files: set[str]) -> None:
        self.repo = repo
        self.packs = packs
        self.files = files  # the index files whose packs are in self.packs

    def refresh(self) -> None:
        for name in self.repo.backend.list("index/"):
            if name in self.files:
                continue
            try:
                pack_ids, _rows, _count = decode_rows(
                    self.repo.sealer, self.repo.backend.read(name), name
                )
            except ObjectNotFound:
                continue
            self.packs.update(pack_ids)
            self.files.add(name)

    def __contains__(self, pack_id: bytes) -> bool:
        return pack_id in self.packs


def write_record(
    repo: Repository, name: str, packs: list[bytes], snapshots: list[Snapshot]
) -> None:
    """Writes the record `name` (gc/<random>): the packs condemned, when, and the snapshots that
    existed then (phase 2 checks only the snapshots written since)."""
    doc = {
        "time": time.time(),
        "packs": [p.hex() for p in packs],
        "snapshots": [s.id for s in snapshots],
    }
    repo.backend.write(name, repo.sealer.seal(json.dumps(doc).encode(), b"gc"))


def read_record(repo: Repository, name: str) -> dict[str, Any]:
    """The record's document: {"time", "packs" (hex ids), "snapshots" (ids)}."""
    doc: dict[str, Any] = json.loads(repo.sealer.open(repo.backend.read(name), b"gc", name))
    return doc
