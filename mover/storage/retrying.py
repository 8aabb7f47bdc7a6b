"""Retries of temporary failures, with exponential backoff and full jitter.

Only errors the backend classified as temporary (StorageError.temporary: throttling, 5xx,
connection resets, timeouts, a corrupted transfer) are retried; never ObjectNotFound or a
permanent error, and never by matching messages. A write retry re-sends the whole of `data`
(the contract guarantees a failed write left nothing). Full jitter (sleep uniformly in
[0, min(cap, base * 2^n)]) spreads the retries of many writers hit by one throttling event,
which is what S3's guidance for 503 SlowDown asks for. Each retry is counted on a RetryCounter
(mover.storage.metrics.Metrics is one), when given.
"""

from __future__ import annotations

import builtins
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol, TypeVar

from mover.errors import StorageError
from mover.storage.base import Backend, Stream
from mover.storage.wrapper import Wrapper

T = TypeVar("T")


class RetryCounter(Protocol):
    def count(self, op: str, *, retries: int) -> None: ...


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 10  # in all, the first one included
    base_delay: float = 0.1  # seconds
    max_delay: float = 10.0  # cap of one sleep; 10 attempts wait ~25 s at most in all

    def delay(self, retry: int, rand: Callable[[], float] = random.random) -> float:
        return rand() * min(self.max_delay, self.base_delay * (1 << min(retry, 30)))


class RetryingBackend(Wrapper):
    def __init__(
        self,
        inner: Backend,
        policy: RetryPolicy | None = None,
        metrics: RetryCounter | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__(inner)
        self.policy = policy or RetryPolicy()
        self.metrics = metrics
        self._sleep = sleep

    def _retry(self, op: str, call: Callable[[], T]) -> T:
        retry = 0
        while True:
            try:
                return call()
            except StorageError as exc:
                if not exc.temporary or retry + 1 >= self.policy.attempts:
                    if exc.temporary:
                        raise StorageError(
                            f"{exc} (gave up after {retry + 1} attempts)", temporary=True
                        ) from None
                    raise
            if self.metrics is not None:
                self.metrics.count(op, retries=1)
            self._sleep(self.policy.delay(retry))
            retry += 1

    def write(self, name: str, data: bytes | memoryview) -> None:
        self._retry("write", lambda: self.inner.write(name, data))

    def open_stream(self, prefix: str) -> Stream | None:
        """Passed through unretried: a stream's bytes are kept nowhere to be sent again (see
        Stream), and the backends that offer streams, local directories, report no error as
        temporary."""
        return self.inner.open_stream(prefix)

    def read(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        return self._retry("read", lambda: self.inner.read(name, offset, length))

    def list(self, prefix: str) -> Iterator[str]:
        # Listed whole, so that a retry cannot repeat or skip names: ~100 bytes a name.
        names: builtins.list[str] = self._retry("list", lambda: list(self.inner.list(prefix)))
        return iter(names)

    def delete(self, name: str) -> None:
        self._retry("delete", lambda: self.inner.delete(name))

    def size(self, name: str) -> int:
        return self._retry("head", lambda: self.inner.size(name))

    def mtime(self, name: str) -> float:
        return self._retry("head", lambda: self.inner.mtime(name))

    def exists(self, name: str) -> bool:
        return self._retry("head", lambda: self.inner.exists(name))
