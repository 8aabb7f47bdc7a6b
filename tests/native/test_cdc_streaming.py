"""Cut points do not depend on how the stream is fed; chunk sizes stay within bounds."""

from __future__ import annotations

import statistics

import blake3
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mover.chunking import ChunkerParams, available_kernels, make_chunker
from mover.chunking.reference import cut_points
from tests.native.data import random_bytes, split_random, structured

KERNELS = available_kernels()
SMALL = ChunkerParams(64, 512, 2048, b"stream")


def feed_all(params: ChunkerParams, kernel: str, pieces: list[bytes]) -> list[int]:
    chunker = make_chunker(params, kernel)
    cuts: list[int] = []
    for piece in pieces:
        cuts += chunker.feed(piece)
    return cuts + chunker.finish()


@pytest.mark.parametrize("kernel", KERNELS)
def test_all_at_once_byte_by_byte_and_random_slices_agree(kernel: str) -> None:
    data = structured(60_000, 3)
    whole = feed_all(SMALL, kernel, [data])
    assert feed_all(SMALL, kernel, [data[i : i + 1] for i in range(len(data))]) == whole
    for seed in range(5):
        assert feed_all(SMALL, kernel, split_random(data, seed, 5000)) == whole
    assert whole[-1] == len(data)


@pytest.mark.parametrize("kernel", KERNELS)
@given(
    data=st.binary(min_size=0, max_size=20_000),
    split_seed=st.integers(0, 2**32),
    max_piece=st.integers(1, 3000),
)
def test_any_feeding_matches_reference(
    kernel: str, data: bytes, split_seed: int, max_piece: int
) -> None:
    expected = list(cut_points(SMALL, data))
    assert feed_all(SMALL, kernel, split_random(data, split_seed, max_piece)) == expected


@pytest.mark.parametrize("kernel", KERNELS)
def test_chunk_sizes_within_bounds(kernel: str) -> None:
    params = ChunkerParams(1000, 4096, 9000, b"bounds")
    data = structured(2 << 20, 4) + random_bytes(1 << 20, 4)
    cuts = feed_all(params, kernel, split_random(data, 9, 100_000))
    sizes = [b - a for a, b in zip([0, *cuts], cuts, strict=False)]
    assert sum(sizes) == len(data)
    assert all(params.min_size <= s <= params.max_size for s in sizes[:-1])
    assert 0 < sizes[-1] <= params.max_size


def test_finish_resets_and_empty_stream_has_no_chunk() -> None:
    chunker = make_chunker(SMALL)
    assert chunker.finish() == []
    assert chunker.feed(b"") == []
    chunker.feed(b"x" * 10)
    assert chunker.finish() == [10]
    assert chunker.position == 0
    assert chunker.finish() == []


def chunk_digests(data: bytes, cuts: list[int]) -> set[bytes]:
    return {blake3.blake3(data[a:b]).digest() for a, b in zip([0, *cuts], cuts, strict=False)}


@pytest.mark.parametrize("kernel", KERNELS)
def test_shift_resilience_one_inserted_byte(kernel: str) -> None:
    params = ChunkerParams(16 * 1024, 64 * 1024, 256 * 1024, b"shift")
    data = random_bytes(64 << 20, 21)
    shifted = data[:1000] + b"!" + data[1000:]
    before = feed_all(params, kernel, [data])
    after = feed_all(params, kernel, [shifted])
    changed = chunk_digests(shifted, after) - chunk_digests(data, before)
    assert len(before) > 500
    assert len(changed) <= 3


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("avg", [4096, 65536, 1 << 20])
def test_mean_chunk_size_near_avg_on_random_data(kernel: str, avg: int) -> None:
    params = ChunkerParams(avg // 4, avg, avg * 4, b"mean")
    data = random_bytes(64 << 20, 22)
    cuts = feed_all(params, kernel, [data])
    sizes = [b - a for a, b in zip([0, *cuts], cuts, strict=False)][:-1]
    assert len(sizes) >= 30
    assert abs(statistics.mean(sizes) - avg) <= 0.25 * avg


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("run_start", [0, 1, 4095, 300_001])
def test_zero_runs_become_zero_chunks(kernel: str, run_start: int) -> None:
    """A zero run is cut into all-zero chunks (stored as holes) wherever it starts."""
    params = ChunkerParams(4096, 16384, 65536, b"zeros")
    run = 1 << 20
    data = random_bytes(run_start, 1) + bytes(run) + random_bytes(200_000, 2)
    cuts = feed_all(params, kernel, split_random(data, 4, 50_000))
    zero_bytes = sum(b - a for a, b in zip([0, *cuts], cuts, strict=False) if not any(data[a:b]))
    assert zero_bytes >= run - 2 * (params.min_size + 64)
