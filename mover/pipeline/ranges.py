"""Byte-range lists named on the command line: `backup --changed-ranges FILE` (what may differ
from the parent snapshot) and `backup --allocated-ranges FILE` (what the storage holds data in).

FILE: one `OFFSET LENGTH` pair a line, decimal, in ascending order and not overlapping (what
changed-block-tracking APIs return: CSI GetMetadataDelta/Allocated, EBS ListChangedBlocks,
VMware QueryChangedDiskAreas); blank lines and lines starting with `#` are ignored; `-` reads
the list from stdin. Touching ranges are merged.

The whole list is parsed and checked against the source's size before anything is written, so
a bad list is one line of error and nothing else. It is spooled to an anonymous temporary file
as u64 pairs and read back in blocks: memory stays O(1) however many ranges a TiB volume's
change list holds (a 1% change scattered in 4 KiB blocks is ~2.7 million ranges).
"""

from __future__ import annotations

import os
import sys
import tempfile
from array import array
from collections.abc import Iterator
from typing import BinaryIO

from mover.errors import UsageError
from mover.pipeline.parallel import extents
from mover.pipeline.source import Lease, ReadBuffers

Piece = tuple[memoryview, Lease | None]
_BLOCK = 4096  # pairs written or read back at a time
_MAX = (1 << 64) - 1


class RangeList:
    """Sorted, disjoint, non-adjacent [start, end) ranges, iterated from a spool file."""

    def __init__(self, spool: BinaryIO, count: int, total: int, name: str) -> None:
        self._spool = spool
        self.count = count  # ranges, after merging touching ones
        self.total = total  # bytes they cover
        self.name = name  # the file, for messages

    def __iter__(self) -> Iterator[tuple[int, int]]:
        """(start, end) in ascending order, from the first; iterations are independent."""
        fd = self._spool.fileno()
        done = 0
        while done < self.count:
            n = min(self.count - done, _BLOCK)
            pairs = array("Q")
            pairs.frombytes(os.pread(fd, 16 * n, 16 * done))
            for i in range(0, 2 * n, 2):
                yield pairs[i], pairs[i + 1]
            done += n

    def close(self) -> None:
        self._spool.close()

    def __enter__(self) -> RangeList:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_ranges(path: str, size: int, option: str) -> RangeList:
    """Parse FILE (`-`: stdin) for a source of `size` bytes; UsageError naming the option, the
    file and the line for anything wrong: the file missing or unreadable, a line that is not
    two decimal numbers, a zero length, a range past the end, one that starts before the end of
    the previous (overlapping or out of order)."""
    where = f"{option} {path}"
    try:
        f: BinaryIO = sys.stdin.buffer if path == "-" else open(path, "rb")  # noqa: SIM115
    except FileNotFoundError:
        raise UsageError(f"{where}: no such file") from None
    except IsADirectoryError:
        raise UsageError(f"{where} is a directory; give a file of `OFFSET LENGTH` lines") from None
    except OSError as exc:
        raise UsageError(f"{where}: cannot read it: {exc.strerror or exc}") from None
    spool: BinaryIO = tempfile.TemporaryFile()  # noqa: SIM115 -- owned by the RangeList
    try:
        count, total = _parse(f, spool, size, where)
    except BaseException:
        spool.close()
        raise
    finally:
        if f is not sys.stdin.buffer:
            f.close()
    return RangeList(spool, count, total, path)


def _parse(f: BinaryIO, spool: BinaryIO, size: int, where: str) -> tuple[int, int]:
    pairs = array("Q")
    count = total = 0
    start = end = -1  # the range being merged; none yet
    number = 0
    try:
        for number, raw in enumerate(f, 1):
            line = raw.strip()
            if not line or line.startswith(b"#"):
                continue
            fields = line.split()
            if len(fields) != 2 or not all(x.isdigit() for x in fields):
                shown = line[:60].decode("utf-8", "replace")
                raise UsageError(
                    f"{where} line {number}: expected `OFFSET LENGTH` (two decimal numbers), "
                    f"got {shown!r}"
                )
            offset, length = int(fields[0]), int(fields[1])
            if length == 0:
                raise UsageError(f"{where} line {number}: a range of length 0")
            if offset + length > size:
                raise UsageError(
                    f"{where} line {number}: range {offset}+{length} ends at byte "
                    f"{offset + length}, past the end of the source ({size} bytes)"
                )
            if offset < end:
                raise UsageError(
                    f"{where} line {number}: range {offset}+{length} starts before the end of "
                    f"the previous one (byte {end}); list ranges in ascending order without "
                    "overlaps"
                )
            total += length
            if offset == end:  # touching: one range
                end = offset + length
                continue
            if end >= 0:
                pairs.extend((start, end))
                count += 1
                if len(pairs) >= 2 * _BLOCK:
                    spool.write(pairs.tobytes())
                    del pairs[:]
            start, end = offset, offset + length
    except OSError as exc:
        raise UsageError(f"{where}: cannot read it: {exc.strerror or exc}") from None
    if end >= 0:
        pairs.extend((start, end))
        count += 1
    spool.write(pairs.tobytes())
    spool.flush()
    return count, total


def allocated_pieces(
    source: BinaryIO,
    buffers: ReadBuffers,
    zeros: bytes,
    allocated: RangeList,
    size: int,
    start: int = 0,
) -> Iterator[Piece]:
    """As mover.pipeline.source.pieces, but only the `allocated` ranges are read: everything else
    comes as views of `zeros` (no lease), like a sparse file's holes, and is stored as holes. Holes
    of a regular file inside an allocated range are not read either. A short read (the source
    shrank) ends the pieces: the caller compares what it got with what it expected."""
    fd = source.fileno()
    zero_view = memoryview(zeros)

    def gap(a: int, b: int) -> Iterator[Piece]:
        while a < b:
            n = min(len(zero_view), b - a)
            yield zero_view[:n], None
            a += n

    pos = start
    for first, end in allocated:
        if end <= pos:
            continue
        yield from gap(pos, max(first, pos))
        for offset, length, is_data in extents(fd, max(first, pos), end):
            if not is_data:
                yield from gap(offset, offset + length)
                continue
            done = 0
            while done < length:
                lease = buffers.take()
                view = memoryview(lease.buffer)[: min(buffers.size, length - done)]
                n = os.preadv(fd, [view], offset + done)
                if n <= 0:
                    lease.release()
                    return
                yield view[:n], lease
                done += n
        pos = end
    yield from gap(pos, size)
