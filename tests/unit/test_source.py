"""Reading sources by extents gives exactly the file's bytes, holes included."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from mover.source import pieces, source_size

MIB = 1 << 20


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
        got = b"".join(bytes(p) for p in pieces(f, bytearray(MIB), bytes(2 * MIB)))  # type: ignore[arg-type]
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
        got = b"".join(bytes(p) for p in pieces(f, bytearray(MIB), bytes(MIB)))  # type: ignore[arg-type]
    writer.join()
    assert got == data
