"""The store side of a backup: what becomes of the chunks that a source step of
mover.pipeline.backup cuts, up to the packs and the snapshot's tree.

    source step -> Batches (the caller's thread) -> Encoder (worker threads: zero test, keyed
    BLAKE3, dedup lookup, zstd, AEAD) -> Consumer (the caller's thread, in order: the tree, and
    the Packer's packs, uploaded by PackWriter's threads); Checkpointer at the cuts

Only the Encoder runs on the workers; everything else here runs on the thread that called
run_backup, so the state these objects keep needs no lock. The tunables (how many bytes a batch
and the window hold, how often the index is flushed) are mover.pipeline.backup's, where tests
and benchmarks set them; they come here as arguments.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from mover.chunking import is_zero
from mover.content import blob
from mover.content.pack import KIND_DATA, KIND_TREE
from mover.objects.checkpoint import Checkpoints
from mover.objects.packwriter import PackWriter
from mover.objects.repository import Repository
from mover.objects.tree import TreeBuilder
from mover.pipeline.level import Level
from mover.pipeline.source import Lease


@dataclass
class BackupStats:
    """The counters of one backup: kept on the caller's thread (the read counters by the source
    step, the rest by the consumer and the packer), handed to progress, stored in the snapshot
    (as_dict)."""

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
class Result:
    """A worker's verdict on one chunk (or on `count` zero chunks taken from a parent)."""

    length: int
    chunk_id: bytes | None  # None: all zeros
    sealed: bytes | bytearray | None  # None: already stored (or zeros)
    count: int = 1  # consecutive chunks like this one (zeros from a parent: mover.pipeline.changed)


# What a source step submits: bytes, a view of a hole's zeros or of the piece under the batches'
# lease, or a result known already (a parent's chunks: mover.pipeline.changed).
Chunk = bytes | memoryview | Result


@dataclass
class Packer:
    """Decides what is new (dedup within this backup and against the index) and packs it, on
    the caller's thread. The workers call known() too, optimistically, while this thread adds:
    an id once known stays known (flush_index puts `seen` into the index before emptying it),
    and a stale "not known" only costs a worker sealing a chunk that the consumer then drops."""

    repo: Repository
    stats: BackupStats
    packs: PackWriter
    flush_every: int  # index entries: mover.pipeline.backup.INDEX_FLUSH
    # Packed since the last index flush; then they are in the index and this empties, so it
    # holds at most flush_every ids (plus a pack's worth) whatever the volume's size.
    seen: set[bytes] = field(default_factory=set)

    def known(self, chunk_id: bytes) -> bool:
        return chunk_id in self.seen or chunk_id in self.repo.index

    def add(self, chunk_id: bytes, sealed: bytes | bytearray, kind: int) -> None:
        self.seen.add(chunk_id)
        self.stats.stored_bytes += len(sealed)
        self.packs.add(chunk_id, sealed, kind)
        if len(self.seen) >= self.flush_every:
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


class Encoder:
    """The workers' step: turns a batch of chunks into their results, in order: the zero test,
    the keyed BLAKE3 id, an optimistic dedup lookup and, for a chunk not stored yet, zstd and
    AEAD. Runs on the worker threads, several batches at once, so it keeps no state: it only
    reads `known` (the Packer's, which the consumer's thread grows; the consumer decides for
    good what is new). It releases the batch's read-buffer lease when done with the bytes."""

    def __init__(self, repo: Repository, known: Callable[[bytes], bool], level: Level) -> None:
        self.master = repo.master
        self.sealer = repo.sealer
        self.level = level  # read once a batch: the batches steer it (mover.pipeline.level)
        self.known = known

    def __call__(self, batch: list[Chunk], lease: Lease | None) -> list[Result]:
        # Locals, not attributes: the loop runs once a chunk.
        master, sealer, level, known = self.master, self.sealer, self.level.level, self.known
        try:
            results = []
            for chunk in batch:
                if isinstance(chunk, Result):  # taken from a parent: nothing to do
                    results.append(chunk)
                    continue
                if is_zero(chunk):  # 38 GB/s, and exits at the first non-zero byte
                    results.append(Result(len(chunk), None, None))
                    continue
                chunk_id = master.chunk_id_of(chunk)
                if known(chunk_id):  # optimistic: the consumer decides for good
                    results.append(Result(len(chunk), chunk_id, None))
                else:
                    sealed = blob.encode(sealer, chunk_id, chunk, level)
                    results.append(Result(len(chunk), chunk_id, sealed))
            return results
        finally:
            if lease is not None:
                lease.release()  # the chunks' bytes are not needed after this


@dataclass
class Consumer:
    """The in-order end of the pipeline, on the caller's thread. Owns the snapshot's tree:
    every chunk enters it here, in source order (the batches' results as they come back,
    including the zero runs of holes that the source step does not chunk, as Results with a
    count). Packs what is new through the packer (which decides for good, against this backup
    and the index), counts every chunk in the stats and reports progress after each batch."""

    tree: TreeBuilder
    packer: Packer
    stats: BackupStats
    progress: Progress | None

    def take(self, results: list[Result]) -> None:
        tree, packer, stats = self.tree, self.packer, self.stats
        for result in results:
            if result.count > 1:
                tree.add_holes(result.length, result.count)
            else:
                tree.add(result.length, result.chunk_id)
            if result.chunk_id is None:
                stats.zero_bytes += result.length * result.count
            elif result.sealed is None or packer.known(result.chunk_id):
                # sealed is None: a worker found it known, and known() only grows
                stats.reused_bytes += result.length
                stats.reused_chunks += 1
            else:
                packer.add(result.chunk_id, result.sealed, KIND_DATA)
                stats.new_bytes += result.length
                stats.new_chunks += 1
        self.report()

    def report(self) -> None:
        if self.progress:
            self.progress(self.stats)


@dataclass(frozen=True)
class Limits:
    """What the batches hold at most (mover.pipeline.backup's tunables)."""

    batch_bytes: int  # a worker's task: the chunks of about this many bytes
    batch_entries: int  # ... and at most this many (results known already count no bytes)
    window: int  # bytes of chunks in flight
    batches: int  # batches in flight


class Batches:
    """The chunks between the source step and the consumer, on the caller's thread. Groups
    them into batches of about limits.batch_bytes (at most limits.batch_entries entries),
    submits each to the workers (the encoder) and keeps the batches in flight in order, at most
    limits.window bytes and limits.batches batches: when either is full, the oldest is waited
    for and handed to the consumer. The window is wide enough that a slow batch at the head of
    the queue does not leave the other workers idle.

    `lease`: the lease on the read buffer that the chunks being submitted are views of (None: a
    hole, or chunks already copied). The source step sets it and ends each piece with
    end_piece(), which sends the piece's chunks before releasing it: a batch holds views of at
    most one leased buffer, and holds the lease (hold()) until its worker is done with it."""

    def __init__(
        self, workers: ThreadPoolExecutor, encode: Encoder, consumer: Consumer, limits: Limits
    ) -> None:
        self.workers = workers
        self.encode = encode
        self.consumer = consumer
        self.max_bytes, self.max_entries = limits.batch_bytes, limits.batch_entries
        self.window, self.max_batches = limits.window, limits.batches
        self.lease: Lease | None = None
        self.batch: list[Chunk] = []
        self.batch_bytes = 0
        # Batches in flight, in order, with their sizes in bytes.
        self.inflight: deque[tuple[Future[list[Result]], int]] = deque()
        self.inflight_bytes = 0

    def submit(self, chunk: Chunk) -> None:
        """Queue one chunk."""
        batch = self.batch
        batch.append(chunk)
        if not isinstance(chunk, Result):
            self.batch_bytes += len(chunk)
        if self.batch_bytes >= self.max_bytes or len(batch) >= self.max_entries:
            self.send()

    def send(self) -> None:
        """Send the batch being filled to the workers, once the window has room for it."""
        if not self.batch:
            return
        inflight = self.inflight
        self.encode.level.tick()  # `compression: auto` looks at how busy the CPUs are
        while inflight and (
            self.inflight_bytes >= self.window or len(inflight) >= self.max_batches
        ):
            self.finish_one()
        lease = self.lease
        if lease is not None:
            lease.hold()  # released by the worker, see Encoder
        inflight.append((self.workers.submit(self.encode, self.batch, lease), self.batch_bytes))
        self.inflight_bytes += self.batch_bytes
        self.batch, self.batch_bytes = [], 0

    def finish_one(self) -> None:
        done, length = self.inflight.popleft()
        self.inflight_bytes -= length
        self.consumer.take(done.result())

    def end_piece(self) -> None:
        """The piece under `lease` is cut: its chunks go, then its buffer may be reused."""
        if self.lease is not None:
            self.send()
            self.lease.release()
            self.lease = None

    def drain(self) -> None:
        """Store everything queued so far, in order."""
        self.send()
        while self.inflight:
            self.finish_one()


class Checkpointer:
    """Checkpoints, on the caller's thread, at the cuts the source step reports (at_cut): once
    every interval (`checkpoints` None: never), everything up to the cut is stored (the batches
    drained, then the index flushed: the packs, then the index entries that point into them),
    then a checkpoint records the tree, and the next backup of the same source resumes there."""

    def __init__(
        self,
        checkpoints: Checkpoints | None,
        batches: Batches,
        consumer: Consumer,
        start: int,
        expected: int | None,
    ) -> None:
        self.checkpoints = checkpoints
        self.batches = batches
        self.consumer = consumer
        self.expected = expected  # the source's size; None: a stream
        self.next_at = start + (checkpoints.interval if checkpoints is not None else 0)

    def at_cut(self, reached: int) -> None:
        """`reached`: the offset of a cut; every chunk before it has been submitted."""
        checkpoints = self.checkpoints
        if checkpoints is None or reached < self.next_at:
            return
        if self.expected is not None and reached >= self.expected:
            return  # the end: the snapshot comes next, a checkpoint would only cost time
        self.batches.drain()
        consumer = self.consumer
        consumer.packer.flush_index()  # the packs, then the index entries, then the checkpoint
        checkpoints.write(consumer.tree)
        consumer.stats.checkpoints += 1
        self.next_at = consumer.tree.size + checkpoints.interval
