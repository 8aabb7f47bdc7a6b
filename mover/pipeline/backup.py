"""The backup pipeline.

    reader+chunker (this thread) -> batches of chunks -> workers (zero test, keyed BLAKE3,
    dedup lookup, zstd, AEAD) -> in-order consumer (tree, packer) -> uploader thread -> index
    -> snapshot

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
in flight, which hold the read buffers they are views of (plus one being chunked), recycled
pack buffers (one filling, one for each upload in flight: as many as the backend's
capabilities allow, at most packwriter.MAX_UPLOADS: one on a local disk, four on an object
store), and pending index entries flushed every INDEX_FLUSH chunks. The chunker,
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
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import BinaryIO

from mover.chunking import is_zero, make_chunker
from mover.content import blob
from mover.content.pack import KIND_DATA, KIND_TREE
from mover.errors import SourceError, UsageError
from mover.objects.checkpoint import (
    DEFAULT_INTERVAL,
    Checkpoints,
    Notify,
    identity_of,
    restored_tree,
)
from mover.objects.locks import as_writer
from mover.objects.packwriter import PackWriter, upload_threads
from mover.objects.repository import Repository
from mover.objects.snapshot import Snapshot
from mover.objects.tree import TreeBuilder
from mover.pipeline.changed import ChangedRanges, ChangedReader, Reused, check_size
from mover.pipeline.parallel import parallel_chunks
from mover.pipeline.ranges import RangeList, allocated_pieces
from mover.pipeline.source import Lease, ReadBuffers, pieces, source_size

READ_SIZE = 4 << 20
BATCH_BYTES = 2 << 20  # a worker's task: the chunks of about this many bytes
# Of a hole, the chunker sees only the head: enough for its first cut inside the zeros, which
# comes at most min_size in; the rest is cut arithmetically (_skip_hole). None: 2 x min_size.
HOLE_HEAD: int | None = None
ZEROS = bytes(8 << 20)
INDEX_FLUSH = 65536
INFLIGHT_BYTES = 16 << 20
# Results taken from a parent (mover.pipeline.changed) cost no bytes in flight: a batch holds at
# most BATCH_ENTRIES entries and at most INFLIGHT_BATCHES batches are queued, so a long unchanged
# stretch of a volume is bounded by count (~100 bytes an entry).
BATCH_ENTRIES = 1024
INFLIGHT_BATCHES = 64


@dataclass
class BackupStats:
    bytes_read: int = 0
    new_bytes: int = 0
    reused_bytes: int = 0
    zero_bytes: int = 0
    stored_bytes: int = 0
    new_chunks: int = 0
    reused_chunks: int = 0
    packs: int = 0
    resumed_from: int = 0  # the offset this run started at (a checkpoint's), 0 for a full run
    resume_check_bytes: int = 0  # bytes re-read to verify the checkpoint matches the source
    # --changed-ranges: bytes whose chunks were taken from the parent without reading them (then
    # bytes_read counts only what was read), and bytes re-read by --verify-unchanged.
    parent_bytes: int = 0
    verify_bytes: int = 0
    checkpoints: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict[str, int]:
        return {k: int(v) for k, v in self.__dict__.items() if k != "seconds"}


Progress = Callable[[BackupStats], None]


@dataclass
class _Result:
    length: int
    chunk_id: bytes | None  # None: all zeros
    sealed: bytes | bytearray | None  # None: already stored (or zeros)
    count: int = 1  # consecutive chunks like this one (zeros from a parent: mover.pipeline.changed)


@dataclass
class _Writer:
    """Decides what is new (dedup within this backup and against the index) and packs it."""

    repo: Repository
    stats: BackupStats
    packs: PackWriter
    # Packed since the last index flush; then they are in the index and this empties, so it
    # holds at most INDEX_FLUSH ids (plus a pack's worth) whatever the volume's size.
    seen: set[bytes] = field(default_factory=set)

    def known(self, chunk_id: bytes) -> bool:
        return chunk_id in self.seen or chunk_id in self.repo.index

    def add(self, chunk_id: bytes, sealed: bytes | bytearray, kind: int) -> None:
        self.seen.add(chunk_id)
        self.stats.stored_bytes += len(sealed)
        self.packs.add(chunk_id, sealed, kind)
        if len(self.seen) >= INDEX_FLUSH:
            self.flush_index()

    def flush_index(self) -> None:
        self.packs.flush_index()  # adds every packed id to repo.index first
        self.seen = set()

    def store_node(self, node: bytes) -> bytes:
        node_id = self.repo.master.chunk_id_of(node)
        if not self.known(node_id):
            level = self.repo.config.zstd_level
            self.add(node_id, blob.encode(self.repo.sealer, node_id, node, level), KIND_TREE)
        return node_id


@as_writer
def run_backup(
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
    if expected is not None:
        source.seek(0)
    stats = BackupStats()
    repo.index  # noqa: B018 -- load before the workers start reading it
    identity = identity_of(source.fileno(), source_name) if expected is not None else None
    checkpoints = resume = None
    if identity is not None and checkpoint_interval:
        checkpoints = Checkpoints(repo, source.fileno(), identity, checkpoint_interval, notify)
        resume = checkpoints.find()
    if resume is not None:
        stats.resumed_from, stats.resume_check_bytes = resume.offset, resume.check_bytes
        if notify:
            notify(f"resuming {source_name} from byte {resume.offset} (checkpoint {resume.name})")
    start = stats.resumed_from
    master, sealer, level = repo.master, repo.sealer, repo.config.zstd_level
    uploads = upload_threads(repo)

    with (
        ThreadPoolExecutor(threads, thread_name_prefix="mover-chunk") as workers,
        ThreadPoolExecutor(uploads, thread_name_prefix="mover-upload") as uploader,
    ):
        writer = _Writer(repo, stats, PackWriter(repo, uploader, uploads))

        def process(
            batch: list[bytes | memoryview | _Result], lease: Lease | None
        ) -> list[_Result]:
            try:
                results = []
                for chunk in batch:
                    if isinstance(chunk, _Result):  # taken from a parent: nothing to do
                        results.append(chunk)
                        continue
                    if is_zero(chunk):  # 38 GB/s, and exits at the first non-zero byte
                        results.append(_Result(len(chunk), None, None))
                        continue
                    chunk_id = master.chunk_id_of(chunk)
                    if writer.known(chunk_id):  # optimistic: the consumer decides for good
                        results.append(_Result(len(chunk), chunk_id, None))
                    else:
                        sealed = blob.encode(sealer, chunk_id, chunk, level)
                        results.append(_Result(len(chunk), chunk_id, sealed))
                return results
            finally:
                if lease is not None:
                    lease.release()  # the chunks' bytes are not needed after this

        tree = restored_tree(writer.store_node, resume)
        # Batches in flight, in order, with their sizes in bytes.
        inflight: deque[tuple[Future[list[_Result]], int]] = deque()
        inflight_bytes = 0
        # Chunks in flight, bounded by bytes: a window wide enough that a slow batch at the
        # head of the in-order queue does not leave the other workers idle.
        max_inflight_bytes = max(
            INFLIGHT_BYTES, 2 * threads * (BATCH_BYTES + repo.config.chunker.max_size)
        )
        batch: list[bytes | memoryview | _Result] = []
        batch_bytes = 0
        # The lease on the read buffer being chunked (None: a hole, or chunks already copied).
        # A batch is sent before its piece's lease is released, so a batch holds views of at
        # most one leased buffer: this one.
        piece_lease: Lease | None = None

        def consume_one() -> None:
            nonlocal inflight_bytes
            done, length = inflight.popleft()
            inflight_bytes -= length
            for result in done.result():
                if result.count > 1:
                    tree.add_holes(result.length, result.count)
                else:
                    tree.add(result.length, result.chunk_id)
                if result.chunk_id is None:
                    stats.zero_bytes += result.length * result.count
                elif result.sealed is None or writer.known(result.chunk_id):
                    # sealed is None: a worker found it known, and known() only grows
                    stats.reused_bytes += result.length
                    stats.reused_chunks += 1
                else:
                    writer.add(result.chunk_id, result.sealed, KIND_DATA)
                    stats.new_bytes += result.length
                    stats.new_chunks += 1
            if progress:
                progress(stats)

        def send_batch() -> None:
            nonlocal inflight_bytes, batch, batch_bytes
            if not batch:
                return
            while inflight and (
                inflight_bytes >= max_inflight_bytes or len(inflight) >= INFLIGHT_BATCHES
            ):
                consume_one()
            if piece_lease is not None:
                piece_lease.hold()  # released by the worker, see process()
            inflight.append((workers.submit(process, batch, piece_lease), batch_bytes))
            inflight_bytes += batch_bytes
            batch, batch_bytes = [], 0

        def submit(chunk: bytes | memoryview | _Result) -> None:
            """Queue one chunk: bytes, a view of ZEROS or of the piece under piece_lease, or a
            result known already (a parent's chunks)."""
            nonlocal batch_bytes
            batch.append(chunk)
            if not isinstance(chunk, _Result):
                batch_bytes += len(chunk)
            if batch_bytes >= BATCH_BYTES or len(batch) >= BATCH_ENTRIES:
                send_batch()

        def drain() -> None:
            """Store everything queued so far, in order."""
            send_batch()
            while inflight:
                consume_one()

        next_checkpoint = start + (checkpoint_interval or 0)

        def maybe_checkpoint(reached: int) -> None:
            """At a cut: once every interval, store everything up to it, then record it."""
            nonlocal next_checkpoint
            if checkpoints is None or reached < next_checkpoint:
                return
            if expected is not None and reached >= expected:
                return  # the end: the snapshot comes next, a checkpoint would only cost time
            drain()
            writer.flush_index()  # the packs, then the index entries, then the checkpoint
            checkpoints.write(tree)
            stats.checkpoints += 1
            next_checkpoint = tree.size + checkpoints.interval

        chunker = make_chunker(repo.config.chunker)
        min_size = repo.config.chunker.min_size
        hole_head = HOLE_HEAD or 2 * min_size + 64
        pending = bytearray()  # the start of a chunk that began in an earlier piece
        origin = 0  # where the current chunker's position 0 is, relative to start

        def submit_cuts(piece: memoryview, base: int, begin: int, cuts: list[int]) -> int:
            """Submit the chunks that end at `cuts` (chunker positions) in `piece` (which starts
            at `base` bytes read), from `begin` in it; returns where the next chunk begins."""
            for cut in cuts:
                end = origin + cut - base
                if pending:
                    pending.extend(piece[begin:end])
                    submit(bytes(pending))
                    pending.clear()
                else:
                    submit(piece[begin:end])
                begin = end
                maybe_checkpoint(start + origin + cut)
            return begin

        reader = None
        try:
            if changed is not None:
                assert expected is not None
                reader = ChangedReader(
                    repo, source.fileno(), expected, source_name, changed, threads
                )
                for item in reader.items():
                    if isinstance(item, Reused):
                        submit(_Result(item.length, item.chunk_id, None, item.count))
                    else:
                        submit(item)
                    stats.bytes_read, stats.parent_bytes = reader.bytes_read, reader.parent_bytes
                stats.verify_bytes = reader.verify_bytes
            elif streams > 1:
                assert expected is not None
                for offset, chunk in parallel_chunks(
                    source.fileno(), repo.config.chunker, streams, start, expected
                ):
                    stats.bytes_read += len(chunk)
                    submit(bytes(chunk))  # the view is valid only until the next chunk
                    maybe_checkpoint(offset + len(chunk))
            else:
                # Enough buffers for the chunks in flight, the piece being chunked and the
                # next read; fewer would only make the reader wait for the workers.
                buffers = ReadBuffers(max_inflight_bytes // READ_SIZE + 3, READ_SIZE)
                if allocated is None:
                    source_pieces = pieces(source, buffers, ZEROS, start)
                else:
                    assert expected is not None
                    source_pieces = allocated_pieces(
                        source, buffers, ZEROS, allocated, expected, start
                    )
                for piece, lease in source_pieces:
                    piece_lease = lease
                    base = stats.bytes_read
                    stats.bytes_read += len(piece)
                    # A hole (pieces() hands holes out as views of ZEROS) longer than a few
                    # minimum chunks: only its head goes through the chunker, see _skip_hole.
                    head = len(piece)
                    if piece.obj is ZEROS and len(piece) > hole_head + 2 * min_size:
                        head = hole_head
                    begin = submit_cuts(piece, base, 0, chunker.feed(piece[:head]))
                    if head < len(piece) and begin > 0:
                        drain()  # in order: what came before goes first
                        begin = _skip_hole(tree, stats, begin, len(piece), min_size)
                        maybe_checkpoint(start + base + begin)
                        if progress:
                            progress(stats)
                        # The chunker starts afresh at that cut, as it does after every cut.
                        chunker = make_chunker(repo.config.chunker)
                        origin = base + begin
                        assert not chunker.feed(piece[begin:])  # less than min_size is left
                        pending += piece[begin:]
                        continue
                    if head < len(piece):  # no cut in the head (HOLE_HEAD set too small): go on
                        begin = submit_cuts(piece, base, begin, chunker.feed(piece[head:]))
                    pending += piece[begin:]
                    if piece_lease is not None:  # its chunks go, then the buffer may be reused
                        send_batch()
                        piece_lease.release()
                        piece_lease = None
                if chunker.finish():
                    submit(bytes(pending))
        except OSError as exc:
            raise SourceError(
                f"cannot read {source_name}: {exc.strerror or exc}; no snapshot was written"
            ) from None
        drain()
        # A file truncated while it was read may have had its lost tail taken for a hole:
        # its size now counts as much as the bytes read.
        now = source_size(source.fileno()) if expected is not None else None
        got = start + stats.bytes_read if reader is None else reader.covered
        if expected is not None and now is not None and min(got, now) < expected:
            raise SourceError(
                f"{source_name} shrank during the read: expected {expected} bytes, got "
                f"{min(got, now)}; no snapshot was written"
            )
        root = tree.finish()
        writer.flush_index()
        stats.packs = writer.packs.packs_written

    stats.seconds = time.monotonic() - started
    snapshot = Snapshot(
        time=datetime.now(UTC).isoformat(timespec="microseconds"),
        hostname=socket.gethostname(),
        source=source_name,
        size=tree.size,
        tree=root.hex(),
        stats=stats.as_dict(),
    )
    snapshot_id = repo.write_snapshot(snapshot)
    if checkpoints is not None:
        checkpoints.remove_all()  # after the snapshot: a crash before leaves a valid checkpoint
    return dataclasses.replace(snapshot, id=snapshot_id)


def _skip_hole(tree: TreeBuilder, stats: BackupStats, begin: int, end: int, min_size: int) -> int:
    """Zero chunks from `begin` (a cut inside a hole) towards `end` (the hole's end, relative to
    the same piece), added without chunking them; returns where the chunker must start again.

    Exact, not an approximation: in a run of zeros every window hashes to 0 (gear[0] = 0,
    docs/format.md), so a chunk that starts in the run and would end inside it is cut at
    exactly min_size. The last such cut leaves less than min_size of zeros, which the chunker
    takes up again with what follows: the same chunks as if it had seen every byte."""
    count = (end - begin) // min_size
    tree.add_holes(min_size, count)
    stats.zero_bytes += count * min_size
    return begin + count * min_size
