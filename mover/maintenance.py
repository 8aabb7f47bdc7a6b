"""forget (drop snapshots) and prune (drop what no snapshot references).

prune writes before it deletes: live blobs of partly-used packs are copied, still sealed, into
new packs; then one index of everything live is written; only then are old index files and
unreferenced packs deleted. A crash at any step leaves duplicates, never a missing chunk.

Under S3 Object Lock, deletes of objects still in retention are refused (ObjectLocked): prune
keeps them, counts them in `locked`, and keeps every pack that a kept index file still names, so
the index never points into a deleted pack. A later prune, after the retention, removes them.

Packs that no index names are left by backups that died before writing their index, or belong
to a backup still running (its index comes after its packs). prune deletes them only once they
are older than a grace period. Not yet safe against a backup running at the same time in
general (see the many-writers issue): run prune when no backup runs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from mover.content.pack import PackBuilder, PackEntry, pack_name
from mover.errors import ObjectLocked
from mover.repository import Repository
from mover.tree import leaf_chunks, nodes

# Repack a pack when less than this share of it is still referenced.
REPACK_BELOW = 0.8


@dataclass
class PruneStats:
    packs_deleted: int = 0
    unindexed_deleted: int = 0
    leftovers_deleted: int = 0
    packs_written: int = 0
    bytes_freed: int = 0
    chunks_dropped: int = 0
    locked: int = 0  # objects prune would delete but Object Lock retention still protects


def forget(repo: Repository, snapshot_ids: list[str]) -> list[str]:
    removed = []
    targets = [repo.find_snapshot(ref) for ref in snapshot_ids]  # all resolved before any delete
    for snapshot in targets:
        repo.backend.delete(f"snapshots/{snapshot.id}")
        removed.append(snapshot.id)
    return removed


def live_chunks(repo: Repository) -> set[bytes]:
    live: set[bytes] = set()
    for snapshot in repo.snapshots():
        for node_id, node in nodes(repo.read_blob, bytes.fromhex(snapshot.tree)):
            live.add(node_id)
            live.update(leaf_chunks(node))
    return live


def prune(repo: Repository, unindexed_grace: float = 3600.0) -> PruneStats:
    stats = PruneStats()
    now = time.time()
    live = live_chunks(repo)
    by_pack: dict[bytes, list[tuple[bytes, int, int, int]]] = {}
    for chunk_id, loc in repo.index.items():
        by_pack.setdefault(loc.pack_id, []).append((chunk_id, loc.offset, loc.length, loc.kind))

    keep: list[tuple[bytes, PackEntry]] = []
    drop: list[bytes] = []
    builder = PackBuilder()
    for pack_id, entries in by_pack.items():
        live_entries = [e for e in entries if e[0] in live]
        total = sum(e[2] for e in entries)
        used = sum(e[2] for e in live_entries)
        stats.chunks_dropped += len(entries) - len(live_entries)
        if used == total:
            keep += [(pack_id, PackEntry(*e)) for e in entries]
            continue
        drop.append(pack_id)
        if used < total * REPACK_BELOW or not live_entries:
            for chunk_id, offset, length, kind in live_entries:
                sealed = repo.backend.read(pack_name(pack_id), offset, length)
                builder.add(chunk_id, sealed, kind)
                if len(builder) >= repo.config.pack_size:
                    keep += _write(repo, builder, stats)
                    builder = PackBuilder()
        else:
            drop.pop()  # mostly live: keep as is, dead blobs and all
            keep += [(pack_id, PackEntry(*e)) for e in live_entries]
            stats.chunks_dropped -= len(entries) - len(live_entries)
    keep += _write(repo, builder, stats)

    old_indexes = list(repo.backend.list("index/"))
    new_index = repo.write_index(keep) if keep else None
    still_named: set[bytes] = set()  # packs that an index we could not delete points into
    for name in old_indexes:
        if name != new_index and not _delete(repo, name, stats):
            still_named.update(loc.pack_id for _, loc in repo.read_index_file(name))
    for pack_id in drop:
        name = pack_name(pack_id)
        if pack_id in still_named:
            continue
        size = repo.backend.size(name)
        if _delete(repo, name, stats):
            stats.bytes_freed += size
            stats.packs_deleted += 1
    indexed = {pack_name(pack_id) for pack_id in by_pack}
    for name in list(repo.backend.list("data/")):
        if name not in indexed and now - repo.backend.mtime(name) >= unindexed_grace:
            size = repo.backend.size(name)
            if _delete(repo, name, stats):
                stats.bytes_freed += size
                stats.unindexed_deleted += 1
    remove_leftovers = getattr(repo.backend, "remove_leftovers", None)
    if remove_leftovers is not None:  # temp files of writers that died mid-write
        stats.leftovers_deleted = remove_leftovers(unindexed_grace)
    repo._index = None  # re-read on next use
    return stats


def _delete(repo: Repository, name: str, stats: PruneStats) -> bool:
    """False when Object Lock retention refused the delete (counted, not an error)."""
    try:
        repo.backend.delete(name)
    except ObjectLocked:
        stats.locked += 1
        return False
    return True


def _write(
    repo: Repository, builder: PackBuilder, stats: PruneStats
) -> list[tuple[bytes, PackEntry]]:
    if not builder.entries:
        return []
    pack_id, data = builder.finish(repo.sealer)
    repo.write_pack(pack_id, data)
    stats.packs_written += 1
    return [(pack_id, e) for e in builder.entries]
