"""repack: the live blobs of partly used packs copied, still sealed, into new packs, for prune's
phase 1 (mover.maintenance.prune), which then condemns the originals.

Memory stays bounded: packs are taken REPACK_GROUP at a time, and for each group one scan of
the index (native code, in batches) picks the live entries; each original pack is read in one
request, not one a blob."""

from __future__ import annotations

import array

from mover._native import index_run as native
from mover.content.index import RECORD, unpack_records
from mover.content.pack import PackBuilder, pack_name
from mover.maintenance.reachable import LiveSet
from mover.objects.repository import IndexWriter, Repository

# Packs repacked per scan of the index: bounds the live entries held at once.
REPACK_GROUP = 1024


def repack(
    repo: Repository,
    live: LiveSet,
    pack_ids: list[bytes],
    numbers: list[int],
    writer: IndexWriter,
) -> int:
    """Copies the live blobs of the packs numbered `numbers` (positions in `pack_ids`, the
    index's pack list) into new packs, stored and added to `writer`, which is flushed before
    returning: the copies are indexed before anything points away from the originals. `live`
    is squeezed. Returns the number of packs written."""
    index = repo.index
    scratch = array.array("Q", bytes(8 * len(pack_ids)))
    builder = PackBuilder()
    written = 0
    for start in range(0, len(numbers), REPACK_GROUP):
        group = bytearray(len(pack_ids))
        for number in numbers[start : start + REPACK_GROUP]:
            group[number] = 1
        wanted: dict[int, list[tuple[int, int, int, bytes]]] = {}
        for records in index.record_batches():
            selected = native.flag_packs(records, group)
            flags = bytearray(len(selected) // RECORD)
            native.account(
                selected, memoryview(live.values), memoryview(scratch), memoryview(scratch), flags
            )
            for is_live, (chunk_id, number, offset, length, kind) in zip(
                flags, unpack_records(selected), strict=True
            ):
                if is_live:
                    wanted.setdefault(number, []).append((offset, length, kind, chunk_id))
        for number, blobs in wanted.items():
            data = repo.backend.read(pack_name(pack_ids[number]))  # one request, not one a blob
            for offset, length, kind, chunk_id in sorted(blobs):
                builder.add(chunk_id, data[offset : offset + length], kind)
                if len(builder) >= repo.config.pack_size:
                    written += _write_pack(repo, builder, writer)
                    builder = PackBuilder()
    written += _write_pack(repo, builder, writer)
    writer.flush()  # the copies are indexed before anything points away from the originals
    return written


def _write_pack(repo: Repository, builder: PackBuilder, writer: IndexWriter) -> int:
    """Stores the pack and adds its entries to `writer`; the number of packs written (0 or 1)."""
    if not builder.entries:
        return 0
    pack_id, data = builder.finish(repo.sealer)
    repo.write_pack(pack_id, data)
    for e in builder.entries:
        writer.add(pack_id, e)
    return 1
