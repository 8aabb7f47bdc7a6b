"""The backup pipeline.

    reader+chunker (this thread) -> workers (zero test, keyed BLAKE3, dedup lookup, zstd, AEAD)
    -> in-order consumer (tree, packer) -> uploader thread -> index -> snapshot

Memory is bounded by configuration: one read buffer, at most INFLIGHT_BYTES (or two max-size
chunks a worker) of chunks in flight, recycled pack buffers (one filling, one for each upload in
flight: one on a local disk, REMOTE_UPLOADS on an object store), and
pending index entries flushed every INDEX_FLUSH chunks. The chunker, BLAKE3 and zstd release the
GIL on large buffers, so the workers keep every core busy (py-spy: both workers >90% busy, in
zstd, on a first backup). AES-GCM from `cryptography` holds the GIL, measured: it does not scale
with threads, but at ~15 GB/s it costs a few percent of one core.

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
from mover.content.packwriter import PackWriter, upload_threads
from mover.errors import SourceError
from mover.locks import as_writer
from mover.repository import Repository
from mover.snapshot import Snapshot
from mover.source import pieces, source_size
from mover.tree import TreeBuilder

READ_SIZE = 8 << 20
ZEROS = bytes(READ_SIZE)
INDEX_FLUSH = 65536
INFLIGHT_BYTES = 16 << 20


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
    seconds: float = 0.0

    def as_dict(self) -> dict[str, int]:
        return {k: int(v) for k, v in self.__dict__.items() if k != "seconds"}


Progress = Callable[[BackupStats], None]


@dataclass
class _Result:
    length: int
    chunk_id: bytes | None  # None: all zeros
    sealed: bytes | None  # None: already stored (or zeros)


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

    def add(self, chunk_id: bytes, sealed: bytes, kind: int) -> None:
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
) -> Snapshot:
    started = time.monotonic()
    threads = threads or os.cpu_count() or 1
    expected = source_size(source.fileno())
    if expected is not None:
        source.seek(0)
    stats = BackupStats()
    repo.index  # noqa: B018 -- load before the workers start reading it
    master, sealer, level = repo.master, repo.sealer, repo.config.zstd_level
    uploads = upload_threads(repo)

    with (
        ThreadPoolExecutor(threads, thread_name_prefix="mover-chunk") as workers,
        ThreadPoolExecutor(uploads, thread_name_prefix="mover-upload") as uploader,
    ):
        writer = _Writer(repo, stats, PackWriter(repo, uploader, uploads))

        def process(chunk: bytes) -> _Result:
            chunk_id = master.chunk_id_of(chunk)
            if writer.known(chunk_id):  # optimistic: the consumer decides for good
                return _Result(len(chunk), chunk_id, None)
            return _Result(len(chunk), chunk_id, blob.encode(sealer, chunk_id, chunk, level))

        tree = TreeBuilder(writer.store_node)
        inflight: deque[Future[_Result]] = deque()
        inflight_bytes = 0
        # Chunks in flight, bounded by bytes: a window wide enough that a slow chunk at the
        # head of the in-order queue does not leave the other workers idle.
        max_inflight_bytes = max(INFLIGHT_BYTES, 2 * threads * repo.config.chunker.max_size)

        def consume_one() -> None:
            nonlocal inflight_bytes
            result = inflight.popleft().result()
            inflight_bytes -= result.length
            tree.add(result.length, result.chunk_id)
            if result.chunk_id is None:
                stats.zero_bytes += result.length
            elif writer.known(result.chunk_id):
                stats.reused_bytes += result.length
                stats.reused_chunks += 1
            else:
                assert result.sealed is not None  # known() only grows, see process()
                writer.add(result.chunk_id, result.sealed, KIND_DATA)
                stats.new_bytes += result.length
                stats.new_chunks += 1
            if progress:
                progress(stats)

        def submit(chunk: memoryview | bytearray) -> None:
            nonlocal inflight_bytes
            while inflight and inflight_bytes >= max_inflight_bytes:
                consume_one()
            inflight_bytes += len(chunk)
            if is_zero(chunk):  # 38 GB/s, and exits at the first non-zero byte
                done: Future[_Result] = Future()
                done.set_result(_Result(len(chunk), None, None))
                inflight.append(done)
            else:
                inflight.append(workers.submit(process, bytes(chunk)))

        chunker = make_chunker(repo.config.chunker)
        pending = bytearray()  # the start of a chunk that began in an earlier piece
        try:
            for piece in pieces(source, bytearray(READ_SIZE), ZEROS):
                base = stats.bytes_read
                stats.bytes_read += len(piece)
                start = 0
                for cut in chunker.feed(piece):
                    end = cut - base
                    if pending:
                        pending += piece[start:end]
                        submit(pending)
                        pending.clear()
                    else:
                        submit(piece[start:end])
                    start = end
                pending += piece[start:]
        except OSError as exc:
            raise SourceError(
                f"cannot read {source_name}: {exc.strerror or exc}; no snapshot was written"
            ) from None
        if chunker.finish():
            submit(pending)
        while inflight:
            consume_one()
        # A file truncated while it was read may have had its lost tail taken for a hole:
        # its size now counts as much as the bytes read.
        now = source_size(source.fileno()) if expected is not None else None
        if expected is not None and now is not None and min(stats.bytes_read, now) < expected:
            raise SourceError(
                f"{source_name} shrank during the read: expected {expected} bytes, got "
                f"{min(stats.bytes_read, now)}; no snapshot was written"
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
    return dataclasses.replace(snapshot, id=snapshot_id)
