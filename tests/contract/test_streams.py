"""Streams (mover.storage.base.Stream): an object appended piece by piece and named at commit.

Local directories offer them, raw and under the composed stack; object stores and memory do
not. A stream is invisible until its commit, whole and durable after it, and a dead or failed
writer leaves at most a leftover that remove_leftovers finds.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mover.errors import StorageError
from mover.storage.base import Backend, Stream
from mover.storage.limiting import LimitingBackend
from mover.storage.local import LocalBackend
from mover.storage.memory import MemoryBackend
from mover.storage.metrics import Metrics, MetricsBackend
from mover.storage.stack import StorageOptions, base_of, metrics_of, open_backend
from mover.storage.throttling import ThrottlingBackend
from mover.storage.wrapper import Wrapper
from tests.contract.conftest import Harness, _local_cut, _make

OFFERED = {"local", "local-stack"}
PIECES = [b"first piece, ", bytearray(b"then a bytearray, "), memoryview(b"and a view")]
WHOLE = b"".join(PIECES)


@pytest.fixture(params=sorted(OFFERED))
def streaming(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Harness]:
    yield from _make(request.param, request, tmp_path, monkeypatch)


def open_stream(backend: Backend) -> Stream:
    stream = backend.open_stream("data/")
    assert stream is not None
    return stream


def leftovers(backend: Backend) -> list[Path]:
    base = base_of(backend)
    assert isinstance(base, LocalBackend)
    return base.leftovers()


def test_which_backends_offer_streams(harness: Harness) -> None:
    stream = harness.backend.open_stream("data/")
    assert (stream is not None) == (harness.kind in OFFERED)
    if stream is not None:
        stream.abort()


def test_a_stream_is_invisible_until_its_commit(streaming: Harness) -> None:
    backend = streaming.backend
    stream = open_stream(backend)
    for piece in PIECES:
        stream.write(piece)
    assert list(backend.list("")) == []
    assert leftovers(backend) != []  # the bytes so far, where a dead writer would leave them
    stream.commit("data/ab/abcd")
    assert backend.read("data/ab/abcd") == WHOLE
    assert list(backend.list("")) == ["data/ab/abcd"]
    assert leftovers(backend) == []
    stream.abort()  # after commit: a no-op
    assert backend.read("data/ab/abcd") == WHOLE


def test_abort_leaves_nothing(streaming: Harness) -> None:
    stream = open_stream(streaming.backend)
    stream.write(WHOLE)
    stream.abort()
    stream.abort()
    assert list(streaming.backend.list("")) == []
    assert leftovers(streaming.backend) == []


def test_commit_to_an_existing_name(streaming: Harness) -> None:
    backend = streaming.backend
    backend.write("data/ab/same", WHOLE)
    same = open_stream(backend)
    same.write(WHOLE)
    same.commit("data/ab/same")  # content-addressed names: the same bytes are there
    other = open_stream(backend)
    other.write(WHOLE + b"!")
    with pytest.raises(StorageError, match="different size"):
        other.commit("data/ab/same")
    assert backend.read("data/ab/same") == WHOLE
    assert leftovers(backend) == []


def test_a_commit_cut_before_it_is_durable_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer dies between appending its bytes and making them durable (fsync fails):
    nothing under the name, no temp file left."""
    backend = LocalBackend(tmp_path)
    stream = open_stream(backend)
    stream.write(WHOLE)
    _local_cut(monkeypatch)()
    with pytest.raises(StorageError, match="cannot write"):
        stream.commit("data/ab/cut")
    assert not backend.exists("data/ab/cut")
    assert backend.leftovers() == []


def test_a_dead_writers_stream_is_left_for_the_leftovers_cleanup(tmp_path: Path) -> None:
    backend = LocalBackend(tmp_path)
    stream = open_stream(backend)
    stream.write(WHOLE)  # and the writer dies: neither commit nor abort
    [left] = backend.leftovers()
    assert left.read_bytes() == WHOLE
    assert list(backend.list("")) == []
    assert backend.remove_leftovers(older_than=3600) == 0  # a live writer's, maybe: kept
    assert backend.remove_leftovers() == 1
    assert backend.leftovers() == []


def test_only_wrappers_that_say_how_pass_a_stream_through(tmp_path: Path) -> None:
    """A wrapper that is not one of mover's, e.g. one that watches writes, offers no stream,
    so that nothing bypasses its write(); mover's four pass one through."""
    local = LocalBackend(tmp_path)
    assert Wrapper(local).open_stream("data/") is None
    assert open_backend(str(tmp_path)).open_stream("data/") is not None
    assert LimitingBackend(MemoryBackend(), 2).open_stream("data/") is None


def test_the_stack_counts_a_stream_as_one_write(tmp_path: Path) -> None:
    backend = open_backend(str(tmp_path))
    stream = open_stream(backend)
    for piece in PIECES:
        stream.write(piece)
    metrics = metrics_of(backend)
    assert metrics is not None
    assert metrics.get("write", "requests") == 0  # counted when it is stored
    stream.commit("data/ab/counted")
    assert metrics.as_dict()["write"] == {
        "requests": 1,
        "bytes": len(WHOLE),
        "errors": 0,
        "retries": 0,
    }


def test_a_failed_stream_counts_as_an_error(tmp_path: Path) -> None:
    metrics = Metrics()
    backend = MetricsBackend(LocalBackend(tmp_path), metrics)
    backend.write("data/ab/x", b"1")
    stream = open_stream(backend)
    stream.write(b"12")
    with pytest.raises(StorageError):
        stream.commit("data/ab/x")
    assert metrics.get("write", "errors") == 1


def test_a_throttled_stream_takes_its_time(tmp_path: Path) -> None:
    backend = open_backend(str(tmp_path), StorageOptions(limit_upload=200_000))
    stream = open_stream(backend)
    started = time.monotonic()
    for _ in range(3):
        stream.write(bytes(100_000))  # 300 kB at 200 kB/s, 200 kB of burst
    assert time.monotonic() - started >= 0.4
    stream.commit("data/ab/slow")


def test_a_limited_stream_holds_a_slot_for_each_call(tmp_path: Path) -> None:
    limited = LimitingBackend(LocalBackend(tmp_path), 1)
    stream = open_stream(limited)
    assert limited._slots.acquire(blocking=False)  # an open stream holds no slot
    writer = threading.Thread(target=stream.write, args=(b"x",))
    writer.start()
    writer.join(0.1)
    assert writer.is_alive()  # waits for the slot that another call holds
    limited._slots.release()
    writer.join()
    stream.commit("data/ab/limited")
    assert limited.read("data/ab/limited") == b"x"


def test_throttling_passes_a_stream_of_the_layer_below(tmp_path: Path) -> None:
    assert ThrottlingBackend(LocalBackend(tmp_path)).open_stream("data/") is not None
    assert ThrottlingBackend(MemoryBackend()).open_stream("data/") is None
