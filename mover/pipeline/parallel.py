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
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

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
    total = end - start
    if total <= 0:
        return
    # A volume smaller than streams x segment_size: `streams` ranges (of at least 4 KiB).
    size = max(min(segment_size, -(-total // streams)), 4096)
    count = -(-total // size)
    bounds = [start + i * size for i in range(count)] + [end]
    # Segments held at once: the ones being read, the one followed, and enough after it for a
    # bridge chunk (at most max_size) to be assembled from memory.
    window = streams + 2 + -(-(params.max_size + BRIDGE_FEED) // size)
    zeros = memoryview(bytes(max(READ_SIZE, params.max_size)))
    scratch = bytearray(params.max_size)
    free: list[bytearray] = []
    futures: dict[int, Future[_Segment]] = {}
    submitted = 0  # segments submitted so far: 0 .. submitted-1
    low = 0  # lowest segment not yet released

    def release_below(index: int) -> None:
        nonlocal low
        while low < index:
            seg = futures.pop(low).result()
            if seg.buffer is not None:
                free.append(seg.buffer)
            low += 1

    def get(index: int) -> _Segment:
        nonlocal submitted
        while submitted < count and submitted < low + window:
            seg_start, seg_end = bounds[submitted], bounds[submitted + 1]
            buffer = free.pop() if free else bytearray(size)
            seg = _Segment(seg_start, seg_end, buffer)
            futures[submitted] = pool.submit(_load, fd, params, kernel, seg, zeros)
            submitted += 1
        assert index < submitted, "a bridge chunk needs more segments than the window holds"
        return futures[index].result()

    def segment_of(offset: int) -> int:
        return min((offset - start) // size, count - 1)

    def chunk(a: int, b: int) -> memoryview:
        """The bytes [a, b): a view when one piece holds them, else a copy in scratch."""
        out = memoryview(scratch)[: b - a]
        filled = 0
        pos = a
        while pos < b:
            seg = get(segment_of(pos))
            i = bisect.bisect_right(seg.starts, pos) - 1
            offset, length, view = seg.pieces[i]
            n = min(b, offset + length) - pos
            part = zeros[:n] if view is None else view[pos - offset : pos - offset + n]
            if filled == 0 and n == b - a:
                return part
            out[filled : filled + n] = part
            filled += n
            pos += n
        return out

    pool = ThreadPoolExecutor(streams, thread_name_prefix="mover-stream")
    try:
        following = 0  # the segment whose chunker is the true one from pos on
        next_cut = 0  # index of its next cut
        pos = start
        while True:
            seg = get(following)
            for c in seg.cuts[next_cut:]:
                yield pos, chunk(pos, c)
                pos = c
                release_below(segment_of(pos))
            if following == count - 1 and pos == end:
                return
            # Bridge from pos, the true chunking's last cut in this segment.
            bridge = make_chunker(params, kernel)
            base = fed = pos  # base: the bridge chunker's offset 0
            synced = False
            while not synced:
                if fed == end:
                    for c in bridge.finish():
                        yield pos, chunk(pos, base + c)
                    return
                seg = get(segment_of(fed))
                i = bisect.bisect_right(seg.starts, fed) - 1
                offset, length, view = seg.pieces[i]
                n = min(offset + length - fed, BRIDGE_FEED)
                part = zeros[:n] if view is None else view[fed - offset : fed - offset + n]
                cuts = bridge.feed(part)
                fed += n
                for cut in cuts:
                    c = base + cut
                    yield pos, chunk(pos, c)
                    pos = c
                    if pos == end:
                        return
                    m = segment_of(pos)
                    if m > following and pos == bounds[m]:
                        following, next_cut, synced = m, 0, True
                    elif m > following:
                        candidates = get(m).cuts
                        k = bisect.bisect_left(candidates, pos)
                        if k < len(candidates) and candidates[k] == pos:
                            following, next_cut, synced = m, k + 1, True
                    release_below(m)
                    if synced:
                        break
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
