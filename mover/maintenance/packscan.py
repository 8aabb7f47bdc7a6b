"""Scanning packs, for the repairs (mover.maintenance.repair): what each stored pack holds, its
header authenticated, and with read_data every blob decrypted and checked against its id.

Scans run on a thread pool with a bounded window in flight (SCAN_WINDOW), and come out in
order. A pack whose header cannot be read is salvaged through the index as loaded: what the
index says it holds, blob by blob, verified.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import blake3

from mover.content import blob
from mover.content.pack import PackEntry, pack_name, read_header, read_pack_header
from mover.errors import MoverError, ObjectNotFound, StorageError
from mover.objects.repository import Repository

SCAN_WINDOW = 8  # packs read ahead of the index writer (whole packs with read_data: 16 MiB each)


def damage_is_permanent(exc: MoverError) -> bool:
    """A temporary storage failure is not damage: the repair stops rather than drop a pack."""
    return not (isinstance(exc, StorageError) and exc.temporary)


@dataclass
class PackScan:
    pack_id: bytes
    entries: list[PackEntry]  # blobs that can be indexed (verified, with read_data)
    damage: str | None = None  # why the pack is damaged; None: intact (as far as was read)
    bad_blobs: list[bytes] = field(default_factory=list)  # ids of blobs that failed to verify


def _scan_pack(repo: Repository, pack_id: bytes, read_data: bool) -> PackScan:
    """What a pack holds. Without read_data only its header is read (and authenticated);
    with it, the whole pack: its hash, and every blob decrypted and checked against its id."""
    short = pack_id.hex()[:16]
    try:
        if not read_data:
            return PackScan(pack_id, read_pack_header(repo.backend, repo.sealer, pack_id))
        data = repo.backend.read(pack_name(pack_id))
    except ObjectNotFound:
        return PackScan(pack_id, [], f"pack {short} vanished while it was scanned")
    except MoverError as exc:
        if not damage_is_permanent(exc):
            raise
        return PackScan(pack_id, [], str(exc))
    damage = None if blake3.blake3(data).digest() == pack_id else f"pack {short} is damaged"
    try:
        entries = read_header(repo.sealer, data, f"pack {short}")
    except MoverError as exc:
        return PackScan(pack_id, [], str(exc))
    good, bad = [], []
    for e in entries:
        try:
            blob.decode(repo.master, repo.sealer, e.chunk_id, data[e.offset : e.offset + e.length])
            good.append(e)
        except MoverError:
            bad.append(e.chunk_id)
    if bad and damage is None:
        damage = f"pack {short} holds blobs that fail verification"
    return PackScan(pack_id, good, damage, bad)


def stored_pack_ids(repo: Repository) -> list[bytes]:
    """The ids of the packs under data/, sorted; what is not named like a pack is left out."""
    ids = []
    for name in repo.backend.list("data/"):
        try:
            pack_id = bytes.fromhex(name.rsplit("/", 1)[1])
        except ValueError:
            continue  # not a pack (a stray file); never touched
        if len(pack_id) == 32:
            ids.append(pack_id)
    return sorted(ids)


def scan_packs(
    repo: Repository, pack_ids: list[bytes], read_data: bool, threads: int = 8
) -> Iterator[PackScan]:
    """Every pack scanned, in order, a bounded window of them in flight. A pack whose header
    cannot be read (truncated, damaged) is salvaged through the index as loaded: the blobs it
    names there that are still whole are verified and kept (see _salvage)."""
    headerless: list[PackScan] = []
    with ThreadPoolExecutor(threads, thread_name_prefix="mover-scan") as pool:
        inflight: deque[Future[PackScan]] = deque()

        def done(scan: PackScan) -> PackScan | None:
            if scan.damage is not None and not scan.entries:
                headerless.append(scan)
                return None
            return scan

        for pack_id in pack_ids:
            if len(inflight) >= SCAN_WINDOW and (scan := done(inflight.popleft().result())):
                yield scan
            inflight.append(pool.submit(_scan_pack, repo, pack_id, read_data))
        while inflight:
            if (scan := done(inflight.popleft().result())) is not None:
                yield scan
    yield from _salvage(repo, headerless)


def _salvage(repo: Repository, scans: list[PackScan]) -> Iterator[PackScan]:
    """Blobs of packs without a readable header, found through the index as it was loaded
    (damaged index files skipped): each blob still within the stored bytes is read and
    verified; those that pass are kept, so a truncated pack loses only what was cut off."""
    if not scans:
        return
    by_pack: dict[bytes, list[PackEntry]] = {scan.pack_id: [] for scan in scans}
    for chunk_id, loc in repo.index.items():
        found = by_pack.get(loc.pack_id)
        if found is not None:
            found.append(PackEntry(chunk_id, loc.offset, loc.length, loc.kind))
    for scan in scans:
        name = pack_name(scan.pack_id)
        try:
            size = repo.backend.size(name)
        except ObjectNotFound:
            size = 0
        for e in sorted(by_pack[scan.pack_id], key=lambda e: e.offset):
            if e.offset + e.length > size:
                scan.bad_blobs.append(e.chunk_id)
                continue
            try:
                sealed = repo.backend.read(name, e.offset, e.length)
                blob.decode(repo.master, repo.sealer, e.chunk_id, sealed)
            except MoverError as exc:
                if not damage_is_permanent(exc):
                    raise
                scan.bad_blobs.append(e.chunk_id)
                continue
            scan.entries.append(e)
        yield scan
