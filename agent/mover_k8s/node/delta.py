"""Restore by difference: make a volume hold a snapshot's bytes, fetching from the repository
only the chunks the volume does not hold already at their offset.

A migration seeds the target's volumes while the app still runs on the source, and at cut over
restores the last incremental backup into them: most chunks are there already. For each extent
of the snapshot's tree the volume's bytes at that offset are read and hashed with the
repository's keyed chunk hash; equal to the chunk's id, they are the chunk's bytes (the hash is
the id, as in a backup), and nothing is fetched or written. Otherwise the chunk is fetched,
verified and written. A hole is left alone where the volume reads as zeros there (on a sparse
file, a hole of the file is not even read) and written as zeros otherwise. So the result is the
snapshot's content whatever the volume held before, with no trust in what it was said to hold:
the volume's own bytes are the check.

Costs: the volume is read once (local disk), every chunk hashed (BLAKE3, several GB/s on all
cores); only the changed chunks cross the network. A regular file is truncated or extended to the
snapshot's size; a block device must be at least that large.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from mover import api as mover_api
from mover.api import Extent, Repository, Snapshot
from mover.errors import IntegrityError, MoverError, SourceError

BATCH = 4 << 20  # bytes of extents one worker task compares (and fetches, where they differ)
ZEROS = bytes(1 << 20)
HOLE_BLOCK = 64 << 10  # a hole is compared (and zeroed where it is not zero) in such blocks


@dataclass
class DeltaStats:
    bytes_fetched: int = 0  # chunk bytes read from the repository and written
    bytes_zeroed: int = 0  # hole bytes written as zeros (the volume held data there)
    bytes_unchanged: int = 0  # bytes the volume held already (chunks and holes)
    chunks_fetched: int = 0
    chunks_unchanged: int = 0

    @property
    def bytes_written(self) -> int:
        return self.bytes_fetched + self.bytes_zeroed

    @property
    def bytes_done(self) -> int:
        return self.bytes_written + self.bytes_unchanged

    def add(self, other: DeltaStats) -> None:
        self.bytes_fetched += other.bytes_fetched
        self.bytes_zeroed += other.bytes_zeroed
        self.bytes_unchanged += other.bytes_unchanged
        self.chunks_fetched += other.chunks_fetched
        self.chunks_unchanged += other.chunks_unchanged


def _open(path: str, size: int) -> tuple[int, bool]:
    """(fd opened for reading and writing, is a block device), sized for the snapshot."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise SourceError(f"cannot use restore target {path}: {exc.strerror}") from None
    if stat.S_ISBLK(st.st_mode):
        fd = os.open(path, os.O_RDWR)
        capacity = os.lseek(fd, 0, os.SEEK_END)
        if capacity < size:
            os.close(fd)
            raise SourceError(
                f"restore target {path} is too small: {capacity} bytes, the snapshot needs {size}"
            )
        return fd, True
    if not stat.S_ISREG(st.st_mode):
        raise SourceError(f"restore target {path} is neither a regular file nor a block device")
    fd = os.open(path, os.O_RDWR)
    if st.st_size != size:
        os.ftruncate(fd, size)
    return fd, False


def _is_hole(fd: int, offset: int, length: int) -> bool:
    """Whether the file has no data in [offset, offset + length) (SEEK_DATA); False when the
    filesystem cannot say."""
    try:
        return os.lseek(fd, offset, os.SEEK_DATA) >= offset + length
    except OSError as exc:
        return exc.errno == errno.ENXIO  # no data at all after offset


def _reads_zero(fd: int, offset: int, length: int) -> bool:
    done = 0
    while done < length:
        n = min(len(ZEROS), length - done)
        data = os.pread(fd, n, offset + done)
        if len(data) < n or data != ZEROS[:n]:
            return False
        done += n
    return True


def _write_zeros(fd: int, offset: int, length: int) -> None:
    done = 0
    while done < length:
        n = min(len(ZEROS), length - done)
        done += os.pwrite(fd, ZEROS[:n], offset + done)


def _write(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


def restore_delta(
    repo: Repository,
    snapshot: Snapshot,
    target: str,
    threads: int | None = None,
    progress: Callable[[DeltaStats], None] | None = None,
) -> DeltaStats:
    """Make `target` (a file or block device) hold `snapshot`; fetch only what differs."""
    threads = threads or os.cpu_count() or 1
    repo.index  # noqa: B018 -- load before the workers use it
    master = repo.master
    fd, is_device = _open(target, snapshot.size)
    total = DeltaStats()

    def compare(batch: list[Extent]) -> DeltaStats:
        stats = DeltaStats()
        for extent in batch:
            if extent.chunk_id is None:  # a hole: zeros, block by block, where not zero
                at, end = extent.offset, extent.offset + extent.length
                while at < end:
                    n = min(HOLE_BLOCK - at % HOLE_BLOCK, end - at)  # aligned blocks
                    if (not is_device and _is_hole(fd, at, n)) or _reads_zero(fd, at, n):
                        stats.bytes_unchanged += n
                    else:
                        _write_zeros(fd, at, n)
                        stats.bytes_zeroed += n
                    at += n
                continue
            held = os.pread(fd, extent.length, extent.offset)
            if len(held) == extent.length and master.chunk_id_of(held) == extent.chunk_id:
                stats.bytes_unchanged += extent.length
                stats.chunks_unchanged += 1
                continue
            data = repo.read_blob(extent.chunk_id)
            if len(data) != extent.length:
                raise IntegrityError(
                    f"chunk {extent.chunk_id.hex()[:16]} has {len(data)} bytes, the tree says "
                    f"{extent.length}"
                )
            _write(fd, data, extent.offset)
            stats.bytes_fetched += extent.length
            stats.chunks_fetched += 1
        return stats

    def settle(future: Future[DeltaStats]) -> None:
        total.add(future.result())
        if progress:
            progress(total)

    try:
        with ThreadPoolExecutor(threads, thread_name_prefix="mover-delta") as pool:
            inflight: list[Future[DeltaStats]] = []
            batch: list[Extent] = []
            batch_bytes = 0
            for extent in mover_api.extents(repo, snapshot.tree):
                batch.append(extent)
                batch_bytes += extent.length if extent.chunk_id is not None else 0
                if batch_bytes >= BATCH or len(batch) >= 1024:
                    inflight.append(pool.submit(compare, batch))
                    batch, batch_bytes = [], 0
                    while len(inflight) > 2 * threads:
                        settle(inflight.pop(0))
            if batch:
                inflight.append(pool.submit(compare, batch))
            for future in inflight:
                settle(future)
        os.fsync(fd)
    except OSError as exc:
        raise SourceError(
            f"cannot write restore target {target}: {exc.strerror}; {target} is incomplete"
        ) from None
    except MoverError as exc:
        raise type(exc)(f"{exc}; restore stopped, {target} is incomplete") from None
    finally:
        os.close(fd)
    return total
