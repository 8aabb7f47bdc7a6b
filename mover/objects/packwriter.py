"""Writing packs: stream them into the store, or fill recycled buffers; finish and upload them in
the background; index what arrived.

Shared by backup, replicate and repair. Where the backend offers streams (a local directory:
mover.storage.base.Backend.open_stream), each blob is appended to its pack's stream as it
comes and the upload threads only finish the pack (its header, then fsync and rename): no pack
is held in memory. Elsewhere (object stores, whose PUT needs the whole body): one buffer filling
and one per upload in flight, each sized for a full pack plus the largest blob that may overflow
it. Either way at most `uploads` packs are being finished at once. Index entries are written
only for packs whose upload has completed, so an index never names a pack that is not stored.
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from types import TracebackType

from mover.content.pack import PackBuilder, PackEntry, StreamedPack
from mover.objects.repository import Repository

# Each upload in flight holds a pack buffer (~18 MiB with the defaults) where the backend offers
# no streams: 4 keep an object store busy, packs below the multipart threshold going up one per
# request.
MAX_UPLOADS = 4


def upload_threads(repo: Repository) -> int:
    """As many uploads as the backend says pay off (a local disk: one), at most MAX_UPLOADS."""
    return min(repo.backend.capabilities.connections, MAX_UPLOADS)


class PackWriter:
    """Use as a context manager: leaving it discards the pack being filled (flush_index stores
    it), so that a failed writer leaves no temp file of a streamed pack behind."""

    def __init__(self, repo: Repository, uploader: ThreadPoolExecutor, uploads: int) -> None:
        self.repo = repo
        self.uploader = uploader
        self.max_uploads = uploads
        config = repo.config
        self.capacity = config.pack_size + config.chunker.max_size + (1 << 20)
        self.streams = True  # until the backend offers none
        # Buffers are made when first needed: a backup of unchanged data fills none, and
        # zeroing three 18 MiB buffers up front cost it ~20 ms and their resident memory.
        self.unmade = uploads + 1
        self.free: list[bytearray] = []
        self.pack: PackBuilder | StreamedPack | None = None  # made at the first blob
        self.uploads: deque[Future[list[tuple[bytes, PackEntry]]]] = deque()
        self.pending: list[tuple[bytes, PackEntry]] = []  # uploaded, not yet indexed
        self.packs_written = 0

    def __enter__(self) -> PackWriter:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if isinstance(self.pack, StreamedPack):
            self.pack.stream.abort()
        self.pack = None

    def add(self, chunk_id: bytes, sealed: bytes | bytearray | memoryview, kind: int) -> None:
        if self.pack is None:
            self.pack = self._start()
        self.pack.add(chunk_id, sealed, kind)
        if len(self.pack) >= self.repo.config.pack_size:
            self.flush_pack()

    def _start(self) -> PackBuilder | StreamedPack:
        if self.streams:
            # As many packs finishing as there would be buffers (uploads + 1): one waits while
            # another is fsynced, and this thread fills the next meanwhile.
            while len(self.uploads) > self.max_uploads:
                self.pending += self.uploads.popleft().result()
            stream = self.repo.open_pack_stream()
            if stream is not None:
                return StreamedPack(stream)
            self.streams = False
        return PackBuilder(self._buffer())

    def _upload(self, pack: PackBuilder | StreamedPack) -> list[tuple[bytes, PackEntry]]:
        if isinstance(pack, StreamedPack):
            try:
                pack_id = pack.finish(self.repo.sealer)
                self.repo.commit_pack(pack_id, pack.stream)
            finally:
                pack.stream.abort()  # a no-op once committed
        else:
            pack_id, data = pack.finish(self.repo.sealer)
            self.repo.write_pack(pack_id, data)
            del data  # release the view before the buffer is reused
            assert pack.buffer is not None
            self.free.append(pack.buffer)
        return [(pack_id, e) for e in pack.entries]

    def flush_pack(self) -> None:
        if self.pack is None or not self.pack.entries:
            return
        self.uploads.append(self.uploader.submit(self._upload, self.pack))
        self.packs_written += 1
        self.pack = None

    def _buffer(self) -> bytearray:
        while not self.free and not self.unmade:  # free buffers bound the uploads in flight
            self.pending += self.uploads.popleft().result()
        if self.free:
            return self.free.pop()
        self.unmade -= 1
        return bytearray(self.capacity)

    def flush_index(self) -> None:
        """Everything added so far becomes durable and known to the repository's index."""
        self.flush_pack()
        while self.uploads:
            self.pending += self.uploads.popleft().result()
        if self.pending:
            self.repo.write_index(self.pending)
            self.pending = []
