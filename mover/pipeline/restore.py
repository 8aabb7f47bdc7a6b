"""Restore a snapshot to a file or block device.

Extents are fetched and verified (authenticated, keyed hash equal to the id) by worker threads,
a batch of consecutive chunks into one recycled buffer (pipeline/fetch.py), and written at their
offsets with pwrite, so order does not matter. Holes: a regular file is truncated to the
volume's size first and holes are left unwritten (a sparse file); on a block device they are
written as zeros, since the device holds old data.

    _Fetches.plan (this thread: the tree walk, batches of consecutive chunks, a bounded window)
    -> _Fetcher (worker threads: fetch, verify, decompress into the batch's buffer) -> _Target
    (this thread, in order: writes, holes, bad ranges) -> _Flusher (a thread: fdatasync in the
    background)

A partial restore (partial=True) goes on past damage: a chunk that cannot be read (no index
entry, pack missing or truncated, blob failing authentication or its hash) or a subtree whose
node cannot be read is left as zeros like a hole, and its range is recorded in
RestoreStats.bad_ranges; the caller reports them (write_bad_ranges). Errors on the target
still stop the restore, and so does a temporary storage error (retrying may help).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import stat
import threading
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import NamedTuple

from mover.errors import MoverError, SourceError, StorageError, UsageError
from mover.objects.locks import as_reader
from mover.objects.repository import Repository
from mover.objects.snapshot import Snapshot
from mover.objects.tree import Extent, Unreadable, walk
from mover.pipeline.fetch import Buffers, read_chunks

ZERO_BLOCK = bytes(4 << 20)
# Bytes of chunks fetched ahead of the writer, counted as the buffers they hold (Buffers.cost:
# a batch holds at least RESTORE_BATCH), so this bounds the restore's memory.
RESTORE_WINDOW = 64 << 20
# A worker's task: consecutive chunks of at most this many bytes (or one larger chunk), in one
# buffer that is written with one pwrite.
RESTORE_BATCH = 2 << 20
# Entries (batches and holes) queued at most: holes take no bytes of the window, so a run of
# many small holes is bounded by count.
MAX_QUEUED = 4096
# Bytes written between two background flushes (see _Flusher). What is left for the last fsync
# is at most this much: 16 MiB left a tail of ~10 ms after the last write, 64 MiB ~45 ms
# (1 GiB fs image; 8 MiB was no better).
FLUSH_EVERY = 16 << 20


@dataclass
class BadRange:
    """A range of the volume that could not be read and was left as zeros. Adjacent ranges are
    merged: `pieces` counts the unreadable chunks or subtrees it covers, `reason` is the first
    one's (describe() adds how many more there are)."""

    offset: int
    length: int
    reason: str
    pieces: int = 1

    def describe(self) -> str:
        more = self.pieces - 1
        if not more:
            return self.reason
        return f"{self.reason} (and {more} more in this range)"


@dataclass
class RestoreStats:
    bytes_written: int = 0
    hole_bytes: int = 0
    chunks: int = 0
    bad_bytes: int = 0  # partial restore: bytes left as zeros because they cannot be read
    bad_ranges: list[BadRange] = field(default_factory=list)  # in offset order, merged

    def add_bad(self, offset: int, length: int, reason: str) -> None:
        self.bad_bytes += length
        last = self.bad_ranges[-1] if self.bad_ranges else None
        if last is not None and last.offset + last.length == offset:
            last.length += length
            last.pieces += 1
        else:
            self.bad_ranges.append(BadRange(offset, length, reason))


class _Bad(NamedTuple):
    reason: str


class _Fetched(NamedTuple):
    """A batch's chunks, verified, one after the other in `buffer` (recycled: given back to the
    fetcher's Buffers once written)."""

    buffer: bytearray


class _Damaged(NamedTuple):
    """A batch fetched chunk by chunk after one of its chunks failed: its buffer, where the
    chunks that could be read are, and per chunk None (read) or why it cannot be read."""

    buffer: bytearray
    items: list[_Bad | None]


def _is_damage(exc: MoverError) -> bool:
    """Whether a partial restore records the error and goes on: anything but a temporary
    storage failure (the repository may be fine once the network is)."""
    return not (isinstance(exc, StorageError) and exc.temporary)


def _chunk_reason(chunk_id: bytes, exc: MoverError) -> str:
    message = str(exc)
    return message if message.startswith("chunk ") else f"chunk {chunk_id.hex()[:16]}: {message}"


def open_target(path: str, size: int, force: bool) -> tuple[int, bool]:
    """(fd, is_block_device)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise SourceError(f"cannot use restore target {path}: {exc.strerror}") from None
    if st is not None and stat.S_ISBLK(st.st_mode):
        fd = os.open(path, os.O_WRONLY)
        capacity = os.lseek(fd, 0, os.SEEK_END)
        if capacity < size:
            os.close(fd)
            raise SourceError(
                f"restore target {path} is too small: {capacity} bytes, the snapshot needs {size}"
            )
        return fd, True
    # Targets the user named wrongly are input errors (exit 2); failures of a usable target are
    # SourceError (exit 1).
    if st is not None and not stat.S_ISREG(st.st_mode):
        raise UsageError(f"restore target {path} is neither a regular file nor a block device")
    if st is not None and st.st_size > 0 and not force:
        raise UsageError(
            f"restore target {path} exists and is not empty; pass --force to overwrite it"
        )
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
        os.ftruncate(fd, 0)
        os.ftruncate(fd, size)
    except FileNotFoundError:
        raise UsageError(
            f"cannot create restore target {path}: its directory does not exist"
        ) from None
    except OSError as exc:
        raise SourceError(f"cannot create restore target {path}: {exc.strerror}") from None
    return fd, False


class _Allocator:
    """fallocate(2) of each range of a fresh file just before it is written: ext4 then maps the
    blocks once per 2 MiB batch instead of reserving delayed blocks page by page in the write
    and allocating them in writeback; writing 650 MiB in 2 MiB runs took 0.10 s of CPU instead
    of 0.155 s (measured, ext4, Linux 6.18). Only the written ranges are allocated, so holes
    stay holes. The system call, not os.posix_fallocate: glibc emulates that on file systems
    without fallocate by writing a byte per block. Where the call fails for any reason the
    restore goes on with plain writes, a full disk included: on a compressing file system
    (btrfs compress=) a reservation may fail where the compressed writes fit, so only the
    write may say the disk is full."""

    def __init__(self) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        call = getattr(libc, "fallocate64", None) or getattr(libc, "fallocate", None)
        if call is not None:
            call.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64)
            call.restype = ctypes.c_int
        self._call = call  # ctypes releases the GIL for the call

    def __call__(self, fd: int, offset: int, length: int) -> None:
        if self._call is not None and self._call(fd, 0, offset, length) != 0:
            self._call = None  # plain writes from here on


class _Flusher:
    """Flushes the target to disk in the background while the restore goes on writing.

    A restore ends with fsync, and the disk then has to take everything still in the page
    cache: measured, 0.33 s of a 1.1 s restore of 1 GiB, with no other work left to hide it.
    Flushing every FLUSH_EVERY bytes from another thread overlaps the disk's work with the
    fetching and decoding, so the last fsync finds little left to write."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.pending = 0
        self.error: OSError | None = None
        self._wake = threading.Event()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="mover-flush", daemon=True)
        self._thread.start()

    def wrote(self, n: int) -> None:
        self.pending += n
        if self.pending >= FLUSH_EVERY:
            self.pending = 0
            self._wake.set()

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            if self._stop:
                return
            try:
                os.fdatasync(self.fd)
            except OSError as exc:  # reported by finish(): the last fsync would fail too
                self.error = exc
                return

    def stop(self) -> None:
        self._stop = True
        self._wake.set()
        self._thread.join()

    def finish(self) -> None:
        """Stop the thread and report its error; then the caller's fsync makes everything
        durable."""
        self.stop()
        if self.error is not None:
            raise self.error


class _Fetcher:
    """The workers' step: reads a batch of consecutive chunks into a buffer from `buffers`,
    each verified (authenticated, keyed hash equal to its id, length as the tree says) and
    decompressed (read_chunks). With `partial`, a batch with damage is read again chunk by
    chunk and comes back as _Damaged. Runs on the worker threads, several batches at once, so
    it keeps no state but the buffers; a temporary storage error, or any with partial off, is
    raised."""

    def __init__(self, repo: Repository, partial: bool) -> None:
        self.repo = repo
        self.partial = partial
        self.buffers = Buffers(RESTORE_BATCH)

    def __call__(self, batch: list[Extent]) -> _Fetched | _Damaged:
        buffer = self.buffers.take(sum(e.length for e in batch))
        try:
            read_chunks(self.repo, batch, memoryview(buffer))
        except MoverError as exc:
            if not self.partial or not _is_damage(exc):
                raise
            return self.fetch_damaged(batch, buffer)
        return _Fetched(buffer)

    def fetch_damaged(self, batch: list[Extent], buffer: bytearray) -> _Damaged:
        """Damage in this batch (rare): again, chunk by chunk, keeping what can be read."""
        items: list[_Bad | None] = []
        at = 0
        for extent in batch:
            assert extent.chunk_id is not None
            try:
                read_chunks(self.repo, [extent], memoryview(buffer)[at : at + extent.length])
                items.append(None)
            except MoverError as exc:
                if not _is_damage(exc):
                    raise
                items.append(_Bad(_chunk_reason(extent.chunk_id, exc)))
            at += extent.length
        return _Damaged(buffer, items)


class _Target:
    """The ordered writer, on the caller's thread: writes what the workers fetched to the
    target at its offsets (a batch of consecutive chunks in one pwrite, on a file its range
    allocated first: _Allocator), leaves holes unwritten on a file (truncated to the volume's
    size: a sparse file) and writes them as zeros on a block device (it holds old data), and
    keeps the stats: bytes written, holes, and the bad ranges of a partial restore, left as
    zeros like holes. One thread writes: writers on several threads contend for the target's
    inode lock (perf showed rwsem spinning), and the page-cache copy is the same work whichever
    thread does it (workers writing their own batches were no faster on 2 cores, 1 GiB fs
    image). Reports progress after each entry."""

    def __init__(
        self,
        fd: int,
        is_device: bool,
        flusher: _Flusher,
        stats: RestoreStats,
        progress: Callable[[RestoreStats], None] | None,
    ) -> None:
        self.fd = fd
        self.is_device = is_device
        self.allocate = None if is_device else _Allocator()
        self.flusher = flusher
        self.stats = stats
        self.progress = progress

    def hole(self, extent: Extent) -> None:
        """A hole, or with partial a subtree that cannot be read (Unreadable): zeros."""
        if self.is_device:  # a device holds old data: holes are written as zeros
            self.write_zeros(extent.offset, extent.length)
        if isinstance(extent, Unreadable):
            self.stats.add_bad(extent.offset, extent.length, extent.reason)
        else:
            self.stats.hole_bytes += extent.length
        self.report()

    def chunks(self, extents: list[Extent], result: _Fetched | _Damaged, length: int) -> None:
        """A batch of consecutive chunks (`length` bytes), as fetched."""
        if isinstance(result, _Damaged):
            self.damaged(extents, result)
        else:
            self.write_run(memoryview(result.buffer)[:length], extents[0].offset)
            self.stats.bytes_written += length
            self.stats.chunks += len(extents)
        self.report()

    def damaged(self, extents: list[Extent], damaged: _Damaged) -> None:
        """A batch with damage: the chunks read are written (in runs), the others are left as
        zeros and recorded as bad ranges."""
        stats = self.stats
        view = memoryview(damaged.buffer)
        base = extents[0].offset  # the chunks are consecutive: buffer[i] is at base + i
        run_at = run_end = 0  # the run of chunks read, not written yet: buffer[run_at:run_end]
        for extent, bad in zip(extents, damaged.items, strict=True):
            if bad is None:
                run_end += extent.length
                stats.bytes_written += extent.length
                stats.chunks += 1
                continue
            if run_end > run_at:
                self.write_run(view[run_at:run_end], base + run_at)
            run_at = run_end = run_end + extent.length
            if self.is_device:
                self.write_zeros(extent.offset, extent.length)
            stats.add_bad(extent.offset, extent.length, bad.reason)
        if run_end > run_at:
            self.write_run(view[run_at:run_end], base + run_at)

    def report(self) -> None:
        if self.progress:
            self.progress(self.stats)

    def write_at(self, data: bytes | memoryview, offset: int) -> None:
        view = memoryview(data)
        while view:
            written = os.pwrite(self.fd, view, offset)
            view, offset = view[written:], offset + written

    def write_zeros(self, offset: int, length: int) -> None:
        for start in range(0, length, len(ZERO_BLOCK)):
            n = min(len(ZERO_BLOCK), length - start)
            self.write_at(memoryview(ZERO_BLOCK)[:n], offset + start)
            self.flusher.wrote(n)

    def write_run(self, data: memoryview, offset: int) -> None:
        """Consecutive chunks at offset, in one system call where the kernel takes them all."""
        self.flusher.wrote(len(data))
        if self.allocate is not None:
            self.allocate(self.fd, offset, len(data))
        self.write_at(data, offset)


# A hole (future None: one extent) or a batch of consecutive chunks being fetched.
_Entry = tuple[list[Extent], Future[_Fetched | _Damaged] | None]


class _Fetches:
    """The plan in flight, on the caller's thread: plan() walks the snapshot's extents in offset
    order, groups consecutive chunks into batches of at most RESTORE_BATCH bytes (the size of
    a recycled buffer; a larger chunk is a batch alone) for the workers (a task and a thread
    wake-up per chunk cost ~15% of a restore of small chunks: perf), and
    queues batches and holes in order, at most RESTORE_WINDOW bytes of buffers and MAX_QUEUED
    entries: when either is full, the oldest entry is waited for and written."""

    def __init__(self, pool: ThreadPoolExecutor, fetch: _Fetcher, target: _Target) -> None:
        self.pool = pool
        self.fetch = fetch
        self.target = target
        self.inflight: deque[_Entry] = deque()
        self.inflight_bytes = 0

    def plan(self, extents: Iterable[Extent]) -> None:
        """Fetch and write every extent, in order; returns when all are written."""
        # The batch being filled lives in locals: this loop runs once a chunk.
        batch: list[Extent] = []
        batch_bytes = 0
        for extent in extents:
            if extent.chunk_id is None:
                if batch:  # a batch is consecutive chunks: one write
                    self.send_batch(batch, batch_bytes)
                    batch, batch_bytes = [], 0
                self.send(([extent], None))
                continue
            if batch and batch_bytes + extent.length > RESTORE_BATCH:
                self.send_batch(batch, batch_bytes)
                batch, batch_bytes = [], 0
            batch.append(extent)
            batch_bytes += extent.length
        if batch:
            self.send_batch(batch, batch_bytes)
        while self.inflight:
            self.finish_one()

    def send_batch(self, batch: list[Extent], batch_bytes: int) -> None:
        self.send((batch, self.pool.submit(self.fetch, batch)))
        self.inflight_bytes += self.fetch.buffers.cost(batch_bytes)

    def send(self, entry: _Entry) -> None:
        inflight = self.inflight
        while inflight and (self.inflight_bytes >= RESTORE_WINDOW or len(inflight) > MAX_QUEUED):
            self.finish_one()
        inflight.append(entry)

    def finish_one(self) -> None:
        extents, future = self.inflight.popleft()
        if future is None:
            (extent,) = extents
            self.target.hole(extent)
        else:
            result = future.result()
            length = sum(e.length for e in extents)
            self.inflight_bytes -= self.fetch.buffers.cost(length)
            self.target.chunks(extents, result, length)
            self.fetch.buffers.give(result.buffer)  # written: the next batch may use it


@as_reader
def run_restore(
    repo: Repository,
    snapshot: Snapshot,
    target: str,
    force: bool = False,
    threads: int | None = None,
    progress: Callable[[RestoreStats], None] | None = None,
    partial: bool = False,
) -> RestoreStats:
    """Restore `snapshot` to `target`. With `partial`, damage in the repository does not stop
    the restore: unreadable ranges are left as zeros and listed in the stats' bad_ranges."""
    threads = threads or os.cpu_count() or 1
    root = bytes.fromhex(snapshot.tree)
    repo.index  # noqa: B018 -- load before the workers use it
    fd, is_device = open_target(target, snapshot.size, force)
    stats = RestoreStats()
    flusher = _Flusher(fd)
    # Workers fetch, decrypt, decompress and verify batches of consecutive chunks (_Fetcher);
    # this thread plans (walks the tree) and writes, in order (_Fetches, _Target).
    try:
        with ThreadPoolExecutor(threads, thread_name_prefix="mover-restore") as pool:
            fetches = _Fetches(
                pool, _Fetcher(repo, partial), _Target(fd, is_device, flusher, stats, progress)
            )
            fetches.plan(walk(repo.read_blob, root, snapshot.size if partial else None))
        flusher.finish()
        os.fsync(fd)
    except OSError as exc:
        raise SourceError(
            f"cannot write restore target {target}: {exc.strerror}; {target} is incomplete"
        ) from None
    except MoverError as exc:
        raise type(exc)(f"{exc}; restore stopped, {target} is incomplete") from None
    finally:
        flusher.stop()  # before the fd is closed: it may be in fdatasync
        os.close(fd)
    return stats


def write_bad_ranges(
    path: str, snapshot_id: str, target: str, size: int, stats: RestoreStats
) -> None:
    """The list of a partial restore's unreadable ranges, as JSON, written atomically (a temp
    file in the same directory, fsync, rename): a reader never sees half a list."""
    body = {
        "snapshot": snapshot_id,
        "target": target,
        "size": size,
        "bad_bytes": stats.bad_bytes,
        "ranges": bad_ranges_json(stats),
    }
    directory, name = os.path.split(os.path.abspath(path))
    temp = os.path.join(directory, f".{name}.{os.getpid()}.tmp")
    try:
        with open(temp, "w", encoding="utf-8") as f:
            json.dump(body, f, indent=2)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, path)
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise SourceError(
            f"cannot write the list of unreadable ranges {path}: {exc.strerror}"
        ) from None


def bad_ranges_json(stats: RestoreStats) -> list[dict[str, object]]:
    return [
        {"offset": r.offset, "length": r.length, "reason": r.describe()} for r in stats.bad_ranges
    ]
