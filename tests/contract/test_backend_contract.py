"""The storage contract (mover/storage/base.py), for every backend and composed stack."""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from mover.errors import ObjectNotFound, StorageError
from tests.contract.conftest import LIST_PAGE, PART, THRESHOLD, Harness

MiB = 1 << 20


def blob(size: int, seed: int = 0) -> bytes:
    return os.urandom(size) if seed == 0 else bytes((i * seed) & 0xFF for i in range(size))


def visible(h: Harness, name: str) -> bool:
    return h.backend.exists(name) or name in set(h.backend.list(""))


def test_write_read_round_trip(harness: Harness) -> None:
    data = blob(100_000)
    harness.backend.write("data/ab/abcdef", data)
    assert harness.backend.read("data/ab/abcdef") == data
    assert harness.backend.size("data/ab/abcdef") == len(data)
    assert harness.backend.exists("data/ab/abcdef")


def test_empty_object_and_memoryview(harness: Harness) -> None:
    harness.backend.write("snapshots/empty", b"")
    assert harness.backend.read("snapshots/empty") == b""
    assert harness.backend.size("snapshots/empty") == 0
    data = blob(4096)
    harness.backend.write("keys/view", memoryview(data)[1:])
    assert harness.backend.read("keys/view") == data[1:]


def test_ranged_reads(harness: Harness) -> None:
    data = blob(50_000)
    harness.backend.write("data/aa/r", data)
    assert harness.backend.read("data/aa/r", 0, 10) == data[:10]
    assert harness.backend.read("data/aa/r", 1234, 5000) == data[1234:6234]
    assert harness.backend.read("data/aa/r", len(data) - 7, 7) == data[-7:]
    assert harness.backend.read("data/aa/r", 40_000) == data[40_000:]
    assert harness.backend.read("data/aa/r", 100, 0) == b""


@pytest.mark.parametrize(("offset", "length"), [(49_999, 2), (50_000, 1), (60_000, 10)])
def test_read_past_the_end_raises(harness: Harness, offset: int, length: int) -> None:
    harness.backend.write("data/aa/short", blob(50_000))
    with pytest.raises(StorageError) as caught:
        harness.backend.read("data/aa/short", offset, length)
    assert not isinstance(caught.value, ObjectNotFound)
    assert not caught.value.temporary


def test_list_by_prefix(harness: Harness) -> None:
    names = {"config", "keys/k1", "data/aa/p1", "data/bb/p2", "index/i1", "snapshots/s1"}
    for name in names:
        harness.backend.write(name, name.encode())
    assert set(harness.backend.list("")) == names
    assert set(harness.backend.list("data/")) == {"data/aa/p1", "data/bb/p2"}
    assert set(harness.backend.list("data/aa/")) == {"data/aa/p1"}
    assert set(harness.backend.list("nothing/")) == set()


def test_list_pages(harness: Harness) -> None:
    """More names than one listing page (the S3 harnesses list 50 a page)."""
    names = {f"index/{i:04d}" for i in range(3 * LIST_PAGE + 7)}
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda n: harness.backend.write(n, b"x"), sorted(names)))
    assert set(harness.backend.list("index/")) == names


def test_missing_objects(harness: Harness) -> None:
    b = harness.backend
    assert not b.exists("data/00/missing")
    for call in (
        lambda: b.read("data/00/missing"),
        lambda: b.read("data/00/missing", 5, 10),
        lambda: b.size("data/00/missing"),
        lambda: b.mtime("data/00/missing"),
        lambda: b.delete("data/00/missing"),
    ):
        with pytest.raises(ObjectNotFound):
            call()


def test_delete(harness: Harness) -> None:
    harness.backend.write("snapshots/gone", b"bye")
    harness.backend.delete("snapshots/gone")
    assert not harness.backend.exists("snapshots/gone")
    assert "snapshots/gone" not in set(harness.backend.list("snapshots/"))
    with pytest.raises(ObjectNotFound):
        harness.backend.delete("snapshots/gone")


def test_mtime(harness: Harness) -> None:
    before = time.time()
    harness.backend.write("index/t", b"time")
    after = time.time()
    # S3 keeps seconds: allow the rounding, nothing more.
    assert before - 1.5 <= harness.backend.mtime("index/t") <= after + 1.5


def test_rewrite_same_content_is_a_noop(harness: Harness) -> None:
    data = blob(10_000)
    harness.backend.write("data/cc/same", data)
    harness.backend.write("data/cc/same", data)
    assert harness.backend.read("data/cc/same") == data
    assert list(harness.backend.list("data/cc/")) == ["data/cc/same"]


def test_rewrite_other_size_is_refused(harness: Harness) -> None:
    data = blob(10_000)
    harness.backend.write("data/cc/other", data)
    with pytest.raises(StorageError) as caught:
        harness.backend.write("data/cc/other", data + b"more")
    assert not caught.value.temporary
    assert harness.backend.read("data/cc/other") == data


def test_multipart_sized_object(harness: Harness) -> None:
    """Above the multipart threshold (S3): parts reassemble exactly, ranges span parts."""
    data = blob(THRESHOLD + PART + 12345, seed=7)
    harness.backend.write("data/dd/big", data)
    assert harness.backend.size("data/dd/big") == len(data)
    assert harness.backend.read("data/dd/big") == data
    assert harness.backend.read("data/dd/big", PART - 100, 200) == data[PART - 100 : PART + 100]
    harness.backend.write("data/dd/big", memoryview(data))  # the same content again: a no-op
    assert list(harness.backend.list("data/dd/")) == ["data/dd/big"]


def test_no_partial_object_is_ever_visible(harness: Harness) -> None:
    """Readers polling during a large write see nothing, or all of it."""
    data = blob(THRESHOLD + 2 * PART, seed=3)
    seen: list[int] = []
    errors: list[BaseException] = []
    done = threading.Event()

    def poll() -> None:
        try:
            while not done.is_set():
                if harness.backend.exists("data/ee/atomic"):
                    got = harness.backend.read("data/ee/atomic")
                    seen.append(len(got))
                    assert got == data
                time.sleep(0.005)
        except BaseException as exc:
            errors.append(exc)

    reader = threading.Thread(target=poll)
    reader.start()
    try:
        harness.backend.write("data/ee/atomic", data)
        time.sleep(0.05)
    finally:
        done.set()
        reader.join()
    assert not errors, errors
    assert all(n == len(data) for n in seen)


def test_threads_at_once(harness: Harness) -> None:
    objects = {f"data/{i:02x}/obj{i}": blob(20_000 + i) for i in range(32)}
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda kv: harness.backend.write(*kv), objects.items()))
        got = dict(zip(objects, pool.map(harness.backend.read, objects), strict=True))
    assert got == objects


def test_close_is_idempotent(harness: Harness) -> None:
    harness.backend.write("config", b"{}")
    harness.backend.close()
    harness.backend.close()


# -- the nasty cases ------------------------------------------------------------------------


@pytest.mark.parametrize("size", [100_000, THRESHOLD + PART], ids=["single", "multipart"])
def test_incomplete_upload_fails_and_leaves_nothing(cuttable: Harness, size: int) -> None:
    assert cuttable.cut_next_write is not None
    cuttable.cut_next_write()
    with pytest.raises(StorageError):
        cuttable.backend.write("data/ff/cut", blob(size))
    assert not visible(cuttable, "data/ff/cut")
    assert getattr(cuttable.backend, "remove_leftovers", lambda: 0)() == 0  # nothing left over


@pytest.mark.parametrize("size", [100_000, THRESHOLD + PART], ids=["single", "multipart"])
def test_damaged_upload_fails_and_leaves_nothing(corruptible: Harness, size: int) -> None:
    """The bytes that arrive do not match what was sent (their MD5)."""
    assert corruptible.corrupt_next_write is not None
    corruptible.corrupt_next_write()
    with pytest.raises(StorageError) as caught:
        corruptible.backend.write("data/ff/bad", blob(size))
    assert caught.value.temporary  # re-sending may well succeed
    assert not visible(corruptible, "data/ff/bad")
    assert getattr(corruptible.backend, "remove_leftovers", lambda: 0)() == 0


@pytest.mark.parametrize("fault", ["cut", "corrupt"])
@pytest.mark.parametrize("size", [100_000, THRESHOLD + PART], ids=["single", "multipart"])
def test_the_stack_retries_nasty_cases_into_success(
    recovering: Harness, fault: str, size: int
) -> None:
    arm = recovering.cut_next_write if fault == "cut" else recovering.corrupt_next_write
    assert arm is not None
    arm()
    data = blob(size)
    recovering.backend.write("data/ff/retried", data)
    assert recovering.backend.read("data/ff/retried") == data
