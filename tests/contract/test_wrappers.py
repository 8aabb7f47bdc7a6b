"""The storage wrappers, each on its own, over the in-memory backend and a faulty one."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from mover.errors import ObjectNotFound, StorageError
from mover.storage.limiting import LimitingBackend
from mover.storage.memory import MemoryBackend
from mover.storage.metrics import Metrics, MetricsBackend
from mover.storage.retrying import RetryingBackend, RetryPolicy
from mover.storage.stack import (
    StorageOptions,
    base_of,
    metrics_of,
    open_backend,
    parse_location,
    throttle_of,
)
from mover.storage.throttling import TokenBucket
from mover.storage.wrapper import Wrapper


class Faulty(Wrapper):
    """Fails the next `n` calls with `error`, then behaves (a fake, not a mock)."""

    def __init__(self, inner: MemoryBackend, error: StorageError, n: int) -> None:
        super().__init__(inner)
        self.error = error
        self.remaining = n
        self.calls = 0

    def _maybe_fail(self) -> None:
        self.calls += 1
        if self.remaining > 0:
            self.remaining -= 1
            raise self.error

    def write(self, name: str, data: bytes | memoryview) -> None:
        self._maybe_fail()
        self.inner.write(name, data)

    def read(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        self._maybe_fail()
        return self.inner.read(name, offset, length)

    def list(self, prefix: str) -> Iterator[str]:
        self._maybe_fail()
        return self.inner.list(prefix)


def no_sleep(_: float) -> None:
    pass


def test_retry_temporary_errors_until_success() -> None:
    faulty = Faulty(MemoryBackend(), StorageError("503 SlowDown", temporary=True), 3)
    metrics = Metrics()
    backend = RetryingBackend(faulty, RetryPolicy(attempts=5), metrics, sleep=no_sleep)
    backend.write("a", b"data")
    assert faulty.calls == 4
    assert metrics.get("write", "retries") == 3
    assert backend.read("a") == b"data"


def test_retry_gives_up_after_the_attempts() -> None:
    faulty = Faulty(MemoryBackend(), StorageError("reset", temporary=True), 10)
    backend = RetryingBackend(faulty, RetryPolicy(attempts=3), sleep=no_sleep)
    with pytest.raises(StorageError, match="gave up after 3 attempts") as caught:
        backend.write("a", b"data")
    assert caught.value.temporary
    assert faulty.calls == 3


@pytest.mark.parametrize(
    "error", [StorageError("access denied"), ObjectNotFound("missing")], ids=["permanent", "404"]
)
def test_no_retry_of_permanent_errors(error: StorageError) -> None:
    faulty = Faulty(MemoryBackend(), error, 1)
    backend = RetryingBackend(faulty, RetryPolicy(attempts=5), sleep=no_sleep)
    with pytest.raises(type(error)):
        backend.read("a")
    assert faulty.calls == 1


def test_retry_of_a_listing_does_not_repeat_names() -> None:
    memory = MemoryBackend()
    for name in ("x/1", "x/2", "x/3"):
        memory.write(name, b"")
    backend = RetryingBackend(
        Faulty(memory, StorageError("t", temporary=True), 2), RetryPolicy(), sleep=no_sleep
    )
    assert sorted(backend.list("x/")) == ["x/1", "x/2", "x/3"]


def test_backoff_is_exponential_with_full_jitter_and_capped() -> None:
    policy = RetryPolicy(attempts=20, base_delay=0.1, max_delay=2.0)
    assert [policy.delay(n, lambda: 1.0) for n in range(6)] == [0.1, 0.2, 0.4, 0.8, 1.6, 2.0]
    assert policy.delay(50, lambda: 1.0) == 2.0
    assert policy.delay(3, lambda: 0.0) == 0.0


def test_token_bucket_rate_and_runtime_change() -> None:
    now = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    bucket = TokenBucket(1000.0, clock=lambda: now[0], sleep=sleep)
    bucket.take(1000)  # the burst allowance: no wait
    assert slept == []
    bucket.take(500)  # in debt by 500 bytes at 1000 B/s
    assert slept == [pytest.approx(0.5)]
    bucket.set_rate(100.0)
    bucket.take(100)
    assert slept[-1] == pytest.approx(1.0)
    bucket.set_rate(None)
    bucket.take(10**9)
    assert len(slept) == 2


def test_throttled_writes_take_their_time() -> None:
    backend = open_backend("memory://throttle-test", StorageOptions(limit_upload=200_000))
    started = time.monotonic()
    for i in range(3):
        backend.write(f"x/{i}", bytes(100_000))  # 300 kB at 200 kB/s, 200 kB of burst
    assert time.monotonic() - started >= 0.4
    throttle = throttle_of(backend)
    assert throttle is not None
    throttle.set_rates(None, None)
    backend.close()


def test_limit_bounds_calls_in_flight() -> None:
    inside = [0]
    peak = [0]
    lock = threading.Lock()

    class Slow(MemoryBackend):
        def write(self, name: str, data: bytes | memoryview) -> None:
            with lock:
                inside[0] += 1
                peak[0] = max(peak[0], inside[0])
            time.sleep(0.02)
            with lock:
                inside[0] -= 1
            super().write(name, data)

    backend = LimitingBackend(Slow(), 3)
    threads = [threading.Thread(target=backend.write, args=(f"o{i}", b"x")) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert peak[0] == 3


def test_metrics_count_requests_bytes_and_errors() -> None:
    metrics = Metrics()
    backend = MetricsBackend(MemoryBackend(), metrics)
    backend.write("a", b"12345")
    backend.read("a", 1, 2)
    with pytest.raises(ObjectNotFound):
        backend.read("missing")
    backend.exists("a")
    counts = metrics.as_dict()
    assert counts["write"] == {"requests": 1, "bytes": 5, "errors": 0, "retries": 0}
    assert counts["read"] == {"requests": 2, "bytes": 2, "errors": 0, "retries": 0}
    assert counts["head"]["requests"] == 1


def test_stack_composition() -> None:
    backend = open_backend("memory://stack-test")
    assert isinstance(base_of(backend), MemoryBackend)
    assert metrics_of(backend) is not None
    backend.write("k", b"v")
    assert open_backend("memory://stack-test").read("k") == b"v"


@pytest.mark.parametrize(
    ("url", "scheme", "bucket", "prefix"),
    [
        ("/srv/repo", "local", "", ""),
        ("file:///srv/repo", "local", "", ""),
        ("s3://bucket", "s3", "bucket", ""),
        ("s3://bucket/a/b/", "s3", "bucket", "a/b"),
        ("memory://x", "memory", "", ""),
    ],
)
def test_parse_location(url: str, scheme: str, bucket: str, prefix: str) -> None:
    location = parse_location(url)
    assert (location.scheme, location.bucket, location.prefix) == (scheme, bucket, prefix)


@pytest.mark.parametrize("url", ["s3://", "s3:///prefix", "ftp://host/x", "s3://b/p?x=1", ""])
def test_parse_location_refuses(url: str) -> None:
    from mover.errors import UsageError

    with pytest.raises(UsageError):
        parse_location(url)
