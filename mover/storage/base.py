"""The storage interface every backend implements, with its contract.

Names are relative paths with "/" separators ("data/ab/abcd...", "snapshots/..."), made of
[A-Za-z0-9._-] segments. Objects are immutable: written once, whole, never modified in place.

Contract:
- write(name, data): atomic. A reader sees either no object or all of `data`, never a part,
  also when the writer dies mid-call. Writing a name that exists with the same content is a
  no-op; callers write only content-addressed or freshly random names, so a different content
  under an existing name is a bug and raises StorageError.
- read(name, offset, length): the bytes [offset, offset+length) (to the end when length is
  None). A range past the end raises StorageError: short reads are never silent.
- list(prefix): names under prefix, in no particular order; never includes unfinished writes.
- delete(name): removes; deleting a missing object raises ObjectNotFound.
- size(name): bytes stored; missing raises ObjectNotFound.
- mtime(name): when the object was written, seconds since the epoch (for grace periods).
- exists(name): whether the object is there (a missing object is not an error).
- close(): releases connections, threads and event loops; idempotent; no other call after it.
  Whoever opens a backend closes it (the CLI does, for every command).
- Errors: ObjectNotFound when the object is missing; ObjectLocked when a delete is refused by a
  retention lock; StorageError otherwise, with temporary=True when retrying may succeed
  (timeouts, throttling, connection resets, a corrupted transfer), decided by the backend.
  Wrappers (mover.storage.retrying...) act on that classification only, never on messages.
- A write that fails leaves nothing visible under its name: no partial object, and no object
  whose bytes differ from `data` (a backend with a transport verifies what arrived, e.g. by
  Content-MD5, and removes or never completes a mismatched upload). So a write may always be
  retried by re-sending the whole of `data`.
- Thread safety: every method may be called from many threads at once.
- `data` passed to write is not kept after the call returns; buffers returned by read belong to
  the caller.
- capabilities: what the backend is, for callers to decide on (how many uploads to run, ...)
  instead of asking its type (restic's Properties). Wrappers pass their inner backend's through,
  except a wrapper that changes one (the limiting wrapper bounds `connections`).
- open_stream(prefix): a Stream, for an object whose name is known only once its last byte is
  written (a pack, named by the hash of its bytes), or None where the backend offers none (the
  caller then keeps the bytes and calls write). A backend offers one where appending costs no
  memory: a local directory appends to a temp file under `prefix`, so a writer holds no buffer.
  An object store would have to keep the bytes itself (a PUT needs its length, multipart parts
  5 MiB), so S3 and memory return None. A wrapper passes a stream through only where it says
  how it treats one (mover.storage.wrapper.Wrapper.open_stream).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol


class Stream(Protocol):
    """One object being written piece by piece (Backend.open_stream), named at the end.

    - write(data): appends `data` (not kept after the call).
    - commit(name): the bytes appended become the object `name`, with Backend.write's
      guarantees: atomic, as durable as write makes an object, a no-op when `name` exists with
      the same size, StorageError when it exists with another.
    - abort(): discards the bytes; idempotent, and a no-op after commit.
    - Until commit nothing is visible: list() never shows a stream, and a writer that dies
      leaves at most a leftover that the backend's remove_leftovers finds.
    - A failed write or commit has aborted the stream. Its errors are never retried: the
      bytes appended are not kept anywhere else, so the caller fails the object.
    - One thread at a time: one may fill it and another commit it.
    """

    def write(self, data: bytes | bytearray | memoryview) -> None: ...

    def commit(self, name: str) -> None: ...

    def abort(self) -> None: ...


@dataclass(frozen=True)
class Capabilities:
    local: bool
    """Same machine, no network: a request costs a system call, not a round trip."""

    connections: int
    """How many requests in flight pay off: the number of upload threads a writer uses (a
    writer may use fewer, e.g. to bound its buffers). At least 1."""

    conditional_writes: bool
    """The store itself decides create-if-absent in one step, so of two racing writes of one
    name exactly one creates it and the other finds it. False: a write checks, then writes."""

    object_lock: bool = False
    """Retention can be set on what is written (mover.storage.s3config.ObjectLock); whether a
    bucket has Object Lock enabled is asked of the backend, not known here."""

    def __post_init__(self) -> None:
        if self.connections < 1:
            raise ValueError("a backend has at least one connection")


class Backend(Protocol):
    location: str

    @property
    def capabilities(self) -> Capabilities: ...

    def write(self, name: str, data: bytes | memoryview) -> None: ...

    def read(self, name: str, offset: int = 0, length: int | None = None) -> bytes: ...

    def list(self, prefix: str) -> Iterator[str]: ...

    def delete(self, name: str) -> None: ...

    def size(self, name: str) -> int: ...

    def mtime(self, name: str) -> float: ...

    def exists(self, name: str) -> bool: ...

    def close(self) -> None: ...

    def open_stream(self, prefix: str) -> Stream | None: ...
