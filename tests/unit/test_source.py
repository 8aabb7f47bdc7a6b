"""Reading sources by extents gives exactly the file's bytes, holes included."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from mover.pipeline.source import Lease, ReadBuffers, pieces, source_size

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
