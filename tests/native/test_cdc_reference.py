"""The native kernels against the plain-Python oracle, bit for bit."""

from __future__ import annotations

import pytest

from mover.chunking import ChunkerParams, available_kernels, make_chunker
from mover.chunking.reference import cut_points, window_hash
from tests.native.data import random_bytes, split_random, structured

KERNELS = available_kernels()
PARAMS = [
    ChunkerParams(64, 256, 1024, b"a"),
    ChunkerParams(64, 256, 256, b"b"),  # max == avg: forced cuts dominate
    ChunkerParams(100, 512, 777, b""),  # sizes that are not powers of two
    ChunkerParams(1024, 4096, 16384, b"c"),
    ChunkerParams(64, 65536, 262144, b"d"),  # masks wider than 16 bits
]


def native_cuts(params: ChunkerParams, kernel: str, pieces: list[bytes]) -> list[int]:
    chunker = make_chunker(params, kernel)
    cuts: list[int] = []
    for piece in pieces:
        cuts += chunker.feed(piece)
    return cuts + chunker.finish()


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("params", PARAMS, ids=lambda p: f"{p.min_size}-{p.avg_size}-{p.max_size}")
@pytest.mark.parametrize("kind", ["random", "structured"])
def test_native_equals_reference(kernel: str, params: ChunkerParams, kind: str) -> None:
    data = random_bytes(300_000, 7) if kind == "random" else structured(300_000, 7)
    expected = list(cut_points(params, data))
    assert native_cuts(params, kernel, [data]) == expected
    assert native_cuts(params, kernel, split_random(data, 3, 70_000)) == expected


def test_reference_follows_the_window_definition() -> None:
    """Each cut is the first position from min on whose window hash passes the mask in force
    there, or the forced cut at max / end of data; checked position by position."""
    params = ChunkerParams(64, 256, 1024, b"w")
    data = structured(30_000, 1)
    start = 0
    for cut in cut_points(params, data):
        for p in range(start + params.min_size - 1, cut):
            mask = params.mask_s if p - start + 1 < params.avg_size else params.mask_l
            hit = window_hash(params.gear, data, p) & mask == 0
            if p < cut - 1:
                assert not hit, f"missed a cut at {p + 1}"
            else:
                forced = cut - start == params.max_size or cut == len(data)
                assert hit or forced, f"cut at {cut} is neither a hash hit nor forced"
        assert cut - start <= params.max_size
        start = cut
    assert start == len(data)


@pytest.mark.parametrize("kernel", KERNELS)
def test_kernels_agree_on_large_mixed_data(kernel: str) -> None:
    # Small avg: many vector candidates, many strict/loose switches, many buffer seams.
    params = ChunkerParams(64, 1024, 8192, b"large")
    data = structured(4 << 20, 11) + random_bytes(4 << 20, 12)
    scalar = native_cuts(params, "scalar", split_random(data, 5, 1 << 20))
    assert native_cuts(params, kernel, [data]) == scalar
    assert len(scalar) > 1000
