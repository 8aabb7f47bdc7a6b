"""prune: drop what no snapshot references, safe beside backups.

prune runs under the exclusive lock (mover.objects.locks), which only another prune contends for;
backups keep running. Garbage is collected in two phases:

1. *Condemn.* The chunks every snapshot references are collected; each indexed pack is kept,
   repacked (its live blobs are copied, still sealed, into new packs that are indexed at once)
   or condemned. New index files naming every kept and new pack replace the index files read
   (small ones merge: index compaction); condemned packs are in none of them, so backups that
   start from now on never dedup against them. A record `gc/<id>` names the condemned packs,
   the snapshots that existed, and the backups (their shared locks) that were running and may
   still hold the old index.
2. *Delete*, in this or a later prune, once the record is older than the grace period and none
   of those backups is alive: a condemned pack that some index file names again (a backup that
   used it indexed it again before its snapshot), or that a record still waiting names too, is
   left alone; of the others, the entries that a snapshot written since or a checkpoint needs
   and that no index has are indexed again (the pack stays); the rest are deleted.

So a backup running during prune never ends up pointing at a deleted pack, whatever the
interleaving, and a crash at any step leaves duplicates, never a missing chunk: every write
comes before the deletes that depend on it.

Memory does not grow with the volume: the live set is one 8-byte prefix per live chunk (a
prefix shared by two ids only keeps a dead blob), scans of the index go through native code in
batches, repacking proceeds a group of packs at a time, and new index files are written as
they fill.

Under S3 Object Lock, deletes of objects still in retention are refused (ObjectLocked): prune
keeps them, counts them in `locked`, and a condemned pack that a kept index file still names
is not deleted. Packs that no index names (backups that died before writing their index, or
still running ones) are deleted once older than the unindexed grace period.
"""

from __future__ import annotations

import array
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mover._native import index_run as native
from mover.content.index import RECORD, Index, unpack_records
from mover.content.pack import PackEntry, pack_name, read_pack_header
from mover.errors import ObjectLocked, ObjectNotFound, RepositoryError
from mover.maintenance.forget import forget
from mover.maintenance.reachable import Blobs, LiveSet, Named, read_record, write_record
from mover.maintenance.repack import repack
from mover.objects.checkpoint import Held, held_by_checkpoints
from mover.objects.locks import Lock, list_locks
from mover.objects.repository import INDEX_FILE_ENTRIES, IndexWriter, Repository, short_name
from mover.objects.snapshot import Snapshot
from mover.text import plural

# Repack a pack when less than this share of it is still referenced.
REPACK_BELOW = 0.8
# Checkpoints of interrupted backups keep their data this long (7 days).
CHECKPOINT_MAX_AGE = 7 * 86400.0
# How far the clocks of two writers (or a writer and the object store) may disagree.
CLOCK_SKEW = 600.0
# Merge the index files when there are more than this many beyond what their entries need.
COMPACT_SLACK = 8

Progress = Callable[[str], None]


@dataclass
class PruneStats:
    packs_deleted: int = 0
    unindexed_deleted: int = 0
    leftovers_deleted: int = 0
    packs_written: int = 0
    bytes_freed: int = 0
    chunks_dropped: int = 0
    locked: int = 0  # objects prune would delete but Object Lock retention still protects
    packs_condemned: int = 0
    packs_resurrected: int = 0  # condemned, then referenced by a snapshot written meanwhile
    packs_waiting: int = 0  # condemned, waiting for the grace period or running backups
    checkpoints_dropped: int = 0  # older than checkpoint_max_age
    index_files_written: int = 0
    index_files_deleted: int = 0
    waiting_for: list[str] = field(default_factory=list)  # owners of backups that hold deletes

    def as_dict(self) -> dict[str, object]:
        return dict(self.__dict__)

    def count_index_file(self, _name: str) -> None:
        self.index_files_written += 1


def prune(
    repo: Repository,
    unindexed_grace: float = 3600.0,
    grace: float = 0.0,
    repack_below: float = REPACK_BELOW,
    progress: Progress | None = None,
    checkpoint_max_age: float = CHECKPOINT_MAX_AGE,
) -> PruneStats:
    """grace: how old a condemned pack's record must be before the pack is deleted (running
    backups are waited for in any case, see the module's doc)."""
    say = progress or (lambda _message: None)
    stats = PruneStats()
    with Lock(repo, "exclusive") as lock:
        repo.lock = lock  # index writes check it (Repository.write_index)
        try:
            # Snapshots and checkpoints before the index: everything they reference was indexed
            # before they were written, so the index read next covers them.
            snapshots = repo.snapshots()
            held = held_by_checkpoints(repo)
            index = repo.index  # after the lock: what this prune reads is what it replaces
            _refuse_damage(repo)
            loaded = dict(index.files)
            say(f"collecting the chunks of {plural(len(snapshots), 'snapshot')}")
            blobs = Blobs(repo)
            live = LiveSet()
            live.add_snapshots(blobs, snapshots)
            _keep_checkpoints(repo, blobs, live, held, checkpoint_max_age, stats)

            named = _condemn(repo, live, snapshots, loaded, repack_below, stats, say)
            lock.ensure_held()  # taken for dead meanwhile: another prune may be running
            blobs.forget_current()
            _delete_condemned(repo, blobs, named, grace, checkpoint_max_age, stats, say)
            lock.ensure_held()
            live_since = _delete_unindexed(repo, named, unindexed_grace, stats)
            _remove_leftovers(repo, unindexed_grace, live_since, stats)
        finally:
            repo.lock = None
    repo._index = None  # re-read on next use
    return stats


def _refuse_damage(repo: Repository) -> None:
    """Prune decides what is garbage from what it can read: the packs a damaged index file
    names would look unindexed, and the data of a damaged snapshot unreferenced. It deletes
    nothing until the damage is repaired."""
    if not repo.damage:
        return
    names = sorted(repo.damage)
    shown = ", ".join(map(short_name, names[:3])) + (
        f" and {len(names) - 3} more" if len(names) > 3 else ""
    )
    verbs = []
    if any(n.startswith("index/") for n in names):
        verbs.append("`mover repair index`")
    if any(n.startswith("snapshots/") for n in names):
        verbs.append("`mover repair snapshots`")
    raise RepositoryError(
        f"prune refused, nothing was deleted: {len(names)} damaged objects ({shown}) would make "
        f"live data look unreferenced; run {' and '.join(verbs) or '`mover check`'} first"
    )


def _keep_checkpoints(
    repo: Repository,
    blobs: Blobs,
    live: LiveSet,
    checkpoints: list[Held],
    max_age: float,
    stats: PruneStats,
) -> None:
    """What an interrupted backup's checkpoint references stays, so that the next backup of
    its source resumes instead of starting over; checkpoints older than max_age are dropped
    (their source has most likely changed or gone)."""
    for held in checkpoints:
        if held.age > max_age:
            if _delete(repo, held.name, stats):
                stats.checkpoints_dropped += 1
            continue
        live.add_checkpoint(blobs, held)
    live.squeeze()


def _condemn(
    repo: Repository,
    live: LiveSet,
    snapshots: list[Snapshot],
    loaded: dict[str, array.array[int]],
    repack_below: float,
    stats: PruneStats,
    say: Progress,
) -> Named:
    """Phase 1. Returns the packs that index files name afterwards."""
    index = repo.index
    pack_ids = index.pack_ids()
    npacks = len(pack_ids)
    total, used, entries = _usage(index, live, npacks)

    # A mostly used pack is kept whole: its dead blobs stay, and stay indexed (a later backup
    # may dedup against them), until it falls below repack_below.
    keep = bytearray(npacks)
    partly_used: list[int] = []
    condemned: list[bytes] = []
    for number in range(npacks):
        if used[number] and used[number] >= total[number] * repack_below:
            keep[number] = 1
        else:
            if used[number]:
                partly_used.append(number)
            condemned.append(pack_ids[number])
    stats.chunks_dropped = _dropped(index, live, keep) if condemned else 0

    ideal_files = -(-entries // INDEX_FILE_ENTRIES)
    if not condemned and len(loaded) <= ideal_files + COMPACT_SLACK:
        packs = {pack_ids[number] for numbers in loaded.values() for number in numbers}
        unchanged = Named(repo, packs, set(loaded))
        unchanged.refresh()
        return unchanged

    writer = IndexWriter(repo, stats.count_index_file)
    if partly_used:
        say(f"repacking {len(partly_used)} partly used packs")
        stats.packs_written += repack(repo, live, pack_ids, partly_used, writer)
    say("writing the index")
    for records in index.record_batches():
        for chunk_id, number, offset, length, kind in unpack_records(
            native.flag_packs(records, keep)
        ):
            writer.add(pack_ids[number], PackEntry(chunk_id, offset, length, kind))
    writer.flush()

    record_name = None
    if condemned:
        record_name = f"gc/{secrets.token_hex(16)}"
        write_record(repo, record_name, condemned, snapshots)
        stats.packs_condemned = len(condemned)

    named = _retire_index_files(repo, loaded, pack_ids, writer, stats)
    if record_name is not None:
        # Only now is no index naming the condemned packs left to read: backups that start
        # from here on cannot use them; those running may, and phase 2 waits for them. Until
        # this object exists (a crash before it), phase 2 waits for every running backup.
        writers = [lock.name for lock in list_locks(repo) if lock.kind == "shared"]
        repo.backend.write(
            f"{record_name}.writers", repo.sealer.seal(json.dumps(writers).encode(), b"gc")
        )
    return named


def _usage(
    index: Index, live: LiveSet, npacks: int
) -> tuple[array.array[int], array.array[int], int]:
    """(blob bytes of each pack, of them the live ones, the index's entries), packs by number."""
    total = array.array("Q", bytes(8 * npacks))
    used = array.array("Q", bytes(8 * npacks))
    entries = 0
    for records in index.record_batches():
        flags = bytearray(len(records) // RECORD)
        native.account(records, memoryview(live.values), memoryview(total), memoryview(used), flags)
        entries += len(flags)
    return total, used, entries


def _retire_index_files(
    repo: Repository,
    loaded: dict[str, array.array[int]],
    pack_ids: list[bytes],
    writer: IndexWriter,
    stats: PruneStats,
) -> Named:
    """The index files read (`loaded`: name -> its packs' numbers) deleted, now that `writer`'s
    replace them; returns the packs that index files name afterwards."""
    named = Named(repo, set(writer.packs), set(writer.names))
    for name, numbers in loaded.items():
        if name in writer.names:
            continue  # an index file identical to one just written (same name)
        if _delete(repo, name, stats):
            stats.index_files_deleted += 1
        else:  # kept by Object Lock: what it names stays named
            named.packs.update(pack_ids[n] for n in numbers)
            named.files.add(name)
    named.refresh()
    return named


def _dropped(index: Index, live: LiveSet, keep: bytearray) -> int:
    """Dead entries of the packs not kept."""
    dropped = 0
    scratch = array.array("Q", bytes(8 * len(keep)))
    not_kept = bytes(1 - k for k in keep)
    for records in index.record_batches():
        gone = native.flag_packs(records, not_kept)
        flags = bytearray(len(gone) // RECORD)
        native.account(
            gone, memoryview(live.values), memoryview(scratch), memoryview(scratch), flags
        )
        dropped += flags.count(0)
    return dropped


def _delete_condemned(
    repo: Repository,
    blobs: Blobs,
    named: Named,
    grace: float,
    checkpoint_max_age: float,
    stats: PruneStats,
    say: Progress,
) -> None:
    """Phase 2, for every record old enough whose backups have ended."""
    listed = set(repo.backend.list("gc/"))
    records = sorted(n for n in listed if not n.endswith(".writers"))
    if not records:
        return
    ready, protected = _ready_records(repo, named, listed, records, grace, stats)
    if not ready:
        return
    # What interrupted backups will resume from counts as referenced too.
    checkpoints = LiveSet()
    for held in held_by_checkpoints(repo):
        if held.age <= checkpoint_max_age:
            checkpoints.add_checkpoint(blobs, held)
    checkpoints.squeeze()
    sweep = _Sweep(repo, blobs, named, protected, checkpoints, stats)
    snapshots = repo.snapshots()
    for name, doc, packs in ready:
        sweep.record(name, doc, packs, snapshots, say)


_Record = tuple[str, dict[str, Any], list[bytes]]  # (name, document, condemned pack ids)


def _ready_records(
    repo: Repository,
    named: Named,
    listed: set[str],
    records: list[str],
    grace: float,
    stats: PruneStats,
) -> tuple[list[_Record], set[bytes]]:
    """(the records whose packs may go now, the packs that records still waiting condemn).
    A record waits for its grace period and for the backups it names (all running ones when
    its `.writers` object is missing: a crash before it was written)."""
    locks = {lock.name: lock for lock in list_locks(repo) if lock.kind == "shared"}
    alive = {name for name, lock in locks.items() if not lock.stale}
    # After the locks: a backup that ended before that listing has its index files visible.
    named.refresh()
    now = time.time()
    ready: list[_Record] = []
    # A pack can be condemned again by a later record (re-indexed meanwhile by a backup that
    # used it, then dead again): while any record naming it waits, none may delete it.
    protected: set[bytes] = set()
    for name in records:
        doc = read_record(repo, name)
        packs = [bytes.fromhex(p) for p in doc["packs"]]
        if f"{name}.writers" in listed:
            writers = repo.sealer.open(
                repo.backend.read(f"{name}.writers"), b"gc", f"{name}.writers"
            )
            blocking = alive & set(json.loads(writers))
        else:
            blocking = alive
        if blocking or now - doc["time"] < grace:
            stats.packs_waiting += len(packs)
            stats.waiting_for += sorted(locks[n].owner for n in blocking)
            protected.update(packs)
        else:
            ready.append((name, doc, packs))
    return ready, protected


class _Sweep:
    """Phase 2's deletes, one ready record at a time. A condemned pack is deleted unless an
    index names it again or a waiting record condemns it too (left alone), or a snapshot
    written since the record or a checkpoint needs entries of it that no index has (indexed
    again: the pack stays)."""

    def __init__(
        self,
        repo: Repository,
        blobs: Blobs,
        named: Named,
        protected: set[bytes],
        checkpoints: LiveSet,
        stats: PruneStats,
    ) -> None:
        self.repo = repo
        self.blobs = blobs
        self.named = named
        self.protected = protected
        self.checkpoints = checkpoints
        self.stats = stats
        self.reindex = IndexWriter(repo, stats.count_index_file)

    def record(
        self,
        name: str,
        doc: dict[str, Any],
        packs: list[bytes],
        snapshots: list[Snapshot],
        say: Progress,
    ) -> None:
        """The packs of one record dealt with, then the record deleted (last: it is what a
        crash resumes from)."""
        before = set(doc["snapshots"])
        newer = [s for s in snapshots if s.id not in before]
        referenced = LiveSet()
        if newer:
            say(f"checking {plural(len(newer), 'snapshot')} written since the packs were condemned")
            referenced.add_snapshots(self.blobs, newer)
        left = [
            pack_id
            for pack_id in packs
            if not (pack_id in self.named or pack_id in self.protected)
            and not self._pack(pack_id, referenced, bool(newer))
        ]
        self.reindex.flush()  # indexed again before the record that condemned them goes
        if left:  # Object Lock refused some deletes: a new record for them, for a later prune
            write_record(self.repo, f"gc/{secrets.token_hex(16)}", left, snapshots)
        for gone in (f"{name}.writers", name):  # the record last: it is what a crash resumes
            _delete(self.repo, gone, self.stats)

    def _pack(self, pack_id: bytes, referenced: LiveSet, newer: bool) -> bool:
        """One condemned pack deleted, or indexed again where needed; False when Object Lock
        kept it."""
        repo, stats = self.repo, self.stats
        pname = pack_name(pack_id)
        try:
            # Read a header only when something written since could need the pack.
            entries = (
                read_pack_header(repo.backend, repo.sealer, pack_id)
                if newer or self.checkpoints
                else []
            )
            size = repo.backend.size(pname)
        except ObjectNotFound:
            return True
        # Entries a newer snapshot or a checkpoint needs and no index has (a copy made by
        # a repack is indexed: then the original can go).
        needed = [
            e
            for e in entries
            if (e.chunk_id in referenced or e.chunk_id in self.checkpoints)
            and e.chunk_id not in self.blobs.current_index()
        ]
        if needed:
            for e in needed:
                self.reindex.add(pack_id, e)
            self.named.packs.add(pack_id)
            stats.packs_resurrected += 1
        elif _delete(repo, pname, stats):
            stats.packs_deleted += 1
            stats.bytes_freed += size
        else:
            return False
        return True


def _delete_unindexed(
    repo: Repository, named: Named, unindexed_grace: float, stats: PruneStats
) -> float:
    """Returns when the oldest live writer started (inf: none is running)."""
    # Locks first, then the index files, then the packs: a backup that ended before the lock
    # listing has its index files in the second listing; one still running is protected by
    # its lock: whatever a live writer may have written since it started is its own, however
    # old (its index comes only every INDEX_FLUSH chunks; clocks may differ by CLOCK_SKEW).
    live_since = min(
        (lock.started for lock in list_locks(repo) if lock.kind == "shared" and not lock.stale),
        default=float("inf"),
    )
    named.refresh()
    condemned: set[str] = set()
    for name in repo.backend.list("gc/"):
        if name.endswith(".writers"):
            continue
        doc = read_record(repo, name)
        condemned.update(pack_name(bytes.fromhex(p)) for p in doc["packs"])
    named_names = {pack_name(p) for p in named.packs}
    now = time.time()
    for name in list(repo.backend.list("data/")):
        if name in named_names or name in condemned:
            continue
        try:
            mtime = repo.backend.mtime(name)
            if now - mtime < unindexed_grace or mtime >= live_since - CLOCK_SKEW:
                continue
            size = repo.backend.size(name)
        except ObjectNotFound:
            continue
        if _delete(repo, name, stats):
            stats.bytes_freed += size
            stats.unindexed_deleted += 1
    return live_since


def _remove_leftovers(
    repo: Repository, unindexed_grace: float, live_since: float, stats: PruneStats
) -> None:
    """Temp files of writers that died mid-write. A live writer's are spared like its packs: a
    pack it streams into a local directory (mover.objects.packwriter) is a temp file until it
    is whole, and a slow source may keep one open longer than the grace."""
    remove_leftovers = getattr(repo.backend, "remove_leftovers", None)
    if remove_leftovers is not None:
        older_than = max(unindexed_grace, time.time() - live_since + CLOCK_SKEW)
        stats.leftovers_deleted = remove_leftovers(older_than)


def _delete(repo: Repository, name: str, stats: PruneStats) -> bool:
    """False when Object Lock retention refused the delete (counted, not an error)."""
    try:
        repo.backend.delete(name)
    except ObjectLocked:
        stats.locked += 1
        return False
    except ObjectNotFound:
        pass
    return True


# forget moved to mover.maintenance.forget; imported here too so that `from
# mover.maintenance.prune import forget` (mover.cli.repo_cmds, mover.api) keeps working until
# they import it from its home.
__all__ = [
    "CHECKPOINT_MAX_AGE",
    "CLOCK_SKEW",
    "COMPACT_SLACK",
    "REPACK_BELOW",
    "PruneStats",
    "forget",
    "prune",
]
