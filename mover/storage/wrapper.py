"""The base of every storage wrapper: passes each call to the backend below unchanged.

A wrapper adds one concern (retries, a concurrency limit, a bandwidth limit, metrics) by
overriding the calls it cares about. Wrappers are composed in one place, mover.storage.stack, and
know the layer below only through the Backend protocol: no wrapper imports another.

Streams (Backend.open_stream) carry an object's bytes past write(), so a wrapper passes one
through only where it says how it treats one: each of mover's wrappers overrides open_stream
and wraps the stream with its concern (a PassingStream). Any other wrapper, e.g. one that
watches or fails writes, offers no stream, and its callers write through it as before.
"""

from __future__ import annotations

from collections.abc import Iterator

from mover.storage.base import Backend, Capabilities, Stream


class Wrapper:
    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.location = inner.location

    @property
    def capabilities(self) -> Capabilities:
        return self.inner.capabilities

    def write(self, name: str, data: bytes | memoryview) -> None:
        self.inner.write(name, data)

    def read(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        return self.inner.read(name, offset, length)

    def list(self, prefix: str) -> Iterator[str]:
        return self.inner.list(prefix)

    def delete(self, name: str) -> None:
        self.inner.delete(name)

    def size(self, name: str) -> int:
        return self.inner.size(name)

    def mtime(self, name: str) -> float:
        return self.inner.mtime(name)

    def exists(self, name: str) -> bool:
        return self.inner.exists(name)

    def close(self) -> None:
        self.inner.close()

    def open_stream(self, prefix: str) -> Stream | None:
        """None: see the module's docstring."""
        return None

    def remove_leftovers(self, older_than: float = 0.0) -> int:
        """Passed down to a backend that has leftovers of dead writers (temp files, incomplete
        multipart uploads); 0 where it has none."""
        remove = getattr(self.inner, "remove_leftovers", None)
        return int(remove(older_than)) if remove is not None else 0


class PassingStream:
    """The base of a wrapper's stream: passes each call to the stream below unchanged."""

    def __init__(self, inner: Stream) -> None:
        self.inner = inner

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.inner.write(data)

    def commit(self, name: str) -> None:
        self.inner.commit(name)

    def abort(self) -> None:
        self.inner.abort()


def layers(backend: Backend) -> Iterator[Backend]:
    """The backend and every backend below it, outermost first."""
    current: Backend | None = backend
    while current is not None:
        yield current
        current = getattr(current, "inner", None)
