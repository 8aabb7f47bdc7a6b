"""Counters of storage calls by operation: requests, bytes, errors and retries.

MetricsBackend sits below the retrying wrapper, so each attempt counts as a request and its
bytes as sent (what the link really carried); the retrying wrapper adds `retries`. Read them
with Metrics.as_dict(), e.g. for --json output or a Prometheus collector.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

from mover.errors import ObjectNotFound, StorageError
from mover.storage.base import Backend, Stream
from mover.storage.wrapper import PassingStream, Wrapper

FIELDS = ("requests", "bytes", "errors", "retries")


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, dict[str, int]] = {}

    def count(
        self, op: str, requests: int = 0, nbytes: int = 0, errors: int = 0, retries: int = 0
    ) -> None:
        with self._lock:
            row = self._counts.setdefault(op, dict.fromkeys(FIELDS, 0))
            row["requests"] += requests
            row["bytes"] += nbytes
            row["errors"] += errors
            row["retries"] += retries

    def as_dict(self) -> dict[str, dict[str, int]]:
        with self._lock:
            return {op: dict(row) for op, row in self._counts.items()}

    def get(self, op: str, field: str) -> int:
        with self._lock:
            return self._counts.get(op, {}).get(field, 0)


class MetricsBackend(Wrapper):
    def __init__(self, inner: Backend, metrics: Metrics) -> None:
        super().__init__(inner)
        self.metrics = metrics

    def _failed(self, op: str, exc: StorageError) -> None:
        # A missing object is an answer, not a failed request.
        self.metrics.count(op, requests=1, errors=0 if isinstance(exc, ObjectNotFound) else 1)

    def write(self, name: str, data: bytes | memoryview) -> None:
        try:
            self.inner.write(name, data)
        except StorageError as exc:
            self._failed("write", exc)
            raise
        self.metrics.count("write", requests=1, nbytes=len(data))

    def open_stream(self, prefix: str) -> Stream | None:
        """A stream counts as one write of all its bytes, when it commits (or fails)."""
        stream = self.inner.open_stream(prefix)
        return None if stream is None else _CountedStream(stream, self)

    def read(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        try:
            data = self.inner.read(name, offset, length)
        except StorageError as exc:
            self._failed("read", exc)
            raise
        self.metrics.count("read", requests=1, nbytes=len(data))
        return data

    def list(self, prefix: str) -> Iterator[str]:
        self.metrics.count("list", requests=1)
        return self.inner.list(prefix)

    def delete(self, name: str) -> None:
        try:
            self.inner.delete(name)
        except StorageError as exc:
            self._failed("delete", exc)
            raise
        self.metrics.count("delete", requests=1)

    def size(self, name: str) -> int:
        self.metrics.count("head", requests=1)
        return self.inner.size(name)

    def mtime(self, name: str) -> float:
        self.metrics.count("head", requests=1)
        return self.inner.mtime(name)

    def exists(self, name: str) -> bool:
        self.metrics.count("head", requests=1)
        return self.inner.exists(name)


class _CountedStream(PassingStream):
    def __init__(self, inner: Stream, backend: MetricsBackend) -> None:
        super().__init__(inner)
        self._backend = backend
        self._bytes = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        try:
            self.inner.write(data)
        except StorageError as exc:
            self._backend._failed("write", exc)
            raise
        self._bytes += len(data)

    def commit(self, name: str) -> None:
        try:
            self.inner.commit(name)
        except StorageError as exc:
            self._backend._failed("write", exc)
            raise
        self._backend.metrics.count("write", requests=1, nbytes=self._bytes)
