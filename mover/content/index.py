"""The index: chunk id -> (pack, offset, length), and its file encoding.

    "MVIX" u8 version | u32 npacks | npacks x pack_id[32] | u32 n | n x (id[32] u32 pack_no
    u32 offset u32 length u8 kind)

sealed with associated data "index". Index files are written after the packs they point to
and before any snapshot that needs them, so a crash leaves at worst unreferenced objects.
"""

from __future__ import annotations

import array
import os
import struct
import tempfile
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mover._native import load_index_run
from mover.content.pack import PackEntry
from mover.crypto import Sealer
from mover.errors import IntegrityError

MAGIC = b"MVIX\x01"
_ENTRY = struct.Struct("<32sIIIB")
_RECORD = struct.Struct("<32sIIIB3x")  # a record of a sorted run (ext/index_run.pyx)
RECORD = _RECORD.size

# Entries added since the last run was written, kept in a dict (~200 bytes each).
DELTA_MAX = 65536
# Records a builder sorts in memory before it spreads them over bucket files (12 MiB).
BUILD_BATCH = 1 << 18
# Records read at a time when iterating or merging runs (3 MiB).
READ_BATCH = 1 << 16

if TYPE_CHECKING:
    from mover._native import index_run as native
else:
    native = load_index_run()  # NativeBuildError, with how to build it, when not built


@dataclass(frozen=True)
class Location:
    pack_id: bytes
    offset: int
    length: int
    kind: int


def work_dir() -> str:
    """Where index runs live: MOVER_TMPDIR, else the system's temporary directory."""
    return os.environ.get("MOVER_TMPDIR") or tempfile.gettempdir()


def _temp_fd(directory: str) -> int:
    # Unlinked at once: the descriptor keeps the data, and nothing is left behind by a crash.
    fd, path = tempfile.mkstemp(prefix="mover-index-", dir=directory)
    os.unlink(path)
    return fd


def _write_all(fd: int, data: bytes | bytearray | memoryview, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written


class _RunBuilder:
    """Records in any order -> one sorted run with one record per id, in bounded memory.

    Up to BUILD_BATCH records are sorted in memory. Beyond that, records are spread over 256
    bucket files by the first byte of their id (ids are keyed hashes, so buckets are even),
    and each bucket is sorted alone: memory is one batch plus one bucket, about n / 256
    records, whatever n is."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.batch = bytearray()
        self.buckets: list[int] | None = None  # fds
        self.bucket_sizes = [0] * 256

    def add(self, records: bytes | bytearray | memoryview) -> None:
        self.batch += records
        if len(self.batch) >= BUILD_BATCH * RECORD:
            self._spread()

    def _spread(self) -> None:
        if self.buckets is None:
            self.buckets = [_temp_fd(self.directory) for _ in range(256)]
        grouped, bounds = native.group_by_first_byte(self.batch)
        view = memoryview(grouped)
        for b in range(256):
            lo, hi = bounds[b] * RECORD, bounds[b + 1] * RECORD
            if hi > lo:
                _write_all(self.buckets[b], view[lo:hi], self.bucket_sizes[b])
                self.bucket_sizes[b] += hi - lo
        self.batch = bytearray()

    def finish(self) -> native.Run:
        fd = _temp_fd(self.directory)
        count = 0
        fences = bytearray()
        try:
            if self.buckets is None:
                count = native.sort_unique(self.batch)
                _write_all(fd, self.batch, 0)
                fences += native.fences_of(self.batch, 0)
            else:
                self._spread()
                for b, bucket in enumerate(self.buckets):
                    records = bytearray(os.pread(bucket, self.bucket_sizes[b], 0))
                    os.close(bucket)
                    n = native.sort_unique(records)
                    _write_all(fd, records, count * RECORD)
                    fences += native.fences_of(records, count)
                    count += n
                self.buckets = None
            return native.Run(fd, count, bytes(fences))
        except BaseException:
            os.close(fd)
            raise
        finally:
            self.batch = bytearray()


class Index:
    """chunk id -> Location, in memory bounded by a few bytes per chunk.

    Not a dict of every chunk: entries live in sorted run files (48 bytes a chunk on disk, in
    MOVER_TMPDIR) searched through fences (32 bytes of memory per 256 chunks), plus a dict of
    at most DELTA_MAX recent additions. When the dict is full it becomes a run; runs are
    merged while the newest is at least half the size of the one before, so there are
    O(log n) runs and each record is rewritten O(log n) times. The pack table (pack id <->
    number) stays in memory: one entry per pack, i.e. per 16 MiB of stored data.

    Safe for lookups from many threads while one thread adds."""

    def __init__(self, directory: str | None = None, delta_max: int = DELTA_MAX) -> None:
        self.directory = directory or work_dir()
        self.delta_max = delta_max
        self._packs: list[bytes] = []
        self._pack_no: dict[bytes, int] = {}
        self._runs: list[native.Run] = []  # newest first
        self._delta: dict[bytes, tuple[int, int, int, int]] = {}
        self._lock = threading.Lock()
        # Index files bulk-loaded, each with the numbers of the packs it names (prune needs
        # to know which packs stay named when some files are deleted).
        self.files: dict[str, array.array[int]] = {}

    # -- lookups ---------------------------------------------------------------------------

    def _find(self, chunk_id: bytes) -> tuple[int, int, int, int] | None:
        # Delta before runs, and a spill publishes the run before it empties the delta, so a
        # lookup racing a spill finds the entry in one or the other.
        found = self._delta.get(chunk_id)
        if found is not None:
            return found
        for run in self._runs:
            found = run.find(chunk_id)
            if found is not None:
                return found
        return None

    def __contains__(self, chunk_id: object) -> bool:
        if not isinstance(chunk_id, bytes) or len(chunk_id) != 32:
            return False
        return self._find(chunk_id) is not None

    def __len__(self) -> int:
        return len(self._delta) + sum(run.count for run in self._runs)

    def get(self, chunk_id: bytes) -> Location | None:
        found = self._find(chunk_id)
        if found is None:
            return None
        pack, offset, length, kind = found
        return Location(self._packs[pack], offset, length, kind)

    def pack_number(self, pack_id: bytes) -> int:
        number = self._pack_no.get(pack_id)
        if number is None:
            number = self._pack_no[pack_id] = len(self._packs)
            self._packs.append(pack_id)
        return number

    def pack_ids(self) -> list[bytes]:
        """Every pack an entry was ever added for, by number."""
        return list(self._packs)

    def packs(self) -> set[bytes]:
        return set(self._packs)

    # -- additions -------------------------------------------------------------------------

    def add(self, chunk_id: bytes, location: Location) -> None:
        """Keeps the first location of an id, like dict.setdefault."""
        with self._lock:
            if self._find(chunk_id) is not None:
                return
            number = self.pack_number(location.pack_id)
            self._delta[chunk_id] = (number, location.offset, location.length, location.kind)
            if len(self._delta) >= self.delta_max:
                self._spill()

    def _spill(self) -> None:
        builder = _RunBuilder(self.directory)
        records = bytearray()
        for chunk_id, (pack, offset, length, kind) in self._delta.items():
            records += _RECORD.pack(chunk_id, pack, offset, length, kind)
        builder.add(records)
        runs = [builder.finish(), *self._runs]
        while len(runs) >= 2 and runs[0].count * 2 >= runs[1].count:
            runs[:2] = [_merge(self.directory, runs[:2])]
        self._runs = runs
        self._delta = {}

    def load(
        self,
        files: Iterable[tuple[str, list[bytes], memoryview, int]],
        damage: dict[str, str] | None = None,
    ) -> None:
        """Adds index files (name, pack list, rows, row count). Into an empty index they go as
        one run, built in bounded memory; into a non-empty one (files written by others since
        it was loaded: usually few) entry by entry. Either way an id keeps one location.

        A file whose rows name a pack it does not list is skipped and recorded in `damage`
        (name -> why) when given; without `damage` it raises IntegrityError."""
        empty = not self._runs and not self._delta
        builder = _RunBuilder(self.directory)
        for name, pack_ids, rows, count in files:
            pack_map = array.array("I", (self.pack_number(p) for p in pack_ids))
            try:
                records = native.convert_rows(rows, count, memoryview(pack_map))
            except ValueError:
                folder, _, file_id = name.rpartition("/")
                reason = f"{folder}/{file_id[:16]} names a pack it does not list"
                if damage is None:
                    raise IntegrityError(reason) from None
                damage[name] = reason
                continue
            self.files[name] = pack_map
            if empty:
                builder.add(records)
                continue
            packs = self._packs
            for chunk_id, pack, offset, length, kind in unpack_records(records):
                self.add(chunk_id, Location(packs[pack], offset, length, kind))
        if empty:
            run = builder.finish()
            if run.count:
                with self._lock:
                    self._runs = [run]

    # -- iteration -------------------------------------------------------------------------

    def record_batches(self) -> Iterator[bytes | bytearray]:
        """Every entry as 48-byte records (id, pack number, offset, length, kind), in batches:
        for scans in native code (prune) without a Python object per entry."""
        delta = self._delta
        if delta:
            records = bytearray()
            for chunk_id, (pack, offset, length, kind) in delta.items():
                records += _RECORD.pack(chunk_id, pack, offset, length, kind)
            yield records
        for run in self._runs:
            for first in range(0, run.count, READ_BATCH):
                yield run.read(first, min(READ_BATCH, run.count - first))

    def items(self) -> Iterator[tuple[bytes, Location]]:
        packs = self._packs
        for records in self.record_batches():
            for chunk_id, pack, offset, length, kind in _RECORD.iter_unpack(records):
                yield chunk_id, Location(packs[pack], offset, length, kind)


def unpack_records(records: bytes | bytearray) -> Iterator[tuple[bytes, int, int, int, int]]:
    """(id, pack number, offset, length, kind) of each record."""
    return _RECORD.iter_unpack(records)


def _merge(directory: str, runs: list[native.Run]) -> native.Run:
    builder = _RunBuilder(directory)
    for run in runs:
        for first in range(0, run.count, READ_BATCH):
            builder.add(run.read(first, min(READ_BATCH, run.count - first)))
    return builder.finish()


def encode(sealer: Sealer, entries: Iterable[tuple[bytes, PackEntry]]) -> bytes:
    """entries: (pack id, entry in that pack)."""
    pack_no: dict[bytes, int] = {}
    rows = bytearray()
    count = 0
    for pack_id, e in entries:
        number = pack_no.setdefault(pack_id, len(pack_no))
        rows += _ENTRY.pack(e.chunk_id, number, e.offset, e.length, e.kind)
        count += 1
    body = bytearray(MAGIC + struct.pack("<I", len(pack_no)))
    for pack_id in pack_no:
        body += pack_id
    body += struct.pack("<I", count) + rows
    return sealer.seal(bytes(body), b"index")


def decode_rows(sealer: Sealer, sealed: bytes, what: str) -> tuple[list[bytes], memoryview, int]:
    """(pack ids, the rows, row count) of an index file, for Index.load."""
    body = sealer.open(sealed, b"index", what)
    try:
        if body[:5] != MAGIC:
            raise ValueError
        (npacks,) = struct.unpack_from("<I", body, 5)
        pos = 9
        packs = [body[pos + 32 * i : pos + 32 * (i + 1)] for i in range(npacks)]
        pos += 32 * npacks
        (count,) = struct.unpack_from("<I", body, pos)
        pos += 4
        if len(body) != pos + count * _ENTRY.size:
            raise ValueError
    except (ValueError, struct.error):
        raise IntegrityError(f"{what} has an unknown format or is truncated") from None
    return packs, memoryview(body)[pos:], count


def decode(sealer: Sealer, sealed: bytes, what: str) -> Iterator[tuple[bytes, Location]]:
    packs, rows, count = decode_rows(sealer, sealed, what)
    for i in range(count):
        chunk_id, number, offset, length, kind = _ENTRY.unpack_from(rows, i * _ENTRY.size)
        if number >= len(packs):
            raise IntegrityError(f"{what} names a pack it does not list")
        yield chunk_id, Location(packs[number], offset, length, kind)
