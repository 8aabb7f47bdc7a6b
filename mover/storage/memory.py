"""An in-memory backend: the reference for the contract suite and a fast store for tests.

`memory://NAME` URLs name process-wide stores, so several openings of one URL in a test see the
same objects (as two openings of one bucket would).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

from mover.errors import ObjectNotFound, StorageError
from mover.storage.base import Capabilities

_NAMED: dict[str, MemoryBackend] = {}
_NAMED_LOCK = threading.Lock()


class MemoryBackend:
    """Objects in a dict under one lock. A write stores a private copy in one step, so readers
    see all of it or nothing."""

    # It stands in for an object store in tests, so writers use it as they use S3 (whose
    # connection pool holds 16 by default): several uploads in flight, each call holding the lock
    # only for a dict operation. Conditional: the check and the insert happen under one lock.
    capabilities = Capabilities(local=True, connections=16, conditional_writes=True)

    def __init__(self, location: str = "memory://") -> None:
        self.location = location
        self._objects: dict[str, tuple[bytes, float]] = {}
        self._lock = threading.Lock()

    @classmethod
    def named(cls, name: str) -> MemoryBackend:
        with _NAMED_LOCK:
            if name not in _NAMED:
                _NAMED[name] = cls(f"memory://{name}")
            return _NAMED[name]

    def _get(self, name: str) -> tuple[bytes, float]:
        with self._lock:
            found = self._objects.get(name)
        if found is None:
            raise ObjectNotFound(f"object {name} is missing from {self.location}")
        return found

    def write(self, name: str, data: bytes | memoryview) -> None:
        copy = bytes(data)
        with self._lock:
            existing = self._objects.get(name)
            if existing is None:
                self._objects[name] = (copy, time.time())
                return
        if len(existing[0]) != len(copy):
            raise StorageError(f"object {name} exists with a different size; refusing to replace")

    def read(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        data, _ = self._get(name)
        end = len(data) if length is None else offset + length
        if offset < 0 or end > len(data) or offset > len(data):
            raise StorageError(
                f"object {name} is shorter than expected "
                f"(wanted {end - offset} bytes at {offset}, it has {len(data)})"
            )
        return data[offset:end]

    def list(self, prefix: str) -> Iterator[str]:
        with self._lock:
            names = [n for n in self._objects if n.startswith(prefix)]
        yield from names

    def delete(self, name: str) -> None:
        with self._lock:
            if self._objects.pop(name, None) is None:
                raise ObjectNotFound(f"object {name} is missing from {self.location}")

    def size(self, name: str) -> int:
        return len(self._get(name)[0])

    def mtime(self, name: str) -> float:
        return self._get(name)[1]

    def exists(self, name: str) -> bool:
        with self._lock:
            return name in self._objects

    def close(self) -> None:
        """Nothing to release; the objects stay (a named store outlives its openings)."""

    def open_stream(self, prefix: str) -> None:
        """None: a stream would keep its bytes in memory, as the writer's own buffer does."""
