"""Bandwidth limits: a token bucket on bytes, one for uploads and one for downloads.

A call pays for its bytes before it is sent (a read of unknown length pays after); the bucket
may go into debt, so a large object is sent at full speed after a proportional wait, and the
long-run average equals the rate whatever the object sizes. Rates can be changed at run time
(set_rates), e.g. by a schedule or a controller. None means unlimited.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from mover.storage.base import Backend, Stream
from mover.storage.wrapper import PassingStream, Wrapper

BURST_SECONDS = 1.0  # a bucket holds at most one second of its rate


class TokenBucket:
    def __init__(
        self,
        rate: float | None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._sleep = sleep
        self._rate = rate
        self._tokens = 0.0 if rate is None else rate * BURST_SECONDS
        self._stamp = clock()

    @property
    def rate(self) -> float | None:
        return self._rate

    def set_rate(self, rate: float | None) -> None:
        if rate is not None and rate <= 0:
            raise ValueError("a rate must be positive (or None: unlimited)")
        with self._lock:
            self._refill()
            self._rate = rate
            if rate is not None:
                self._tokens = min(self._tokens, rate * BURST_SECONDS)

    def _refill(self) -> None:
        now = self._clock()
        if self._rate is not None:
            cap = self._rate * BURST_SECONDS
            self._tokens = min(cap, self._tokens + (now - self._stamp) * self._rate)
        self._stamp = now

    def take(self, amount: int) -> None:
        """Pay `amount` bytes; sleeps (outside the lock) while the bucket is in debt."""
        with self._lock:
            if self._rate is None:
                return
            self._refill()
            self._tokens -= amount
            wait = -self._tokens / self._rate if self._tokens < 0 else 0.0
        if wait > 0:
            self._sleep(wait)


class ThrottlingBackend(Wrapper):
    def __init__(
        self, inner: Backend, upload: float | None = None, download: float | None = None
    ) -> None:
        super().__init__(inner)
        self.upload = TokenBucket(upload)
        self.download = TokenBucket(download)

    def set_rates(self, upload: float | None, download: float | None) -> None:
        self.upload.set_rate(upload)
        self.download.set_rate(download)

    def write(self, name: str, data: bytes | memoryview) -> None:
        self.upload.take(len(data))
        self.inner.write(name, data)

    def open_stream(self, prefix: str) -> Stream | None:
        """A stream pays for each piece as it is appended."""
        stream = self.inner.open_stream(prefix)
        return None if stream is None else _ThrottledStream(stream, self.upload)

    def read(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        if length is not None:
            self.download.take(length)
            return self.inner.read(name, offset, length)
        data = self.inner.read(name, offset, length)
        self.download.take(len(data))
        return data


class _ThrottledStream(PassingStream):
    def __init__(self, inner: Stream, bucket: TokenBucket) -> None:
        super().__init__(inner)
        self._bucket = bucket

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._bucket.take(len(data))
        self.inner.write(data)
