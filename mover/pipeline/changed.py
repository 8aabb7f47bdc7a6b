"""Changed-range backups: read only what may differ from a parent snapshot, take the rest of the
chunk list from the parent's tree, and write the tree that a full read would have written.

    mover backup SOURCE --changed-ranges FILE [--parent SNAPSHOT] [--verify-unchanged PERCENT]

FILE (mover.pipeline.ranges) lists the byte ranges that may differ from the parent (changed-block
tracking). Everything outside them is taken to hold the parent's bytes.

Why the tree comes out identical. FastCDC restarts at every cut, and the cut that ends a chunk
depends only on the chunk's own bytes (docs/format.md: the cut test at p looks at the 64 bytes
ending at p, p >= start + min_size - 1). So from a position c that is a cut of both the parent's
chunking and the new image's, if the parent's chunk [c, c') holds no listed byte, the new image
has the same chunk there: same bytes, same cut c', same id. By induction the two chunkings agree,
chunk for chunk, up to the first parent chunk that holds a changed byte. From that chunk's start
(a cut of both) a fresh chunker reads the new bytes, through the changed range, and goes on past
it until one of its cuts n is also a cut of the parent's *and* the parent's chunk at n is
reusable (holds no listed byte, and its id is in the index): from n on the two agree again
(resynchronised), exactly as `--streams` bridges between segments (mover.pipeline.parallel). The
chunks come out in order, reused ones with the parent's ids and zero runs as holes, and go into
the same tree builder a full read feeds: same entries, same tree, same root.

The parent's cuts are read from its tree, streaming (mover.objects.tree.walk: one node per level in
memory), through a window from the last cut onward (bounded: a chunk and a read). A chunk entry
ends at a cut. A hole entry is a run of all-zero chunks, each exactly min_size long (an all-zero
window hashes to 0, so a zero chunk is cut at min_size; docs/format.md), merged into one entry:
its cuts are every min_size from its start, and only the volume's last entry may end with a
shorter zero chunk. A parent hole is re-emitted as min_size zero chunks (TreeBuilder.add_holes),
so the new tree merges them exactly as a full read does. A parent whose tree breaks that rule is
refused rather than trusted.

Zero runs while re-chunking (a parent hole after a changed range, where the bytes are known zeros
without reading them, or a hole of a sparse image file) are cut arithmetically past their head, as a
full read does (mover.pipeline.sink.Consumer.skip_hole). Inside a zero run the new cuts fall every
min_size from where the chunker entered it: when that phase differs from the parent's, no cut of the
run can coincide with the parent's (nor can a cut inside a changed range be reusable), so only the
run's last cut is tested; a missed resynchronisation would only cost reading, never correctness,
since re-chunking always follows the new image's true cuts.

Growth. A source larger than its parent (a resized volume) is handled as if its last parent byte
and everything after it were listed: the parent's last chunk was cut by the end of the volume,
not by its content, so it is re-read and chunked on. A source smaller than its parent is refused.

What is read: from the parent's cut before each changed range to the first reusable common cut
after it, typically the range plus one or two average chunks (read in FEED steps once past the
range, so little is read beyond the resynchronising cut). `bytes_read` counts those bytes only.

A wrong change list (a changed byte outside the listed ranges) would give a snapshot that is not
the volume. `--verify-unchanged PERCENT` reads that share of what is reused (each reused chunk,
and each VERIFY_BLOCK of reused zeros, sampled independently: geometric gaps, so a TiB of holes
costs only its samples) and compares it with the parent (keyed hash equal to the chunk's id, or
all zeros); any difference fails the backup before its snapshot is written.
"""

from __future__ import annotations

import bisect
import math
import os
import random
from collections import deque
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, TypeVar

from mover.chunking import ChunkerParams, is_zero, make_chunker
from mover.errors import IntegrityError, UsageError
from mover.objects.repository import Repository
from mover.objects.snapshot import Snapshot
from mover.objects.tree import walk
from mover.pipeline.parallel import ShortRead, extents
from mover.pipeline.ranges import RangeList

FEED = 64 << 10  # past the last changed byte: read this much at a time, looking for a common cut
READ_SIZE = 4 << 20  # inside a changed range: one read
VERIFY_BLOCK = 1 << 20  # reused zeros are verified in blocks of this size
VERIFY_INFLIGHT = 16  # verification reads in flight at once

T = TypeVar("T")
Item = tuple[int, int, T]  # start, end, payload


class ChangeListWrong(UsageError):
    """The change list left out bytes that changed: found by --verify-unchanged."""


@dataclass(frozen=True)
class Reused:
    """`count` consecutive chunks of `length` bytes taken from the parent without reading them,
    each `chunk_id` (None: all zeros; only zeros come more than one at a time)."""

    length: int
    chunk_id: bytes | None
    count: int = 1


@dataclass(frozen=True)
class ChangedRanges:
    """A changed-range backup's inputs: the parent snapshot, the ranges that may differ from it
    (checked against the source's size: mover.pipeline.ranges.read_ranges), and the share of the
    rest to verify, in percent."""

    parent: Snapshot
    ranges: RangeList
    verify_percent: float = 0.0


def find_parent(repo: Repository, source_name: str, ref: str | None) -> Snapshot:
    """The snapshot that a change list is relative to: `ref` (an id, a unique prefix, or
    `latest`), which must be of `source_name`, or the newest snapshot of `source_name`."""
    if ref is None:
        ours = [s for s in repo.snapshots() if s.source == source_name]
        if not ours:
            raise UsageError(
                f"--changed-ranges needs a parent snapshot, and there is no snapshot of "
                f"{source_name} yet: back it up in full first (or give --parent)"
            )
        return ours[-1]
    parent = repo.find_snapshot(ref)
    if parent.source != source_name:
        raise UsageError(
            f"--parent {parent.id[:8]} is a snapshot of {parent.source}, not of {source_name}: "
            "a change list is relative to an earlier snapshot of the same source"
        )
    return parent


def check_size(parent: Snapshot, size: int, source_name: str) -> None:
    """A source that shrank since its parent cannot be read by changes (growth can: see above)."""
    if size < parent.size:
        raise UsageError(
            f"{source_name} is {size} bytes, smaller than its parent snapshot {parent.id[:8]} "
            f"({parent.size} bytes): a volume that shrank needs a full backup "
            "(drop --changed-ranges)"
        )


class _Window(Generic[T]):
    """The items of an ascending iterator of disjoint (start, end, payload), from a floor on:
    find() answers for any position at or above the floor, drop_before() raises the floor. It
    holds only the items between the floor and the furthest position looked up."""

    def __init__(self, items: Iterator[Item[T]]) -> None:
        self._items = items
        self._ends: list[int] = []
        self._held: list[Item[T]] = []
        self._head = 0
        self._exhausted = False

    def find(self, pos: int) -> Item[T] | None:
        """The first item that ends after pos (it holds pos, or starts after it); None: none."""
        while not self._exhausted and (len(self._ends) == self._head or self._ends[-1] <= pos):
            item = next(self._items, None)
            if item is None:
                self._exhausted = True
            else:
                self._held.append(item)
                self._ends.append(item[1])
        i = bisect.bisect_right(self._ends, pos, self._head)
        return self._held[i] if i < len(self._held) else None

    def drop_before(self, pos: int) -> None:
        """Items that end at or before pos will not be asked for again: those held are let go,
        those not loaded yet are skipped as they load (a jump over a long run stays O(1))."""
        self._head = bisect.bisect_right(self._ends, pos, self._head)
        if self._head == len(self._ends):
            self._ends.clear()
            self._held.clear()
            self._head = 0
            while not self._exhausted:
                item = next(self._items, None)
                if item is None:
                    self._exhausted = True
                elif item[1] > pos:
                    self._held.append(item)
                    self._ends.append(item[1])
                    break
        elif self._head > 1024 and 2 * self._head > len(self._ends):
            del self._ends[: self._head], self._held[: self._head]
            self._head = 0


class _Sampler:
    """Chooses each unit independently with probability `fraction`, drawing the gaps between
    chosen units (geometric), so that skipping n units costs O(1), not O(n)."""

    def __init__(self, fraction: float) -> None:
        self._p = fraction
        self._rng = random.Random(os.urandom(16))  # a list cannot be tuned to dodge the samples
        self._gap = self._draw()

    def _draw(self) -> int:
        if self._p >= 1:
            return 0
        if self._p <= 0:
            return 1 << 62
        return int(math.log(1.0 - self._rng.random()) / math.log(1.0 - self._p))

    def chosen(self) -> bool:
        """Whether the next unit is chosen."""
        if self._gap:
            self._gap -= 1
            return False
        self._gap = self._draw()
        return True

    def picks(self, n: int) -> list[int]:
        """The indexes in [0, n) of the next n units that are chosen."""
        found = []
        i = self._gap
        while i < n:
            found.append(i)
            i += 1 + self._draw()
        self._gap = i - n
        return found


class _Chunking:
    """The new image's chunking from a cut: a fresh chunker whose position 0 is `origin`."""

    def __init__(self, params: ChunkerParams, at: int) -> None:
        self.params = params
        self.restart(at)

    def restart(self, at: int) -> None:
        self.chunker = make_chunker(self.params)
        self.origin = self.begin = self.fed = at  # the current chunk starts at begin
        self.pending = bytearray()  # bytes [begin, fed) not yet in a chunk

    def feed(self, view: memoryview, sync: Callable[[int], bool]) -> tuple[list[bytes], bool]:
        """Chunks completed by `view` (the bytes at fed); stops after the first cut at which
        `sync` says the parent's chunking takes over (the rest of view is dropped), True then."""
        chunks = []
        at = 0
        for cut in self.chunker.feed(view):
            end = self.origin + cut
            upto = end - self.fed
            if self.pending:
                self.pending += view[at:upto]
                chunks.append(bytes(self.pending))
                self.pending.clear()
            else:
                chunks.append(bytes(view[at:upto]))
            at, self.begin = upto, end
            if sync(end):
                return chunks, True
        self.pending += view[at:]
        self.fed += len(view)
        return chunks, False

    def finish(self) -> list[bytes]:
        return [bytes(self.pending)] if self.chunker.finish() else []


class ChangedReader:
    """The chunk stream of a changed-range backup, in order: bytes (a chunk read from the
    source, to hash and store) or Reused (chunks taken from the parent). Counters: bytes_read
    (read from the source to chunk), parent_bytes (taken from the parent unread), verify_bytes
    (read to verify reused ones)."""

    def __init__(
        self,
        repo: Repository,
        fd: int,
        size: int,
        source_name: str,
        changed: ChangedRanges,
        threads: int = 2,
    ) -> None:
        self.repo = repo
        self.fd = fd
        self.size = size
        self.source_name = source_name
        self.changed = changed
        self.parent = changed.parent
        self.params = repo.config.chunker
        self.min_size = self.params.min_size
        self.threads = max(1, min(threads, 4))
        self.bytes_read = 0
        self.parent_bytes = 0
        self.verify_bytes = 0
        self.covered = 0  # bytes of the source the chunks given so far cover
        self._zeros = memoryview(bytes(max(READ_SIZE, 4 * self.min_size + 64)))
        self._buffer = bytearray(READ_SIZE)
        self._parents: _Window[bytes | None] = _Window(self._parent_extents())
        self._ranges: _Window[None] = _Window(self._changed_ranges())
        self._sampler = _Sampler(changed.verify_percent / 100.0)
        self._checks: deque[Future[str | None]] = deque()
        self._pool: ThreadPoolExecutor | None = None  # the verification threads, in items()

    # -- the inputs, streamed ------------------------------------------------------------

    def _parent_extents(self) -> Iterator[Item[bytes | None]]:
        end, size, short = 0, self.parent.size, self.parent.id[:8]
        for e in walk(self.repo.read_blob, bytes.fromhex(self.parent.tree)):
            end = e.offset + e.length
            if e.chunk_id is None and e.length % self.min_size and end != size:
                raise IntegrityError(
                    f"parent snapshot {short} has a hole of {e.length} bytes at {e.offset}, not "
                    "a run of minimum-size chunks: back up without --changed-ranges"
                )
            yield e.offset, end, e.chunk_id
        if end != size:
            raise IntegrityError(
                f"parent snapshot {short}'s tree covers {end} bytes, not its {size}: "
                "back up without --changed-ranges"
            )

    def _changed_ranges(self) -> Iterator[Item[None]]:
        """The listed ranges, plus the tail of a source that grew (from the parent's last byte)."""
        tail = max(self.parent.size - 1, 0) if self.size > self.parent.size else self.size
        for start, end in self.changed.ranges:
            if end >= tail:
                yield min(start, tail), self.size, None
                return
            yield start, end, None
        if tail < self.size:
            yield tail, self.size, None

    # -- the parent's chunking ------------------------------------------------------------

    def _unit(self, pos: int) -> tuple[int, bytes | None] | None:
        """The parent's chunk (length, id) that starts at pos; None when pos is not one of the
        parent's cuts, or is its end."""
        found = self._parents.find(pos)
        if found is None:
            return None
        start, end, chunk_id = found
        if chunk_id is not None:
            return (end - start, chunk_id) if pos == start else None
        if (pos - start) % self.min_size:
            return None
        return min(self.min_size, end - pos), None

    def _changed(self, start: int, end: int) -> bool:
        found = self._ranges.find(start)
        return found is not None and found[0] < end

    def _reusable(self, pos: int) -> bool:
        """pos is a cut of the parent's whose chunk can be taken as it is."""
        unit = self._unit(pos)
        if unit is None:
            return False
        length, chunk_id = unit
        if self._changed(pos, pos + length):
            return False
        return chunk_id is None or chunk_id in self.repo.index

    # -- the stream -----------------------------------------------------------------------

    def items(self) -> Iterator[bytes | Reused]:
        with ThreadPoolExecutor(self.threads, thread_name_prefix="mover-verify") as pool:
            self._pool = pool
            pos = 0
            while pos < self.size:
                self._parents.drop_before(pos)
                self._ranges.drop_before(pos)
                self.covered = pos
                reused = self._reuse(pos) if self._reusable(pos) else None
                if reused is not None:
                    self._verify(pos, reused)
                    yield reused
                    pos += reused.length * reused.count
                    self.parent_bytes += reused.length * reused.count
                else:
                    pos = yield from self._rechunk(pos)
            self.covered = pos
            while self._checks:
                self._settle(self._checks.popleft())

    def _reuse(self, pos: int) -> Reused:
        """The parent's chunks from pos (a reusable common cut) up to the next changed range."""
        found = self._parents.find(pos)
        assert found is not None
        start, end, chunk_id = found
        if chunk_id is not None:
            return Reused(end - start, chunk_id)
        changed = self._ranges.find(pos)
        limit = min(end, changed[0] if changed is not None else end)
        count = (limit - pos) // self.min_size
        if count:
            return Reused(self.min_size, None, count)
        return Reused(end - pos, None)  # the parent's last, shorter zero chunk

    def _rechunk(self, at: int) -> Generator[bytes | Reused, None, int]:
        """Chunk the new image from `at` (a cut of both chunkings) until a reusable common cut;
        returns it (or the source's size)."""
        chunking = _Chunking(self.params, at)
        while chunking.fed < self.size:
            self._parents.drop_before(chunking.begin)
            self._ranges.drop_before(chunking.begin)
            self.covered = chunking.begin
            fed = chunking.fed
            length, zeros, parents = self._next_piece(fed)
            if not zeros:
                view = memoryview(self._buffer)[:length]
                n = os.preadv(self.fd, [view], fed)
                if n < length:
                    raise ShortRead(fed + max(n, 0))
                self.bytes_read += n
                chunks, synced = chunking.feed(view, self._reusable)
                yield from chunks
                if synced:
                    return chunking.begin
                continue
            synced_at = yield from self._zeros_piece(chunking, fed, length)
            if parents:  # the parent's zeros, taken unread: verified like what is reused
                taken = (synced_at or fed + length) - fed
                self.parent_bytes += taken
                self._verify(fed, Reused(taken, None))
            if synced_at is not None:
                return synced_at
        yield from chunking.finish()
        return self.size

    def _zeros_piece(
        self, chunking: _Chunking, fed: int, length: int
    ) -> Generator[bytes | Reused, None, int | None]:
        """Feed `length` zeros at `fed`: past their head, cut arithmetically (as
        mover.pipeline.sink.Consumer.skip_hole). Returns the reusable common cut met, if any."""
        min_size = self.min_size
        hole_head = (
            2 * min_size + 64
        )  # as mover.pipeline.backup: enough for a first cut in the zeros
        head = hole_head if length > hole_head + 2 * min_size else length
        chunks, synced = self._feed_zeros(chunking, head)
        yield from chunks
        if synced:
            return chunking.begin
        if head == length:
            return None
        if chunking.begin <= fed:  # no cut in the head: go on byte by byte
            chunks, synced = self._feed_zeros(chunking, length - head)
            yield from chunks
            return chunking.begin if synced else None
        count = (fed + length - chunking.begin) // min_size
        yield Reused(min_size, None, count)
        begin = chunking.begin + count * min_size
        chunking.restart(begin)
        self._parents.drop_before(begin)
        self._ranges.drop_before(begin)
        # Less than min_size of the run is left: no cut in it (the last cut is tested next).
        if self._reusable(begin):
            return begin
        chunks, _ = self._feed_zeros(chunking, fed + length - begin)
        assert not chunks
        return None

    def _feed_zeros(self, chunking: _Chunking, n: int) -> tuple[list[bytes], bool]:
        out: list[bytes] = []
        while n > 0:
            part = self._zeros[: min(n, len(self._zeros))]
            chunks, synced = chunking.feed(part, self._reusable)
            out += chunks
            if synced:
                return out, True
            n -= len(part)
        return out, False

    def _next_piece(self, fed: int) -> tuple[int, bool, bool]:
        """(length, known zeros, the parent's zeros) of what to feed from `fed` on."""
        changed = self._ranges.find(fed)
        if changed is not None and changed[0] <= fed:
            # Inside a changed range: read it (a sparse file's holes are not read).
            end = min(changed[1], fed + READ_SIZE)
            _, length, is_data = next(extents(self.fd, fed, end))
            return length, not is_data, False
        # Unchanged: the parent's bytes. Its holes are zeros without reading them.
        limit = changed[0] if changed is not None else self.size
        found = self._parents.find(fed)
        assert found is not None, "past the parent's end is always listed as changed"
        _, end, chunk_id = found
        if chunk_id is None:
            return min(end, limit) - fed, True, True
        return min(end, limit, fed + FEED) - fed, False, False

    # -- verification of what is reused ---------------------------------------------------

    def _verify(self, pos: int, reused: Reused) -> None:
        """Sample what is taken from the parent at pos for verification (--verify-unchanged)."""
        if reused.chunk_id is not None:
            if self._sampler.chosen():
                self._check_later(pos, reused.length, reused.chunk_id)
            return
        span = reused.length * reused.count
        for i in self._sampler.picks(-(-span // VERIFY_BLOCK)):
            start = pos + i * VERIFY_BLOCK
            self._check_later(start, min(VERIFY_BLOCK, pos + span - start), None)

    def _check_later(self, offset: int, length: int, chunk_id: bytes | None) -> None:
        assert self._pool is not None
        while len(self._checks) >= VERIFY_INFLIGHT:
            self._settle(self._checks.popleft())
        self.verify_bytes += length
        self._checks.append(self._pool.submit(self._check, offset, length, chunk_id))

    def _check(self, offset: int, length: int, chunk_id: bytes | None) -> str | None:
        data = os.pread(self.fd, length, offset)
        if len(data) < length:
            raise ShortRead(offset + len(data))
        if is_zero(data) if chunk_id is None else self.repo.master.chunk_id_of(data) == chunk_id:
            return None
        return f"bytes {offset}-{offset + length - 1}"

    def _settle(self, check: Future[str | None]) -> None:
        where = check.result()
        if where is not None:
            raise ChangeListWrong(
                f"--verify-unchanged: {where} of {self.source_name} differ from parent snapshot "
                f"{self.parent.id[:8]}, but {self.changed.ranges.name} does not list them as "
                "changed; no snapshot was written (fix the change list, or back up without it)"
            )
