"""`check`: structure (every snapshot's tree and chunks are indexed, packs exist and are long
enough), and with read_data every byte (pack hashes, every blob authenticated and matching its
id). Problems are collected, not raised, so one report names every affected snapshot."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

import blake3

from mover.content import blob
from mover.content.pack import pack_name, read_header
from mover.errors import MoverError
from mover.locks import as_reader
from mover.repository import Repository
from mover.tree import leaf_chunks, nodes


@dataclass
class CheckReport:
    snapshots: int = 0
    packs: int = 0
    chunks: int = 0
    errors: list[str] = field(default_factory=list)
    damaged_snapshots: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


@as_reader
def run_check(
    repo: Repository, read_data: bool = False, progress: Callable[[str], None] | None = None
) -> CheckReport:
    report = CheckReport()
    # Snapshots before the index: what they reference was indexed before they were written;
    # one finished after this listing is not checked (and not taken for damaged).
    snapshots = repo.snapshots()
    index = repo.index
    packs: dict[bytes, int] = defaultdict(int)  # pack id -> bytes needed
    for _chunk_id, loc in index.items():
        packs[loc.pack_id] = max(packs[loc.pack_id], loc.offset + loc.length)
    bad_chunks: set[bytes] = set()
    report.packs = len(packs)
    report.chunks = len(index)

    bad_packs: set[bytes] = set()
    for pack_id, needed in packs.items():
        name = pack_name(pack_id)
        if not repo.backend.exists(name):
            report.errors.append(f"pack {pack_id.hex()[:16]} is missing")
            bad_packs.add(pack_id)
            continue
        size = repo.backend.size(name)
        if size < needed:
            report.errors.append(
                f"pack {pack_id.hex()[:16]} is truncated: {size} bytes, index needs {needed}"
            )
            bad_packs.add(pack_id)
            continue
        if read_data:
            if progress:
                progress(f"reading pack {pack_id.hex()[:16]}")
            data = repo.backend.read(name)
            if blake3.blake3(data).digest() != pack_id:
                report.errors.append(f"pack {pack_id.hex()[:16]} does not match its hash")
                bad_packs.add(pack_id)
                continue
            try:
                entries = read_header(repo.sealer, data, f"pack {pack_id.hex()[:16]}")
            except MoverError as exc:
                report.errors.append(str(exc))
                bad_packs.add(pack_id)
                continue
            # Every blob verified here, from the pack already in memory: once per chunk, not
            # once per snapshot that references it.
            for e in entries:
                sealed = data[e.offset : e.offset + e.length]
                try:
                    blob.decode(repo.master, repo.sealer, e.chunk_id, sealed)
                except MoverError as exc:
                    report.errors.append(f"pack {pack_id.hex()[:16]}: {exc}")
                    bad_chunks.add(e.chunk_id)

    bad_chunks |= {cid for cid, loc in index.items() if loc.pack_id in bad_packs}
    for snapshot in snapshots:
        report.snapshots += 1
        damaged = False
        try:
            for _node_id, node in nodes(repo.read_blob, bytes.fromhex(snapshot.tree)):
                for chunk_id in leaf_chunks(node):
                    if chunk_id not in index:
                        report.errors.append(
                            f"snapshot {snapshot.id[:8]}: chunk {chunk_id.hex()[:16]} "
                            "is in no index"
                        )
                        damaged = True
                    elif chunk_id in bad_chunks:
                        damaged = True
        except MoverError as exc:
            report.errors.append(f"snapshot {snapshot.id[:8]}: tree unreadable: {exc}")
            damaged = True
        if damaged:
            report.damaged_snapshots.append(snapshot.id)
    return report
