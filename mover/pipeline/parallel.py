"""Several streams per volume: read and chunk ranges of one seekable source in parallel, and
yield exactly the chunks that one stream would cut, in order.

FastCDC restarts its state at every cut: the cut test at p looks only at bytes of the chunk that
p ends (min_size >= 64 = the window). So two chunkers that share one cut agree from there on.
The volume is divided into segments; a worker thread reads a segment (os.preadv into a recycled
buffer, holes found by SEEK_DATA/SEEK_HOLE and never read) and chunks it with a chunker started
at the segment's first byte. Only the first segment's chunker starts at a true cut; every other
segment's cuts are candidates. The merger (the caller's thread) follows the true chunking:

- it yields the chunks of the segment it follows, up to that segment's last cut t;
- then it bridges: a fresh chunker started at t (a true cut, so it continues the true chunking
  exactly) is fed the following bytes (already in memory: the next segments' buffers) and each
  chunk it cuts is yielded, until one of its cuts c is also a cut of the segment m that contains
  c (or c is m's first byte). From c on, segment m's chunker is the true one: the merger
  follows m from c and drops m's candidate cuts before c.
- If no cut coincides before the next segment ends (data whose cuts are all forced at max_size
  never resynchronises), the bridge simply keeps going through the next segments: slower,
  never wrong. Normally it syncs within a few chunks: measured, ~1 MiB re-chunked in order per
  8 MiB segment at the default chunk sizes (BENCHMARKS.md).

In the code: _Segments holds the segments in memory and the workers that load them (_load),
_merge follows a segment's cuts and _bridge bridges; both run on the caller's thread.

Why segments, not N contiguous ranges: the output is in order and memory is bounded, so the
workers can only run a bounded distance ahead of the merger. Range k of N contiguous ranges
could not start before range k-1 was consumed. With segments handed out in order (segment i to
whichever worker is free: stream k takes about every N-th segment), N workers chunk the next N
segments while the merger drains the current one. Memory: `window` segment buffers (streams +
2, plus enough to hold a max-size chunk and a bridge feed: streams + 3 at the defaults, 40 MiB
for 2 streams), whatever the volume's size. A volume smaller than streams x segment_size is
split into `streams` ranges.

The yielded views are valid until the next chunk is asked for (like mover.pipeline.source.pieces).
"""

from __future__ import annotations

import bisect
import errno
import os
import stat
from collections.abc import Generator, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import NamedTuple

from mover.chunking.native import make_chunker
from mover.chunking.params import ChunkerParams
from mover.pipeline.source import SEEK_DATA, SEEK_HOLE

SEGMENT_SIZE = 8 << 20  # bytes a worker reads and chunks at a time
READ_SIZE = 4 << 20  # one pread; chunked while it is still in the CPU caches
BRIDGE_FEED = 128 << 10  # the bridge feeds this much at a time: it usually syncs in a few chunks


class ShortRead(OSError):
    """The source ended before its size: it shrank while it was read."""

    def __init__(self, offset: int) -> None:
        super().__init__(errno.EIO, f"the source shrank while it was read (at byte {offset})")


@dataclass
class _Segment:
    start: int
    end: int
    buffer: bytearray | None
    # (offset, length, view) covering [start, end) in order; view None: a hole (zeros)
    pieces: list[tuple[int, int, memoryview | None]] = field(default_factory=list)
    starts: list[int] = field(default_factory=list)  # the pieces' offsets, for bisect
    cuts: list[int] = field(default_factory=list)  # absolute chunk ends, chunker started at start


def extents(fd: int, start: int, end: int) -> Iterator[tuple[int, int, bool]]:
    """(offset, length, is_data) runs covering [start, end): holes of a regular file are found
    with SEEK_DATA/SEEK_HOLE; everything else (block devices, file systems without them) is
    data."""
    if SEEK_DATA is None or SEEK_HOLE is None or not stat.S_ISREG(os.fstat(fd).st_mode):
        yield start, end - start, True
        return
    pos = start
    while pos < end:
        try:
            data = os.lseek(fd, pos, SEEK_DATA)  # pread ignores the file position it moves
        except OSError as exc:
            if exc.errno == errno.ENXIO:
                data = end  # no data after pos
            elif exc.errno == errno.EINVAL:
                yield pos, end - pos, True  # no hole support here: read it all
                return
            else:
                raise
        data = min(data, end)
        if data > pos:
            yield pos, data - pos, False
            pos = data
        if pos >= end:
            return
        hole = min(os.lseek(fd, pos, SEEK_HOLE), end)
        yield pos, hole - pos, True
        pos = hole


def _load(
    fd: int, params: ChunkerParams, kernel: str | None, seg: _Segment, zeros: memoryview
) -> _Segment:
    """Read seg (data into its buffer, holes as references to zeros) and cut it."""
    chunker = make_chunker(params, kernel)
    at = 0  # next free byte of the buffer
    for offset, length, is_data in extents(fd, seg.start, seg.end):
        if not is_data:
            seg.pieces.append((offset, length, None))
            done = 0
            while done < length:
                n = min(len(zeros), length - done)
                seg.cuts += (seg.start + c for c in chunker.feed(zeros[:n]))
                done += n
            continue
        assert seg.buffer is not None
        view = memoryview(seg.buffer)[at : at + length]
        done = 0
        while done < length:
            part = view[done : min(length, done + READ_SIZE)]
            n = os.preadv(fd, [part], offset + done)
            if n <= 0:
                raise ShortRead(offset + done)
            seg.cuts += (seg.start + c for c in chunker.feed(part[:n]))
            done += n
        seg.pieces.append((offset, length, view))
        at += length
    # A file cut short reads as a trailing hole (SEEK_DATA past its end: ENXIO): say so.
    st = os.fstat(fd)
    if stat.S_ISREG(st.st_mode) and st.st_size < seg.end:
        raise ShortRead(st.st_size)
    seg.starts = [p[0] for p in seg.pieces]
    return seg


class _Sync(NamedTuple):
    """Where the merger follows a segment's chunker again: segment `segment` from its cut number
    `next_cut`, the chunk before it ending at `pos` (a true cut)."""

    segment: int
    next_cut: int
    pos: int


class _Segments:
    """[start, end) of fd as the merger sees it, on the merger's (the caller's) thread: `count`
    segments of `size` bytes (the last may be shorter), each read and cut by a worker of the pool
    (_load) into a recycled buffer, submitted in order ahead of the lowest segment not yet
    released, at most `window` held at once. Owns the pool (close() stops it), the buffers and
    `scratch`, where a chunk that spans pieces is assembled."""

    def __init__(
        self,
        fd: int,
        params: ChunkerParams,
        kernel: str | None,
        streams: int,
        start: int,
        end: int,
        segment_size: int,
    ) -> None:
        self.fd, self.params, self.kernel = fd, params, kernel
        self.start, self.end = start, end
        total = end - start
        # A volume smaller than streams x segment_size: `streams` ranges (of at least 4 KiB).
        self.size = size = max(min(segment_size, -(-total // streams)), 4096)
        self.count = count = -(-total // size)
        self.bounds = [start + i * size for i in range(count)] + [end]
        # Segments held at once: the ones being read, the one followed, and enough after it for
        # a bridge chunk (at most max_size) to be assembled from memory.
        self.window = streams + 2 + -(-(params.max_size + BRIDGE_FEED) // size)
        self.zeros = memoryview(bytes(max(READ_SIZE, params.max_size)))
        self.scratch = bytearray(params.max_size)
        self.free: list[bytearray] = []
        self.futures: dict[int, Future[_Segment]] = {}
        self.submitted = 0  # segments submitted so far: 0 .. submitted-1
        self.low = 0  # lowest segment not yet released
        self.pool = ThreadPoolExecutor(streams, thread_name_prefix="mover-stream")

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)

    def release_below(self, index: int) -> None:
        """Segments before `index` are done with: their buffers are reused."""
        while self.low < index:
            seg = self.futures.pop(self.low).result()
            if seg.buffer is not None:
                self.free.append(seg.buffer)
            self.low += 1

    def get(self, index: int) -> _Segment:
        """Segment `index`, read and cut (waits for it); submits the window's segments first."""
        while self.submitted < self.count and self.submitted < self.low + self.window:
            submitted = self.submitted
            buffer = self.free.pop() if self.free else bytearray(self.size)
            seg = _Segment(self.bounds[submitted], self.bounds[submitted + 1], buffer)
            self.futures[submitted] = self.pool.submit(
                _load, self.fd, self.params, self.kernel, seg, self.zeros
            )
            self.submitted += 1
        assert index < self.submitted, "a bridge chunk needs more segments than the window holds"
        return self.futures[index].result()

    def segment_of(self, offset: int) -> int:
        return min((offset - self.start) // self.size, self.count - 1)

    def part(self, pos: int, stop: int) -> memoryview:
        """The bytes [pos, stop) as far as the piece holding pos goes: a view of a segment's
        buffer, or of zeros in a hole."""
        seg = self.get(self.segment_of(pos))
        i = bisect.bisect_right(seg.starts, pos) - 1
        offset, length, view = seg.pieces[i]
        n = min(stop, offset + length) - pos
        return self.zeros[:n] if view is None else view[pos - offset : pos - offset + n]

    def chunk(self, a: int, b: int) -> memoryview:
        """The bytes [a, b): a view when one piece holds them, else a copy in scratch."""
        out = memoryview(self.scratch)[: b - a]
        filled = 0
        pos = a
        while pos < b:
            # part(pos, b), inline: this runs once a chunk.
            seg = self.get(self.segment_of(pos))
            i = bisect.bisect_right(seg.starts, pos) - 1
            offset, length, view = seg.pieces[i]
            n = min(b, offset + length) - pos
            part = self.zeros[:n] if view is None else view[pos - offset : pos - offset + n]
            if filled == 0 and n == b - a:
                return part
            out[filled : filled + n] = part
            filled += n
            pos += n
        return out


def parallel_chunks(
    fd: int,
    params: ChunkerParams,
    streams: int,
    start: int = 0,
    end: int | None = None,
    segment_size: int = SEGMENT_SIZE,
    kernel: str | None = None,
) -> Iterator[tuple[int, memoryview]]:
    """(offset, bytes) of every chunk of [start, end) of the file or device fd, in order, cut
    exactly as one chunker fed the whole range would cut them. `start` must be a cut point
    (0, or a chunk boundary of an earlier run: see mover.objects.checkpoint)."""
    if streams < 1:
        raise ValueError(f"streams must be >= 1, got {streams}")
    if end is None:
        end = os.lseek(fd, 0, os.SEEK_END)
    if end - start <= 0:
        return
    segments = _Segments(fd, params, kernel, streams, start, end, segment_size)
    try:
        yield from _merge(segments, params, kernel)
    finally:
        segments.close()


def _merge(
    segs: _Segments, params: ChunkerParams, kernel: str | None
) -> Iterator[tuple[int, memoryview]]:
    """The merger, on the caller's thread: yields the chunks of the segment it follows up to
    that segment's last cut, then bridges (_bridge) to the segment where the true chunking
    meets a segment's cut again, and follows that one."""
    # Locals, not attributes: the loop runs once a chunk.
    chunk, release_below, segment_of = segs.chunk, segs.release_below, segs.segment_of
    last, end = segs.count - 1, segs.end
    sync: _Sync | None = _Sync(0, 0, segs.start)
    while sync is not None:
        following, pos = sync.segment, sync.pos
        for c in segs.get(following).cuts[sync.next_cut :]:
            yield pos, chunk(pos, c)
            pos = c
            release_below(segment_of(pos))
        if following == last and pos == end:
            return
        sync = yield from _bridge(segs, params, kernel, following, pos)


def _bridge(
    segs: _Segments, params: ChunkerParams, kernel: str | None, following: int, pos: int
) -> Generator[tuple[int, memoryview], None, _Sync | None]:
    """Bridge from `pos`, the true chunking's last cut in segment `following`: a fresh chunker
    started there (a true cut, so it continues the true chunking exactly) is fed the following
    bytes, BRIDGE_FEED at a time, and each chunk it cuts is yielded, until one of its cuts c is
    also a cut of the segment m that holds c (or m's first byte). Returns where to follow m
    from; None: the bridge reached the end."""
    bridge = make_chunker(params, kernel)
    base = fed = pos  # base: the bridge chunker's offset 0
    chunk, segment_of, end, bounds = segs.chunk, segs.segment_of, segs.end, segs.bounds
    while True:
        if fed == end:
            for c in bridge.finish():
                yield pos, chunk(pos, base + c)
            return None
        part = segs.part(fed, fed + BRIDGE_FEED)
        cuts = bridge.feed(part)
        fed += len(part)
        for cut in cuts:
            c = base + cut
            yield pos, chunk(pos, c)
            pos = c
            if pos == end:
                return None
            m = segment_of(pos)
            sync = None
            if m > following and pos == bounds[m]:
                sync = _Sync(m, 0, pos)
            elif m > following:
                candidates = segs.get(m).cuts
                k = bisect.bisect_left(candidates, pos)
                if k < len(candidates) and candidates[k] == pos:
                    sync = _Sync(m, k + 1, pos)
            segs.release_below(m)
            if sync is not None:
                return sync
