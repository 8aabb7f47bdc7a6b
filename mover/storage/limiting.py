"""A bound on calls in flight: pipeline threads beyond it wait here, holding no connection.

It also bounds memory: each write in flight holds its buffer until the call returns.
Listing is not limited (one sequential caller at a time, and it is lazy). Its capabilities say
at most `concurrency` connections, so a writer does not start uploads that would only wait here.
"""

from __future__ import annotations

import dataclasses
import threading

from mover.storage.base import Backend, Capabilities, Stream
from mover.storage.wrapper import PassingStream, Wrapper


class LimitingBackend(Wrapper):
    def __init__(self, inner: Backend, concurrency: int) -> None:
        super().__init__(inner)
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.concurrency = concurrency
        self._slots = threading.BoundedSemaphore(concurrency)

    @property
    def capabilities(self) -> Capabilities:
        inner = self.inner.capabilities
        return dataclasses.replace(inner, connections=min(inner.connections, self.concurrency))

    def write(self, name: str, data: bytes | memoryview) -> None:
        with self._slots:
            self.inner.write(name, data)

    def open_stream(self, prefix: str) -> Stream | None:
        """Each call on the stream takes a slot, as write does (an open stream holds none: it
        may wait long for its next bytes)."""
        stream = self.inner.open_stream(prefix)
        return None if stream is None else _LimitedStream(stream, self._slots)

    def read(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        with self._slots:
            return self.inner.read(name, offset, length)

    def delete(self, name: str) -> None:
        with self._slots:
            self.inner.delete(name)

    def size(self, name: str) -> int:
        with self._slots:
            return self.inner.size(name)

    def mtime(self, name: str) -> float:
        with self._slots:
            return self.inner.mtime(name)

    def exists(self, name: str) -> bool:
        with self._slots:
            return self.inner.exists(name)


class _LimitedStream(PassingStream):
    def __init__(self, inner: Stream, slots: threading.BoundedSemaphore) -> None:
        super().__init__(inner)
        self._slots = slots

    def write(self, data: bytes | bytearray | memoryview) -> None:
        with self._slots:
            self.inner.write(data)

    def commit(self, name: str) -> None:
        with self._slots:
            self.inner.commit(name)
