"""Several streams cut exactly the chunks one stream cuts: same offsets, same bytes, in order,
whatever the number of streams, the segment size, holes, zero runs or missing sync points."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import blake3
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mover.chunking import ChunkerParams, is_zero, make_chunker
from mover.pipeline.parallel import ShortRead, extents, parallel_chunks
from tests.native.data import random_bytes, structured

SMALL = ChunkerParams(64, 1024, 8192, b"parallel")
MEDIUM = ChunkerParams(4096, 16384, 65536, b"parallel")
KiB = 1 << 10
MiB = 1 << 20


def one_stream(params: ChunkerParams, data: bytes) -> list[tuple[int, str]]:
    """(offset, BLAKE3 of the bytes) of each chunk, from one chunker fed everything."""
    chunker = make_chunker(params)
    cuts = chunker.feed(data) + chunker.finish()
    out, start = [], 0
    for cut in cuts:
        out.append((start, blake3.blake3(data[start:cut]).hexdigest()))
        start = cut
    return out


def streams(
    path: Path, params: ChunkerParams, n: int, segment: int, start: int = 0
) -> list[tuple[int, str]]:
    fd = os.open(path, os.O_RDONLY)
    try:
        out, expected = [], start
        for offset, chunk in parallel_chunks(fd, params, n, start, segment_size=segment):
            assert offset == expected, "chunks out of order or with a gap"
            out.append((offset, blake3.blake3(chunk).hexdigest()))
            expected += len(chunk)
        assert expected == os.fstat(fd).st_size
        return out
    finally:
        os.close(fd)


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("params", [SMALL, MEDIUM], ids=["small", "medium"])
@pytest.mark.parametrize("n", [1, 2, 4])
@pytest.mark.parametrize("segment", [4 * KiB, 100_000, MiB, 32 * MiB])
def test_random_data(tmp_path: Path, params: ChunkerParams, n: int, segment: int) -> None:
    data = random_bytes(3 * MiB + 17, seed=n)
    path = write(tmp_path / "random.img", data)
    assert streams(path, params, n, segment) == one_stream(params, data)


@pytest.mark.parametrize("n", [2, 4])
def test_structured_data_with_zero_runs(tmp_path: Path, n: int) -> None:
    data = structured(2 * MiB, seed=3) + bytes(300_000) + structured(MiB, seed=4)
    path = write(tmp_path / "structured.img", data)
    for segment in (4 * KiB, 65_536, 250_000):
        assert streams(path, SMALL, n, segment) == one_stream(SMALL, data)
        assert streams(path, MEDIUM, n, segment) == one_stream(MEDIUM, data)


def sparse_file(path: Path, size: int, islands: list[tuple[int, int]]) -> bytes:
    with open(path, "wb") as f:
        f.truncate(size)
        for offset, length in islands:
            f.seek(offset)
            f.write(random_bytes(length, seed=offset))
    return path.read_bytes()


@pytest.mark.parametrize("n", [1, 2, 4])
def test_sparse_file(tmp_path: Path, n: int) -> None:
    path = tmp_path / "sparse.img"
    islands = [(1, 1), (MiB + 7, 70_000), (3 * MiB, 2 * MiB), (9 * MiB - 10, 10)]
    data = sparse_file(path, 9 * MiB, islands)
    with open(path, "rb") as f:
        runs = list(extents(f.fileno(), 0, len(data)))
    assert sum(length for _, length, _ in runs) == len(data)
    for segment in (64 * KiB, MiB, 32 * MiB):
        assert streams(path, MEDIUM, n, segment) == one_stream(MEDIUM, data)


@pytest.mark.slow  # several seconds: runs in CI (CI=true) and with -m slow
def test_holes_are_not_read(tmp_path: Path) -> None:
    """A 64 GiB file with 1 MiB of data: only a hole-aware reader gets through it in a test."""
    path = tmp_path / "huge-sparse.img"
    with open(path, "wb") as f:
        f.truncate(64 << 30)
        f.seek(10 << 30)
        f.write(random_bytes(MiB, seed=1))
    with open(path, "rb") as f:
        runs = list(extents(f.fileno(), 0, 64 << 30))
        if not any(not is_data for _, _, is_data in runs):
            pytest.skip("this file system does not report holes")
    data_bytes = sum(length for _, length, is_data in runs if is_data)
    assert data_bytes < 64 * MiB
    params = ChunkerParams(1 << 20, 1 << 22, 1 << 24, b"huge")
    fd = os.open(path, os.O_RDONLY)
    try:
        nonzero = [o for o, c in parallel_chunks(fd, params, 2) if not is_zero(c)]
    finally:
        os.close(fd)
    assert nonzero and all(9 << 30 < o < 11 << 30 for o in nonzero)


@pytest.mark.parametrize("n", [2, 3, 4])
def test_volume_smaller_than_streams_times_max_chunk(tmp_path: Path, n: int) -> None:
    for size in (1, 63, 64, 65, 1000, 8191, 8192, 8193, 20_000):
        data = random_bytes(size, seed=size)
        path = write(tmp_path / f"tiny-{size}.img", data)
        assert streams(path, SMALL, n, 32 * MiB) == one_stream(SMALL, data)
        assert streams(path, SMALL, n, 1) == one_stream(SMALL, data)


def test_empty_volume(tmp_path: Path) -> None:
    path = write(tmp_path / "empty.img", b"")
    assert streams(path, SMALL, 4, MiB) == []


def never_cut_byte(params: ChunkerParams) -> int:
    """A byte b whose constant run never passes the cut test: every cut is forced at max_size,
    so chunkers started at different offsets never agree."""
    mask64 = (1 << 64) - 1
    for b in range(1, 256):
        h = (-params.gear[b]) & mask64  # sum of gear[b] << j for j < 64
        if h & params.mask_l and h & params.mask_s:
            return b
    raise AssertionError("no such byte")


@pytest.mark.parametrize("n", [2, 4])
def test_no_sync_point_keeps_going(tmp_path: Path, n: int) -> None:
    """With no common cut, the chunking that started at offset 0 runs through every later range
    (serially, but exactly)."""
    b = never_cut_byte(SMALL)
    data = random_bytes(5000, seed=9) + bytes([b]) * 200_000 + random_bytes(30_000, seed=10)
    expected = one_stream(SMALL, data)
    lengths = [b - a for (a, _), (b, _) in itertools.pairwise(expected)]
    assert lengths.count(SMALL.max_size) > 20  # the run is cut only by max_size
    path = write(tmp_path / "nosync.img", data)
    for segment in (3000, 10_000, 50_000):
        assert streams(path, SMALL, n, segment) == expected


def test_start_at_a_cut_point_gives_the_rest_of_the_chunks(tmp_path: Path) -> None:
    """Resuming at a chunk boundary cuts what a run from 0 cuts after it (the checkpoint's
    promise)."""
    data = structured(MiB, seed=5) + random_bytes(MiB, seed=6)
    path = write(tmp_path / "resume.img", data)
    whole = one_stream(SMALL, data)
    for index in (1, len(whole) // 3, len(whole) - 1):
        start = whole[index][0]
        assert streams(path, SMALL, 2, 50_000, start) == whole[index:]
        assert streams(path, SMALL, 1, 50_000, start) == whole[index:]


def test_short_read_is_an_error(tmp_path: Path) -> None:
    data = random_bytes(MiB, seed=7)
    path = write(tmp_path / "short.img", data)
    fd = os.open(path, os.O_RDONLY)
    try:
        chunks = parallel_chunks(fd, SMALL, 2, 0, 2 * MiB, segment_size=64 * KiB)
        with pytest.raises(ShortRead, match="shrank"):
            for _ in chunks:
                pass
    finally:
        os.close(fd)


def test_bad_stream_count(tmp_path: Path) -> None:
    path = write(tmp_path / "x.img", b"x" * 100)
    fd = os.open(path, os.O_RDONLY)
    try:
        with pytest.raises(ValueError, match="streams"):
            list(parallel_chunks(fd, SMALL, 0))
    finally:
        os.close(fd)


@given(
    size=st.integers(0, 200_000),
    n=st.integers(1, 6),
    segment=st.integers(1, 100_000),
    zero_at=st.integers(0, 200_000),
    zero_len=st.integers(0, 50_000),
    seed=st.integers(0, 1000),
)
def test_property_any_size_streams_and_segment(
    tmp_path_factory: pytest.TempPathFactory,
    size: int,
    n: int,
    segment: int,
    zero_at: int,
    zero_len: int,
    seed: int,
) -> None:
    data = bytearray(structured(size, seed=seed))
    data[zero_at : zero_at + zero_len] = bytes(len(data[zero_at : zero_at + zero_len]))
    path = write(tmp_path_factory.mktemp("prop") / "p.img", bytes(data))
    assert streams(path, SMALL, n, segment) == one_stream(SMALL, bytes(data))
