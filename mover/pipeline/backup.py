"""The backup pipeline: run_backup checks its options (_job) and wires these steps.

    source step: reader+chunker (this thread; _SerialSource, _ParallelSource, _ChangedSource)
    -> Batches of chunks -> workers (Encoder: zero test, keyed BLAKE3, dedup lookup, zstd,
    AEAD) -> in-order Consumer (tree, Packer) -> uploader threads -> index -> snapshot (_commit)

The source steps are here; what comes after the cut (and the Checkpointer, which the source
steps call at cuts) is in mover.pipeline.sink.

Work goes to the workers in batches of about BATCH_BYTES (a few chunks), not chunk by chunk:
on data already stored a chunk costs ~30 us of hashing, and a task and future per chunk, plus
the GIL handed back and forth for each, cost as much again (py-spy: the workers waited on the
GIL most of the time and the reader thread was the bottleneck). Chunks are views of recycled
read buffers (mover.pipeline.source.ReadBuffers): a batch holds its buffer's lease until its worker
is done with it, so nothing is copied on the way to a worker except a chunk that spans two reads.

With streams > 1 the reader+chunker is mover.pipeline.parallel (N threads, the same chunks, in
order). With a change list (mover.pipeline.changed) it is a ChangedReader: it reads and chunks only
around the changed ranges and hands the parent's chunks for the rest as ready results, which join
the same in-order queue; with an allocation list (mover.pipeline.ranges) unlisted ranges read as
holes. Every checkpoint interval the pipeline drains, the index is flushed and a checkpoint
(mover.objects.checkpoint) records the offset reached; the next backup of the same source resumes
there.

Memory is bounded by configuration: at most INFLIGHT_BYTES (or two batches a worker) of chunks
in flight, which hold the read buffers they are views of (plus one being chunked), the packs
(none in memory on a local disk, which takes each pack as a stream; elsewhere recycled pack
buffers: one filling, one for each upload in flight, at most packwriter.MAX_UPLOADS), and
pending index entries flushed every INDEX_FLUSH chunks. The chunker,
BLAKE3 and zstd release the GIL on large buffers, so the workers keep every core busy (py-spy:
both workers >90% busy, in zstd, on a first backup). AES-GCM from `cryptography` holds the GIL,
measured: it does not scale with threads, but at ~15 GB/s it costs a few percent of one core.

Objects are written in dependency order (packs, then the index that points into them, then the
snapshot), so a crash at any point leaves only unreferenced objects behind.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import BinaryIO

from mover.chunking import is_zero, make_chunker
from mover.errors import SourceError, UsageError
from mover.objects.checkpoint import (
    DEFAULT_INTERVAL,
    Checkpoints,
    Notify,
    Resume,
    identity_of,
    restored_tree,
)
from mover.objects.locks import as_writer
from mover.objects.packwriter import PackWriter, upload_threads
from mover.objects.repository import Repository
from mover.objects.snapshot import Snapshot
from mover.pipeline.changed import ChangedRanges, ChangedReader, Reused, check_size
from mover.pipeline.level import level_for
from mover.pipeline.parallel import parallel_chunks
from mover.pipeline.ranges import RangeList, allocated_pieces
from mover.pipeline.sink import (
    BackupStats,
    Batches,
    Checkpointer,
    Consumer,
    Encoder,
    Limits,
    Packer,
    Progress,
    Result,
)
from mover.pipeline.source import Piece, ReadBuffers, pieces, source_size

READ_SIZE = 4 << 20
BATCH_BYTES = 2 << 20  # a worker's task: the chunks of about this many bytes
# Of a hole, the chunker sees only the head: enough for its first cut inside the zeros, which
# comes at most min_size in; the rest is cut arithmetically (skip_hole in mover.pipeline.sink).
# None: 2 x min_size.
HOLE_HEAD: int | None = None
ZEROS = bytes(max(8 << 20, READ_SIZE))  # at least a read: _zeros_as_holes hands out views
ZERO_VIEW = memoryview(ZEROS)
INDEX_FLUSH = 65536
# The floor of the window of chunks in flight (two batches a worker, below, sets it from 3
# threads up). 8 rather than 16 MiB: on 2 threads the window is 12 MiB instead of 16, one read
# buffer fewer and fewer sealed blobs waiting; a new-data backup of 1 GiB peaked 8 MiB lower
# (84 -> 76 MiB above the KDF, 5 runs each), with the same CPU time and the same speed on new
# and on unchanged data.
INFLIGHT_BYTES = 8 << 20
# Results taken from a parent (mover.pipeline.changed) cost no bytes in flight: a batch holds at
# most BATCH_ENTRIES entries and at most INFLIGHT_BATCHES batches are queued, so a long unchanged
# stretch of a volume is bounded by count (~100 bytes an entry).
BATCH_ENTRIES = 1024
INFLIGHT_BATCHES = 64

# BackupStats lives in mover.pipeline.sink, whose objects count into it; the CLI and mover.api
# take it from here.
__all__ = ["BackupStats", "Progress", "run_backup"]


@dataclass(frozen=True)
class _Job:
    """run_backup's arguments, checked (_job): what to read, and how."""

    repo: Repository
    source: BinaryIO
    name: str
    threads: int
    streams: int
    expected: int | None  # the source's size; None: a stream (a pipe), read to its end
    interval: int | None  # bytes between checkpoints; None or 0: no checkpoints
    changed: ChangedRanges | None
    allocated: RangeList | None


class _Source:
    """A source step, on the caller's thread: run() reads the source from `start` (a cut) and
    submits its chunks to the batches in order, tells the checkpointer of the cuts where a
    checkpoint may be taken, and keeps the stats' read counters. covered(), after run(): the
    offset that the chunks submitted reach (compared with the size: a source may shrink)."""

    def __init__(
        self,
        job: _Job,
        start: int,
        consumer: Consumer,
        batches: Batches,
        checkpointer: Checkpointer,
    ) -> None:
        self.job = job
        self.start = start
        self.consumer = consumer
        self.stats = consumer.stats
        self.batches = batches
        self.checkpointer = checkpointer

    def run(self) -> None:
        raise NotImplementedError

    def covered(self) -> int:
        return self.start + self.stats.bytes_read


class _ChangedSource(_Source):
    """--changed-ranges: a ChangedReader reads and chunks only around the changed ranges and
    hands the parent's chunks for the rest as results known already. Never checkpointed."""

    reader: ChangedReader

    def run(self) -> None:
        job, stats, submit = self.job, self.stats, self.batches.submit
        assert job.expected is not None and job.changed is not None
        self.reader = reader = ChangedReader(
            job.repo, job.source.fileno(), job.expected, job.name, job.changed, job.threads
        )
        for item in reader.items():
            if isinstance(item, Reused):
                submit(Result(item.length, item.chunk_id, None, item.count))
            else:
                submit(item)
            stats.bytes_read, stats.parent_bytes = reader.bytes_read, reader.parent_bytes
        stats.verify_bytes = reader.verify_bytes

    def covered(self) -> int:
        return self.reader.covered


class _ParallelSource(_Source):
    """--streams N: mover.pipeline.parallel reads and chunks N ranges at once and yields the
    chunks one stream would cut, in order."""

    def run(self) -> None:
        job, stats = self.job, self.stats
        submit, at_cut = self.batches.submit, self.checkpointer.at_cut
        assert job.expected is not None
        for offset, chunk in parallel_chunks(
            job.source.fileno(), job.repo.config.chunker, job.streams, self.start, job.expected
        ):
            stats.bytes_read += len(chunk)
            submit(bytes(chunk))  # the view is valid only until the next chunk
            at_cut(offset + len(chunk))


def _zeros_as_holes(source_pieces: Iterator[Piece]) -> Iterator[Piece]:
    """Pieces read as all zeros (a block device's free space, a dense image's) handed on as
    holes are: views of ZEROS, which the source step cuts arithmetically (skip_hole) instead of
    sending their minimum-size chunks through the chunker and the batches one by one. The same
    chunks; an unchanged backup of the dense 1 GiB fs image of benchmarks.peers (half of it free
    space) took 0.60-0.64 s instead of 0.64-0.81 s (3 alternating runs)."""
    for piece, lease in source_pieces:
        if lease is not None and is_zero(piece):  # 38 GB/s, and exits at the first non-zero byte
            lease.release()
            yield ZERO_VIEW[: len(piece)], None
        else:
            yield piece, lease


class _SerialSource(_Source):
    """One stream (a file, a device or a pipe; with --allocated-ranges, only the allocated
    ranges) read in pieces into recycled buffers (mover.pipeline.source.pieces) and chunked as
    they come. Owns the chunker and `pending`, the start of a chunk that began in an earlier
    piece. Of a hole longer than a few minimum chunks only the head goes through the chunker;
    the rest is cut arithmetically (skip_hole)."""

    def __init__(
        self,
        job: _Job,
        start: int,
        consumer: Consumer,
        batches: Batches,
        checkpointer: Checkpointer,
    ) -> None:
        super().__init__(job, start, consumer, batches, checkpointer)
        self.params = job.repo.config.chunker
        self.min_size = self.params.min_size
        self.hole_head = HOLE_HEAD or 2 * self.min_size + 64
        self.chunker = make_chunker(self.params)
        self.pending = bytearray()  # never rebound: cut() holds it in a local
        self.origin = 0  # where the current chunker's position 0 is, relative to start

    def run(self) -> None:
        job, batches, stats = self.job, self.batches, self.stats
        # Enough buffers for the chunks in flight, the piece being chunked and the next read;
        # fewer would only make the reader wait for the workers.
        buffers = ReadBuffers(batches.window // READ_SIZE + 3, READ_SIZE)
        if job.allocated is None:
            source_pieces = pieces(job.source, buffers, ZEROS, self.start)
        else:
            assert job.expected is not None
            source_pieces = allocated_pieces(
                job.source, buffers, ZEROS, job.allocated, job.expected, self.start
            )
        for piece, lease in _zeros_as_holes(source_pieces):
            batches.lease = lease
            base = stats.bytes_read
            stats.bytes_read += len(piece)
            # A hole (pieces() hands holes out as views of ZEROS) longer than a few minimum
            # chunks: only its head goes through the chunker, see skip_hole.
            head = len(piece)
            if piece.obj is ZEROS and len(piece) > self.hole_head + 2 * self.min_size:
                head = self.hole_head
            begin = self.cut(piece, base, 0, self.chunker.feed(piece[:head]))
            if head < len(piece) and begin > 0:
                self.skip_hole(piece, base, begin)
                continue
            if head < len(piece):  # no cut in the head (HOLE_HEAD set too small): go on
                begin = self.cut(piece, base, begin, self.chunker.feed(piece[head:]))
            self.pending += piece[begin:]
            batches.end_piece()
        if self.chunker.finish():
            batches.submit(bytes(self.pending))

    def cut(self, piece: memoryview, base: int, begin: int, cuts: list[int]) -> int:
        """Submit the chunks that end at `cuts` (chunker positions) in `piece` (which starts at
        `base` bytes read), from `begin` in it; returns where the next chunk begins."""
        # Locals, not attributes: the loop runs once a chunk (a checkpoint changes none).
        submit, at_cut, pending = self.batches.submit, self.checkpointer.at_cut, self.pending
        origin, start = self.origin, self.start
        for cut in cuts:
            end = origin + cut - base
            if pending:
                pending.extend(piece[begin:end])
                submit(bytes(pending))
                pending.clear()
            else:
                submit(piece[begin:end])
            begin = end
            at_cut(start + origin + cut)
        return begin

    def skip_hole(self, piece: memoryview, base: int, begin: int) -> None:
        """The head of the hole `piece` was cut at `begin`: the rest of the hole goes to the tree
        as zero chunks of min_size without being chunked (one entry through the batches, in
        order, so nothing waits for the workers), and the chunker starts afresh at the last of
        them (as it does after every cut) with what is left of the hole (less than min_size).

        Exact, not an approximation: in a run of zeros every window hashes to 0 (gear[0] = 0,
        docs/format.md), so a chunk that starts in the run and would end inside it is cut at
        exactly min_size. The last such cut leaves less than min_size of zeros, which the
        chunker takes up again with what follows: the same chunks as if it had seen every
        byte."""
        count = (len(piece) - begin) // self.min_size
        if count:
            self.batches.submit(Result(self.min_size, None, None, count))
        begin += count * self.min_size
        self.checkpointer.at_cut(self.start + base + begin)
        self.chunker = make_chunker(self.params)
        self.origin = base + begin
        # Fed outside the assert: under `python -O` an assert's expression is not run at all.
        cuts = self.chunker.feed(piece[begin:])
        assert not cuts  # less than min_size is left
        self.pending += piece[begin:]


def _job(
    repo: Repository,
    source: BinaryIO,
    source_name: str,
    threads: int | None,
    streams: int,
    checkpoint_interval: int | None,
    changed: ChangedRanges | None,
    allocated: RangeList | None,
) -> _Job:
    """run_backup's options checked against each other and the source (UsageError)."""
    threads = threads or os.cpu_count() or 1
    expected = source_size(source.fileno())
    if streams < 1:
        raise UsageError(f"--streams must be 1 or more, got {streams}")
    if streams > 1 and expected is None:
        raise UsageError(
            f"--streams {streams} needs a file or block device; {source_name} is a stream, "
            "which reads as one stream only"
        )
    if changed is not None or allocated is not None:
        option = "--changed-ranges" if changed is not None else "--allocated-ranges"
        if changed is not None and allocated is not None:
            raise UsageError("give --changed-ranges or --allocated-ranges, not both")
        if expected is None:
            raise UsageError(f"{option} needs a file or block device; {source_name} is a stream")
        if streams > 1:
            raise UsageError(f"{option} reads as one stream; drop --streams {streams}")
        if changed is not None:
            check_size(changed.parent, expected, source_name)
            checkpoint_interval = None
    return _Job(
        repo,
        source,
        source_name,
        threads,
        streams,
        expected,
        checkpoint_interval,
        changed,
        allocated,
    )


def _checkpoints(job: _Job, notify: Notify | None) -> Checkpoints | None:
    """The source's checkpoints: a file's or a device's, when there is an interval."""
    identity = identity_of(job.source.fileno(), job.name) if job.expected is not None else None
    if identity is None or not job.interval:
        return None
    return Checkpoints(job.repo, job.source.fileno(), identity, job.interval, notify)


def _resume(
    checkpoints: Checkpoints | None, job: _Job, stats: BackupStats, notify: Notify | None
) -> Resume | None:
    """The last checkpoint that matches the source, if any; its offset in the stats."""
    resume = checkpoints.find() if checkpoints is not None else None
    if resume is not None:
        stats.resumed_from, stats.resume_check_bytes = resume.offset, resume.check_bytes
        if notify:
            notify(f"resuming {job.name} from byte {resume.offset} (checkpoint {resume.name})")
    return resume


def _source_step(
    job: _Job, start: int, consumer: Consumer, batches: Batches, checkpointer: Checkpointer
) -> _Source:
    step: type[_Source] = _SerialSource
    if job.changed is not None:
        step = _ChangedSource
    elif job.streams > 1:
        step = _ParallelSource
    return step(job, start, consumer, batches, checkpointer)


def _check_whole(job: _Job, covered: int) -> None:
    """A file truncated while it was read may have had its lost tail taken for a hole: its size
    now counts as much as the bytes read (`covered`)."""
    expected = job.expected
    now = source_size(job.source.fileno()) if expected is not None else None
    if expected is not None and now is not None and min(covered, now) < expected:
        raise SourceError(
            f"{job.name} shrank during the read: expected {expected} bytes, got "
            f"{min(covered, now)}; no snapshot was written"
        )


def _commit(
    job: _Job, size: int, root: bytes, stats: BackupStats, checkpoints: Checkpoints | None
) -> Snapshot:
    """Write the snapshot, last (the packs and the index entries are stored already), then
    remove the source's checkpoints: a crash in between leaves a valid checkpoint."""
    snapshot = Snapshot(
        time=datetime.now(UTC).isoformat(timespec="microseconds"),
        hostname=socket.gethostname(),
        source=job.name,
        size=size,
        tree=root.hex(),
        stats=stats.as_dict(),
    )
    snapshot_id = job.repo.write_snapshot(snapshot)
    if checkpoints is not None:
        checkpoints.remove_all()
    return dataclasses.replace(snapshot, id=snapshot_id)


# Its parameters are mover.api.BackupOptions' fields, spelt out: the one worker behind the
# public call, which tests and benchmarks call with the few they vary.
@as_writer
def run_backup(  # noqa: PLR0913
    repo: Repository,
    source: BinaryIO,
    source_name: str,
    threads: int | None = None,
    progress: Progress | None = None,
    streams: int = 1,
    checkpoint_interval: int | None = DEFAULT_INTERVAL,
    notify: Notify | None = None,
    *,
    changed: ChangedRanges | None = None,
    allocated: RangeList | None = None,
) -> Snapshot:
    """Back up source as a new snapshot. streams > 1 reads and chunks a seekable source in that
    many parallel streams (mover.pipeline.parallel: the same chunks as one stream). A seekable
    source is checkpointed every checkpoint_interval bytes (None or 0: never) and resumed from
    its last matching checkpoint (mover.objects.checkpoint); notify receives one-line notices.

    `changed`: read only the ranges that may differ from a parent snapshot and take the rest
    of its chunks from the parent (mover.pipeline.changed; the same tree as a full read; no
    checkpoints: little is read). `allocated`: read only these ranges, the rest is zeros
    (mover.pipeline.ranges)."""
    started = time.monotonic()
    job = _job(repo, source, source_name, threads, streams, checkpoint_interval, changed, allocated)
    if job.expected is not None:
        source.seek(0)
    stats = BackupStats()
    repo.index  # noqa: B018 -- load before the workers start reading it
    checkpoints = _checkpoints(job, notify)
    resume = _resume(checkpoints, job, stats, notify)
    uploads = upload_threads(repo)
    with (
        ThreadPoolExecutor(job.threads, thread_name_prefix="mover-chunk") as workers,
        ThreadPoolExecutor(uploads, thread_name_prefix="mover-upload") as uploader,
        PackWriter(repo, uploader, uploads) as packs,
    ):
        packer = Packer(repo, stats, packs, INDEX_FLUSH)
        consumer = Consumer(restored_tree(packer.store_node, resume), packer, stats, progress)
        limits = Limits(
            BATCH_BYTES,
            BATCH_ENTRIES,
            # Chunks in flight, bounded by bytes: a window wide enough that a slow batch at the
            # head of the in-order queue does not leave the other workers idle.
            max(INFLIGHT_BYTES, 2 * job.threads * (BATCH_BYTES + repo.config.chunker.max_size)),
            INFLIGHT_BATCHES,
        )
        level = level_for(repo.config.zstd_level, repo.config.adaptive_level)
        batches = Batches(workers, Encoder(repo, packer.known, level), consumer, limits)
        checkpointer = Checkpointer(
            checkpoints, batches, consumer, stats.resumed_from, job.expected
        )
        try:
            step = _source_step(job, stats.resumed_from, consumer, batches, checkpointer)
            step.run()
        except OSError as exc:
            raise SourceError(
                f"cannot read {source_name}: {exc.strerror or exc}; no snapshot was written"
            ) from None
        batches.drain()
        _check_whole(job, step.covered())
        root = consumer.tree.finish()
        packer.flush_index()
        stats.packs = packer.packs.packs_written
    stats.seconds = time.monotonic() - started
    return _commit(job, consumer.tree.size, root, stats, checkpoints)
