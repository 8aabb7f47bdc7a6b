"""`check`: structure (every snapshot's tree and chunks are indexed, packs exist and are long
enough), and with read_data every byte (pack hashes, every blob authenticated and matching its
id). Problems are collected, not raised: a damaged snapshot, index file, pack or tree node is
named and the check goes on, so one report names every damaged object and every snapshot it
hurts."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

import blake3

from mover.content import blob
from mover.content.pack import pack_name, read_header
from mover.errors import MoverError
from mover.objects.locks import as_reader
from mover.objects.repository import Repository
from mover.objects.snapshot import Snapshot
from mover.objects.tree import leaf_chunks, nodes
from mover.storage.stack import base_of
from mover.text import plural


@dataclass
class CheckReport:
    snapshots: int = 0
    packs: int = 0
    chunks: int = 0
    errors: list[str] = field(default_factory=list)
    damaged_snapshots: list[str] = field(default_factory=list)
    damaged_objects: list[str] = field(default_factory=list)  # object names
    # Not errors: what killed writers left, which prune removes (after its grace periods).
    unindexed_packs: int = 0
    temp_files: int = 0

    @property
    def ok(self) -> bool:
        return not self.errors

    def as_dict(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "snapshots": self.snapshots,
            "packs": self.packs,
            "chunks": self.chunks,
            "errors": self.errors,
            "damaged_snapshots": self.damaged_snapshots,
            "damaged_objects": self.damaged_objects,
            "unindexed_packs": self.unindexed_packs,
            "temp_files": self.temp_files,
        }


@as_reader
def run_check(
    repo: Repository, read_data: bool = False, progress: Callable[[str], None] | None = None
) -> CheckReport:
    """Every problem found goes into the report (see the module's doc): damage is reported,
    not raised. Runs under a shared lock when one can be written (as_reader)."""
    report = CheckReport()
    # Snapshots before the index: what they reference was indexed before they were written;
    # one finished after this listing is not checked (and not taken for damaged).
    snapshots = repo.snapshots()
    index = repo.index
    for name, reason in sorted(repo.damage.items()):
        report.errors.append(reason)
        report.damaged_objects.append(name)
    report.damaged_snapshots.extend(sorted(repo.damaged_snapshots()))

    packs: dict[bytes, int] = defaultdict(int)  # pack id -> bytes needed
    for _chunk_id, loc in index.items():
        packs[loc.pack_id] = max(packs[loc.pack_id], loc.offset + loc.length)
    report.packs = len(packs)
    report.chunks = len(index)

    packs_check = _PackCheck(repo, report)
    for pack_id, needed in packs.items():
        packs_check.pack(pack_id, needed, read_data, progress)
    bad_chunks = packs_check.bad_chunks
    bad_chunks |= {cid for cid, loc in index.items() if loc.pack_id in packs_check.bad_packs}

    for snapshot in snapshots:
        report.snapshots += 1
        _check_snapshot(repo, snapshot, bad_chunks, report)

    _count_leftovers(repo, report, set(packs))
    return report


class _PackCheck:
    """Checks packs one by one into the report: the packs found damaged as a whole (missing,
    truncated, header unreadable), and the chunks found damaged in packs read through."""

    def __init__(self, repo: Repository, report: CheckReport) -> None:
        self.repo = repo
        self.report = report
        self.bad_packs: set[bytes] = set()
        self.bad_chunks: set[bytes] = set()

    def _bad_pack(self, pack_id: bytes, message: str) -> None:
        self.report.errors.append(message)
        self.report.damaged_objects.append(pack_name(pack_id))
        self.bad_packs.add(pack_id)

    def pack(
        self,
        pack_id: bytes,
        needed: int,
        read_data: bool,
        progress: Callable[[str], None] | None,
    ) -> None:
        """The pack exists and holds the `needed` bytes the index points into; with read_data,
        its hash, header and every blob are verified too."""
        repo = self.repo
        name = pack_name(pack_id)
        short = pack_id.hex()[:16]
        if not repo.backend.exists(name):
            self._bad_pack(pack_id, f"pack {short} is missing")
            return
        size = repo.backend.size(name)
        if size < needed:
            self._bad_pack(
                pack_id, f"pack {short} is truncated: {size} bytes, index needs {needed}"
            )
            return
        if read_data:
            if progress:
                progress(f"reading pack {short}")
            self._read_through(pack_id, repo.backend.read(name))

    def _read_through(self, pack_id: bytes, data: bytes) -> None:
        repo = self.repo
        short = pack_id.hex()[:16]
        if blake3.blake3(data).digest() != pack_id:
            self._bad_pack(pack_id, f"pack {short} does not match its hash")
        try:
            entries = read_header(repo.sealer, data, f"pack {short}")
        except MoverError as exc:
            if pack_id not in self.bad_packs:
                self._bad_pack(pack_id, str(exc))
            self.bad_packs.add(pack_id)
            return
        # Every blob verified here, from the pack already in memory: once per chunk, not
        # once per snapshot that references it. A pack whose hash fails keeps its good
        # blobs usable: only the bad ones are counted as damage.
        for e in entries:
            sealed = data[e.offset : e.offset + e.length]
            try:
                blob.decode(repo.master, repo.sealer, e.chunk_id, sealed)
            except MoverError as exc:
                self.report.errors.append(f"pack {short}: {exc}")
                self.bad_chunks.add(e.chunk_id)
        self.bad_packs.discard(pack_id)  # its header and blobs were read: bad_chunks says which


def _check_snapshot(
    repo: Repository, snapshot: Snapshot, bad_chunks: set[bytes], report: CheckReport
) -> None:
    """The snapshot's tree is readable and every chunk it names is indexed; a snapshot that
    fails either, or names a chunk in `bad_chunks`, is reported damaged."""
    index = repo.index
    unindexed = damaged_chunks = 0
    first: bytes | None = None
    tree_error = None
    try:
        for _node_id, node in nodes(repo.read_blob, bytes.fromhex(snapshot.tree)):
            for chunk_id in leaf_chunks(node):
                if chunk_id not in index:
                    unindexed += 1
                    first = first or chunk_id
                elif chunk_id in bad_chunks:
                    damaged_chunks += 1
    except MoverError as exc:
        tree_error = str(exc)
    short = snapshot.id[:8]
    if tree_error is not None:
        report.errors.append(f"snapshot {short}: tree unreadable: {tree_error}")
    if unindexed:
        assert first is not None
        report.errors.append(
            f"snapshot {short}: {plural(unindexed, 'chunk')} in no index "
            f"(first: {first.hex()[:16]})"
        )
    if tree_error is not None or unindexed or damaged_chunks:
        report.damaged_snapshots.append(snapshot.id)


def _count_leftovers(repo: Repository, report: CheckReport, indexed: set[bytes]) -> None:
    """Packs that no index names and temporary files: left by writers that were killed (or
    written by backups still running). Not damage; prune removes them after its grace."""
    condemned: set[str] = set()
    for name in repo.backend.list("gc/"):
        if name.endswith(".writers"):
            continue
        try:
            doc = json.loads(repo.sealer.open(repo.backend.read(name), b"gc", name))
        except MoverError:
            continue
        condemned.update(doc.get("packs", []))
    for name in repo.backend.list("data/"):
        pack_hex = name.rsplit("/", 1)[1]
        try:
            pack_id = bytes.fromhex(pack_hex)
        except ValueError:
            continue
        if pack_id not in indexed and pack_hex not in condemned:
            report.unindexed_packs += 1
    leftovers = getattr(base_of(repo.backend), "leftovers", None)
    if leftovers is not None:
        report.temp_files = len(leftovers())
