"""Repairs: the index rebuilt from the packs, unreadable snapshots removed, lost data healed
from a replica, and keys and config restored from one.

Every repair writes before it deletes, so a crash (kill -9) at any point leaves duplicates at
worst, never a chunk that was readable before and is not after, and running the same repair
again finishes it:

- rebuild_index: new index files naming every blob of every pack are written, then the index
  files listed before the scan are deleted. Packs are listed *after* the index files: a backup
  that wrote an index file before that listing wrote its packs before it too, so they are
  scanned; index files written later are not deleted.
- repair_data: blobs are copied into new packs (good blobs of damaged packs, and what the
  replica holds of what is lost) and indexed, then the index is rebuilt without the damaged
  packs, then those are deleted.

Repairs take the exclusive lock (as prune does), so two never run at once and no prune runs
beside them; backups may go on writing.
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from mover.content import blob
from mover.content.index import Index, Location
from mover.content.pack import PackEntry, pack_name
from mover.crypto import KdfParams, Sealer
from mover.errors import (
    MoverError,
    ObjectNotFound,
    RepositoryError,
    WrongPassword,
)
from mover.maintenance.packscan import (
    PackScan,
    damage_is_permanent,
    scan_packs,
    stored_pack_ids,
)
from mover.objects.locks import Lock, list_locks, writer
from mover.objects.packwriter import PackWriter, upload_threads
from mover.objects.repository import (
    CONFIG,
    FORMAT_VERSION,
    IndexWriter,
    Repository,
    unlock_master,
    write_key,
)
from mover.objects.snapshot import Snapshot
from mover.objects.tree import Unreadable, children, leaf_chunks, walk
from mover.storage.base import Backend
from mover.text import plural

Progress = Callable[[str], None]


def _quiet(_message: str) -> None:
    pass


# -- repair index -----------------------------------------------------------------------------


@dataclass
class IndexRepairStats:
    packs: int = 0
    chunks: int = 0
    index_files_written: int = 0
    index_files_deleted: int = 0
    damaged_packs: dict[str, str] = field(default_factory=dict)  # pack name -> why
    bad_blobs: int = 0
    excluded_packs: int = 0

    def as_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


def _exclusive(repo: Repository) -> Lock:
    lock = Lock(repo, "exclusive")
    lock.acquire()
    repo.lock = lock
    return lock


def _ensure_held(repo: Repository) -> None:
    if repo.lock is not None:
        repo.lock.ensure_held()


def _release(repo: Repository, lock: Lock) -> None:
    repo.lock = None
    lock.release()
    repo._index = None  # re-read on next use
    repo.damage = {k: v for k, v in repo.damage.items() if not k.startswith("index/")}


def rebuild_index(
    repo: Repository,
    read_data: bool = False,
    progress: Progress | None = None,
    threads: int = 8,
) -> IndexRepairStats:
    """`mover repair index`: the index rebuilt from the packs' headers (with read_data, from
    every blob, verified); the old index files, damaged or not, are replaced."""
    lock = _exclusive(repo)
    try:
        return _rebuild(repo, read_data, progress or _quiet, threads, exclude=set())
    finally:
        _release(repo, lock)


def _rebuild(
    repo: Repository,
    read_data: bool,
    say: Progress,
    threads: int,
    exclude: set[bytes],
    stats: IndexRepairStats | None = None,
) -> IndexRepairStats:
    stats = stats or IndexRepairStats()
    old = sorted(repo.backend.list("index/"))
    pack_ids = stored_pack_ids(repo)  # after the index files: see the module's doc
    what = "every byte of" if read_data else "the headers of"
    say(f"reading {what} {plural(len(pack_ids), 'pack')}")
    out = IndexWriter(repo)
    for scan in scan_packs(repo, [p for p in pack_ids if p not in exclude], read_data, threads):
        if scan.damage is not None:
            stats.damaged_packs[pack_name(scan.pack_id)] = scan.damage
        stats.bad_blobs += len(scan.bad_blobs)
        if scan.entries:
            stats.packs += 1
        for e in scan.entries:
            out.add(scan.pack_id, e)
            stats.chunks += 1
        if stats.packs % 256 == 0:
            _ensure_held(repo)
    stats.excluded_packs = len(exclude)
    out.flush()
    stats.index_files_written += len(out.names)
    _ensure_held(repo)  # taken for dead meanwhile: another repair may be running
    written = set(out.names)
    for name in old:
        if name in written:
            continue  # identical content, same name
        with contextlib.suppress(ObjectNotFound):
            repo.backend.delete(name)
            stats.index_files_deleted += 1
    return stats


# -- repair snapshots -------------------------------------------------------------------------


@dataclass
class SnapshotDamage:
    snapshot: Snapshot
    bad_ranges: list[tuple[int, int, str]]  # (offset, length, why), merged

    @property
    def bad_bytes(self) -> int:
        return sum(length for _, length, _ in self.bad_ranges)


@dataclass
class SnapshotRepairReport:
    removed: dict[str, str] = field(default_factory=dict)  # id -> why it cannot be read
    partial: list[SnapshotDamage] = field(default_factory=list)  # kept
    checked: int = 0

    def as_dict(self, dry_run: bool) -> dict[str, object]:
        return {
            "dry_run": dry_run,
            "removed" if not dry_run else "would_remove": [
                {"id": i, "reason": r} for i, r in sorted(self.removed.items())
            ],
            "partial": [
                {
                    "id": d.snapshot.id,
                    "bad_bytes": d.bad_bytes,
                    "ranges": [
                        {"offset": o, "length": n, "reason": why} for o, n, why in d.bad_ranges
                    ],
                }
                for d in self.partial
            ],
            "checked": self.checked,
        }


def _merge(ranges: list[tuple[int, int, str]], offset: int, length: int, why: str) -> None:
    if ranges and ranges[-1][0] + ranges[-1][1] == offset:
        start, n, first = ranges[-1]
        ranges[-1] = (start, n + length, first)
    else:
        ranges.append((offset, length, why))


def _unusable_packs(repo: Repository, index: Index) -> dict[bytes, str]:
    """Packs the index names that are missing or shorter than it needs (no data is read)."""
    needed: dict[bytes, int] = {}
    for _chunk_id, loc in index.items():
        needed[loc.pack_id] = max(needed.get(loc.pack_id, 0), loc.offset + loc.length)
    bad = {}
    for pack_id, n in needed.items():
        short = pack_id.hex()[:16]
        try:
            size = repo.backend.size(pack_name(pack_id))
        except ObjectNotFound:
            bad[pack_id] = f"pack {short} is missing"
            continue
        if size < n:
            bad[pack_id] = f"pack {short} is truncated"
    return bad


def snapshot_damage(
    repo: Repository, snapshot: Snapshot, unusable: dict[bytes, str]
) -> list[tuple[int, int, str]]:
    """The byte ranges of a snapshot that cannot be restored: unreadable tree nodes, chunks
    in no index, chunks in missing or truncated packs."""
    ranges: list[tuple[int, int, str]] = []
    index = repo.index
    for extent in walk(repo.read_blob, bytes.fromhex(snapshot.tree), snapshot.size):
        if isinstance(extent, Unreadable):
            _merge(ranges, extent.offset, extent.length, extent.reason)
            continue
        if extent.chunk_id is None:
            continue
        location = index.get(extent.chunk_id)
        if location is None:
            why = f"chunk {extent.chunk_id.hex()[:16]} is in no index"
        elif location.pack_id in unusable:
            why = unusable[location.pack_id]
        else:
            continue
        _merge(ranges, extent.offset, extent.length, why)
    return ranges


def repair_snapshots(
    repo: Repository, dry_run: bool = False, progress: Progress | None = None
) -> SnapshotRepairReport:
    """`mover repair snapshots`: snapshot objects that cannot be read are removed (with
    dry_run, only listed); readable snapshots whose data is partly lost are reported with the
    ranges they cannot restore, and kept: `repair data --from` a replica may bring it back."""
    say = progress or _quiet
    report = SnapshotRepairReport()
    lock = _exclusive(repo)
    try:
        snapshots = repo.snapshots()
        report.removed = repo.damaged_snapshots()
        unusable = _unusable_packs(repo, repo.index)
        for snapshot in snapshots:
            say(f"checking snapshot {snapshot.id[:8]}")
            report.checked += 1
            ranges = snapshot_damage(repo, snapshot, unusable)
            if ranges:
                report.partial.append(SnapshotDamage(snapshot, ranges))
        if not dry_run:
            lock.ensure_held()
            for snapshot_id in report.removed:
                with contextlib.suppress(ObjectNotFound):
                    repo.backend.delete(f"snapshots/{snapshot_id}")
                repo.damage.pop(f"snapshots/{snapshot_id}", None)
    finally:
        _release(repo, lock)
    return report


# -- repair data ------------------------------------------------------------------------------


@dataclass
class DataRepairStats:
    packs_scanned: int = 0
    damaged_packs: dict[str, str] = field(default_factory=dict)  # pack name -> why
    blobs_copied: int = 0  # good blobs moved out of damaged packs
    healed: int = 0  # blobs fetched from the replica
    healed_bytes: int = 0
    unhealed: list[str] = field(default_factory=list)  # chunk ids the replica lacks too
    unhealed_snapshots: list[str] = field(default_factory=list)
    damaged_packs_deleted: int = 0
    damaged_packs_kept: int = 0  # backups were running: a later run deletes them
    index: IndexRepairStats = field(default_factory=IndexRepairStats)

    def as_dict(self) -> dict[str, object]:
        body = dict(self.__dict__)
        body["index"] = self.index.as_dict()
        return body


# Where `good` says a blob is when it was fetched from the replica into a pack not yet stored.
FETCHED = b"\0" * 32


def repair_data(
    repo: Repository,
    replica: Repository,
    progress: Progress | None = None,
    threads: int = 8,
) -> DataRepairStats:
    """`mover repair data --from REPLICA`: every pack is read and verified; good blobs of
    damaged packs are copied into new packs; every blob a snapshot needs that is not stored
    intact here is fetched from the replica (same master key, so the same ids), verified and
    stored again; the index is rebuilt without the damaged packs, which are then deleted."""
    if replica.master != repo.master:
        raise RepositoryError(
            f"{replica.backend.location} is not a replica of this repository (other keys): "
            "repair data heals only from a copy made by `mover replicate`"
        )
    say = progress or _quiet
    stats = DataRepairStats()
    lock = _exclusive(repo)
    try:
        with writer(replica, required=False):  # a prune of the replica must wait for us
            _repair_data(repo, replica, stats, say, threads)
    finally:
        _release(repo, lock)
    return stats


def _repair_data(
    repo: Repository,
    replica: Repository,
    stats: DataRepairStats,
    say: Progress,
    threads: int,
) -> None:
    pack_ids = stored_pack_ids(repo)
    say(f"reading and verifying {plural(len(pack_ids), 'pack')}")
    # chunk id -> an intact copy here: in an intact pack if there is one, else the good blob of
    # a damaged pack (copied to a new pack below), else FETCHED.
    good = Index()
    damaged: list[PackScan] = []
    for scan in scan_packs(repo, pack_ids, read_data=True, threads=threads):
        stats.packs_scanned += 1
        if scan.damage is not None:
            stats.damaged_packs[pack_name(scan.pack_id)] = scan.damage
            damaged.append(scan)
            continue
        for e in scan.entries:
            good.add(e.chunk_id, Location(scan.pack_id, e.offset, e.length, e.kind))
    only_in_damaged: dict[bytes, list[PackEntry]] = {}
    for scan in damaged:
        for e in scan.entries:
            if e.chunk_id not in good:
                good.add(e.chunk_id, Location(scan.pack_id, e.offset, e.length, e.kind))
                only_in_damaged.setdefault(scan.pack_id, []).append(e)

    uploads = upload_threads(repo)
    with (
        ThreadPoolExecutor(uploads, thread_name_prefix="mover-repair") as uploader,
        PackWriter(repo, uploader, uploads) as packs,
    ):
        for pack_id, entries in only_in_damaged.items():
            stats.blobs_copied += _copy_blobs(repo, pack_id, entries, packs)
        say("walking every snapshot for what is lost")
        healer = _Healer(repo, replica, good, packs, stats)
        for snapshot in repo.snapshots():
            if not healer.snapshot(snapshot):
                stats.unhealed_snapshots.append(snapshot.id)
        packs.flush_index()
    stats.unhealed = sorted(c.hex() for c in healer.lost)

    # The index again, from the packs, without the damaged ones: no index file names them
    # any more when they are deleted.
    say("rebuilding the index")
    _rebuild(repo, False, say, threads, {scan.pack_id for scan in damaged}, stats.index)
    _ensure_held(repo)
    running = [lock for lock in list_locks(repo) if lock.kind == "shared" and not lock.stale]
    for scan in damaged:
        if running:
            # A running backup may still hold an index that names these packs; a later
            # repair (or prune: they are unindexed now) deletes them.
            stats.damaged_packs_kept += 1
            continue
        with contextlib.suppress(ObjectNotFound):
            repo.backend.delete(pack_name(scan.pack_id))
        stats.damaged_packs_deleted += 1


def _copy_blobs(
    repo: Repository, pack_id: bytes, entries: list[PackEntry], packs: PackWriter
) -> int:
    """The good blobs of a damaged pack, sealed as they are, into new packs."""
    name = pack_name(pack_id)
    for e in entries:
        packs.add(e.chunk_id, repo.backend.read(name, e.offset, e.length), e.kind)
    return len(entries)


class _Healer:
    """Walks snapshot trees; every node and chunk not stored intact here is fetched from the
    replica, verified, and packed here. Tree nodes are read here when they can be, else from
    the replica, so that what is lost below a lost node is found too."""

    def __init__(
        self,
        repo: Repository,
        replica: Repository,
        good: Index,
        packs: PackWriter,
        stats: DataRepairStats,
    ) -> None:
        self.repo = repo
        self.replica = replica
        self.good = good
        self.packs = packs
        self.stats = stats
        self.lost: set[bytes] = set()  # bounded by the damage, not by the repository

    def stored(self, chunk_id: bytes) -> bool:
        """Whether the blob is stored intact here (now): fetched from the replica if not."""
        if chunk_id in self.good:
            return True
        if chunk_id in self.lost:
            return False
        fetched = self._fetch(chunk_id)
        if fetched is None:
            self.lost.add(chunk_id)
            return False
        sealed, kind = fetched
        self.packs.add(chunk_id, sealed, kind)
        self.good.add(chunk_id, Location(FETCHED, 0, 0, kind))
        self.stats.healed += 1
        self.stats.healed_bytes += len(sealed)
        return True

    def _fetch(self, chunk_id: bytes) -> tuple[bytes, int] | None:
        """(sealed blob, kind) from the replica, verified; None when it lacks the blob or its
        copy is damaged too."""
        location = self.replica.index.get(chunk_id)
        if location is None:
            return None
        try:
            sealed = self.replica.backend.read(
                pack_name(location.pack_id), location.offset, location.length
            )
            blob.decode(self.replica.master, self.replica.sealer, chunk_id, sealed)
        except MoverError as exc:
            if not damage_is_permanent(exc):
                raise
            return None
        return sealed, location.kind

    def _load(self, node_id: bytes) -> bytes:
        location = self.good.get(node_id)
        assert location is not None
        if location.pack_id == FETCHED:
            return self.replica.read_blob(node_id)
        sealed = self.repo.backend.read(
            pack_name(location.pack_id), location.offset, location.length
        )
        return blob.decode(self.repo.master, self.repo.sealer, node_id, sealed)

    def snapshot(self, snapshot: Snapshot) -> bool:
        """True when everything the snapshot needs is stored intact here now."""
        whole = True
        stack = [bytes.fromhex(snapshot.tree)]
        while stack:
            node_id = stack.pop()
            if not self.stored(node_id):
                whole = False
                continue
            node = self._load(node_id)
            stack.extend(children(node))
            for chunk_id in leaf_chunks(node):
                whole = self.stored(chunk_id) and whole
        return whole


# -- repair config ----------------------------------------------------------------------------


@dataclass
class ConfigRepairReport:
    config_restored: bool = False
    key_written: str | None = None  # name of the new key file

    def as_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


def repair_config(
    backend: Backend, replica: Repository, password: bytes, kdf: KdfParams | None = None
) -> ConfigRepairReport:
    """`mover repair config --from REPLICA`: a repository whose config is damaged or whose
    key files cannot be read gets them back from a replica (which shares its master key): the
    config sealed by that key, and a new key file wrapping it with `password`. Nothing that
    can still be read is replaced. The replica must prove it shares the key: the repository's
    config, or else one of its snapshots or index files, must open with the replica's key."""
    report = ConfigRepairReport()
    sealer = replica.sealer
    doc = _config_doc(backend)
    if not _proves_replica(backend, sealer, doc):
        raise RepositoryError(
            f"{replica.backend.location} is not a replica of {backend.location} (its key opens "
            "none of this repository's objects); nothing was changed"
        )
    if doc is None or not _opens(sealer, doc.get("sealed"), b"config"):
        body = {
            "mover_repository": FORMAT_VERSION,
            "id": (doc or {}).get("id") or replica.id,
            "sealed": base64.b64encode(sealer.seal(replica.config.to_json(), b"config")).decode(),
        }
        with contextlib.suppress(ObjectNotFound):
            backend.delete(CONFIG)  # objects are never rewritten in place: delete, then write
        backend.write(CONFIG, json.dumps(body).encode())
        report.config_restored = True
    try:
        unlock_master(backend, password)
    except WrongPassword:
        pass  # an intact key exists and opens with another password: nothing to restore
    except RepositoryError:
        report.key_written = write_key(backend, replica.master, password, kdf or KdfParams())
    return report


def _config_doc(backend: Backend) -> dict[str, Any] | None:
    """The config's document; of one damaged past parsing, the repository's id if it can
    still be read (a restored config keeps it: it must not take the replica's)."""
    try:
        raw = backend.read(CONFIG)
    except ObjectNotFound:
        return None
    try:
        doc = json.loads(raw)
    except ValueError:
        found = re.search(rb'"id": ?"([0-9a-f]{32})"', raw)
        return {"id": found.group(1).decode()} if found else None
    return doc if isinstance(doc, dict) else None


def _opens(sealer: Sealer, sealed_b64: object, aad: bytes) -> bool:
    try:
        sealer.open(base64.b64decode(str(sealed_b64)), aad, "config")
    except (MoverError, ValueError):
        return False
    return True


def _proves_replica(backend: Backend, sealer: Sealer, doc: dict[str, Any] | None) -> bool:
    if doc is not None and _opens(sealer, doc.get("sealed"), b"config"):
        return True
    for prefix, aad in (("snapshots/", b"snapshot"), ("index/", b"index")):
        for name in backend.list(prefix):
            with contextlib.suppress(MoverError):
                sealer.open(backend.read(name), aad, name)
                return True
    return False


__all__ = [
    "ConfigRepairReport",
    "DataRepairStats",
    "IndexRepairStats",
    "SnapshotRepairReport",
    "rebuild_index",
    "repair_config",
    "repair_data",
    "repair_snapshots",
    "snapshot_damage",
]
