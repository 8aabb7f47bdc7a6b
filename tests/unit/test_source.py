"""Reading sources by extents gives exactly the file's bytes, holes included."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mover.pipeline.source import Lease, ReadBuffers, pieces, read_ahead, source_size

MIB = 1 << 20


def _joined(parts: Iterator[tuple[memoryview, Lease | None]]) -> bytes:
    """The pieces' bytes, each lease released as soon as it is copied, as the backup does."""
    out = bytearray()
    for view, lease in parts:
        out += view
        if lease is not None:
            lease.release()
    return bytes(out)


@pytest.mark.parametrize(
    "islands",
    [
        [],
        [(0, 100)],
        [(5 * MIB, 3 * MIB)],
        [(1, 1), (MIB + 7, 4096), (9 * MIB - 10, 10)],
        [(0, 12 * MIB)],
    ],
)
def test_sparse_file_pieces_equal_its_bytes(tmp_path: Path, islands: list[tuple[int, int]]) -> None:
    path = tmp_path / "sparse.img"
    size = 12 * MIB
    with open(path, "wb") as f:
        f.truncate(size)
        for offset, length in islands:
            f.seek(offset)
            f.write(os.urandom(length))
    with open(path, "rb", buffering=0) as f:
        assert source_size(f.fileno()) == size
        got = _joined(pieces(f, ReadBuffers(2, MIB), bytes(2 * MIB)))  # type: ignore[arg-type]
    assert got == path.read_bytes()


def test_stream_pieces() -> None:
    data = os.urandom(3 * MIB + 5)
    r, w = os.pipe()

    def feed() -> None:
        with os.fdopen(w, "wb") as out:
            out.write(data)

    writer = threading.Thread(target=feed)
    writer.start()
    with os.fdopen(r, "rb", buffering=0) as f:
        assert source_size(f.fileno()) is None
        got = _joined(pieces(f, ReadBuffers(2, MIB), bytes(MIB)))  # type: ignore[arg-type]
    writer.join()
    assert got == data


def test_a_buffer_is_not_reused_while_a_holder_keeps_it(tmp_path: Path) -> None:
    """Views handed to worker threads must not change under them: with two buffers, the third
    read waits until a holder of the first lets go, then reuses it."""
    path = tmp_path / "data"
    data = os.urandom(3 * MIB)
    path.write_bytes(data)
    buffers = ReadBuffers(2, MIB)
    with open(path, "rb", buffering=0) as f:
        it = pieces(f, buffers, bytes(MIB))
        first, lease1 = next(it)
        second, lease2 = next(it)
        assert lease1 is not None and lease2 is not None
        lease1.hold()  # a worker's
        lease1.release()  # the reader's
        got: list[tuple[memoryview, Lease | None]] = []
        reader = threading.Thread(target=lambda: got.append(next(it)))
        reader.start()
        reader.join(0.2)
        assert reader.is_alive(), "the third read did not wait for a free buffer"
        assert bytes(first) == data[:MIB]  # unchanged while held
        lease1.release()  # the worker is done: the buffer may now be read into
        reader.join(10)
        assert not reader.is_alive()
        third, lease3 = got[0]
        assert lease3 is not None and lease3.buffer is lease1.buffer
        assert bytes(second) == data[MIB : 2 * MIB] and bytes(third) == data[2 * MIB :]


def test_a_lease_cannot_be_held_after_its_last_release() -> None:
    lease = ReadBuffers(1, 16).take()
    lease.release()
    with pytest.raises(RuntimeError, match="after its last release"):
        lease.hold()


def _reader_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "mover-read"]


def test_read_ahead_gives_the_same_pieces_in_order(tmp_path: Path) -> None:
    path = tmp_path / "sparse.img"
    data = os.urandom(3 * MIB)
    with open(path, "wb") as f:
        f.write(data)
        f.seek(8 * MIB)
        f.write(data)
    buffers = ReadBuffers(3, MIB)
    with open(path, "rb") as f:
        got = _joined(read_ahead(pieces(f, buffers, bytes(2 * MIB)), buffers))
    assert got == data + bytes(5 * MIB) + data
    assert buffers.idle == 3
    assert not _reader_threads()


def test_a_read_error_reaches_the_caller_after_the_pieces_before_it(tmp_path: Path) -> None:
    def failing() -> Iterator[tuple[memoryview, Lease | None]]:
        yield memoryview(b"first"), None
        yield memoryview(b"second"), None
        raise OSError(5, "Input/output error")

    buffers = ReadBuffers(2, MIB)
    got = []
    with pytest.raises(OSError, match="Input/output error"):
        for view, _ in read_ahead(failing(), buffers):
            got.append(bytes(view))
    assert got == [b"first", b"second"]
    assert not _reader_threads()


def test_stopping_early_stops_the_reader_and_releases_what_it_read(tmp_path: Path) -> None:
    # The caller keeps the first lease and stops: the reader, ahead of it, holds the other
    # buffers or waits for one; closing must not hang and must give back every unread piece.
    path = tmp_path / "data.img"
    path.write_bytes(os.urandom(16 * MIB))
    buffers = ReadBuffers(3, MIB)
    with open(path, "rb") as f:
        ahead = read_ahead(pieces(f, buffers, bytes(MIB)), buffers)
        _, lease = next(ahead)
        deadline = time.monotonic() + 10
        while buffers.idle and time.monotonic() < deadline:  # the reader fills the others
            time.sleep(0.01)
        assert buffers.idle == 0
        ahead.close()
    assert not _reader_threads()
    assert lease is not None
    lease.release()
    assert buffers.idle == 3
