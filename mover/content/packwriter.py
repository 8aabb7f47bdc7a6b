"""Writing packs: fill recycled buffers, upload them in the background, index what arrived.

Shared by backup and replicate. Memory: one buffer filling and one per upload in flight, each
sized for a full pack plus the largest blob that may overflow it. Index entries are written only
for packs whose upload has completed, so an index never names a pack that is not stored.
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor

from mover.content.pack import PackBuilder, PackEntry
from mover.repository import Repository
from mover.storage.local import LocalBackend
from mover.storage.stack import base_of

LOCAL_UPLOADS = 1  # a local disk gains nothing from parallel pack writes
REMOTE_UPLOADS = 4  # object stores: packs below the multipart threshold go up one per request


def upload_threads(repo: Repository) -> int:
    return LOCAL_UPLOADS if isinstance(base_of(repo.backend), LocalBackend) else REMOTE_UPLOADS


class PackWriter:
    def __init__(self, repo: Repository, uploader: ThreadPoolExecutor, uploads: int) -> None:
        self.repo = repo
        self.uploader = uploader
        config = repo.config
        capacity = config.pack_size + config.chunker.max_size + (1 << 20)
        self.free = [bytearray(capacity) for _ in range(uploads + 1)]
        self.pack = PackBuilder(self.free.pop())
        self.uploads: deque[Future[list[tuple[bytes, PackEntry]]]] = deque()
        self.pending: list[tuple[bytes, PackEntry]] = []  # uploaded, not yet indexed
        self.packs_written = 0

    def add(self, chunk_id: bytes, sealed: bytes | memoryview, kind: int) -> None:
        self.pack.add(chunk_id, sealed, kind)
        if len(self.pack) >= self.repo.config.pack_size:
            self.flush_pack()

    def _upload(self, pack: PackBuilder) -> list[tuple[bytes, PackEntry]]:
        pack_id, data = pack.finish(self.repo.sealer)
        self.repo.write_pack(pack_id, data)
        del data  # release the view before the buffer is reused
        assert pack.buffer is not None
        self.free.append(pack.buffer)
        return [(pack_id, e) for e in pack.entries]

    def flush_pack(self) -> None:
        if not self.pack.entries:
            return
        self.uploads.append(self.uploader.submit(self._upload, self.pack))
        self.packs_written += 1
        while not self.free:  # a free buffer bounds the uploads in flight
            self.pending += self.uploads.popleft().result()
        self.pack = PackBuilder(self.free.pop())

    def flush_index(self) -> None:
        """Everything added so far becomes durable and known to the repository's index."""
        self.flush_pack()
        while self.uploads:
            self.pending += self.uploads.popleft().result()
        if self.pending:
            self.repo.write_index(self.pending)
            self.pending = []
