"""Chunk boundaries are part of repository format v1.

Future optimisations must not change these digests: if they change, every existing repository
stops deduplicating against new backups. Changing them is a format version bump.
"""

from __future__ import annotations

import struct

import blake3
import pytest

from mover.chunking import ChunkerParams, available_kernels, make_chunker
from mover.chunking.params import DEFAULT_PARAMS, gear_table, mask_for_bits
from tests.native.data import stable_bytes

GRID = [
    ChunkerParams(avg // 4, avg, avg * 4, seed)
    for avg in (256, 4096, 65536, 1 << 20)
    for seed in (b"", b"golden")
]


def boundary_digest(kernel: str) -> str:
    data = stable_bytes(8 << 20, b"mover golden data")
    # Zero and repetitive stretches, placed deterministically.
    data = data[: 2 << 20] + bytes(1 << 20) + b"mover " * (200_000) + data[3 << 20 :]
    digest = blake3.blake3()
    for params in GRID:
        chunker = make_chunker(params, kernel)
        cuts = chunker.feed(data) + chunker.finish()
        digest.update(struct.pack(f"<{len(cuts)}Q", *cuts))
    return digest.hexdigest()


@pytest.mark.parametrize("kernel", available_kernels())
def test_chunk_points_unchanged(kernel: str) -> None:
    assert boundary_digest(kernel) == GOLDEN


def test_gear_table_and_masks_unchanged() -> None:
    table = gear_table(b"")
    assert table[0] == 0  # zero runs cut at every position: see gear_table
    assert table[1] == GEAR1_EMPTY_SEED
    assert blake3.blake3(struct.pack("<256Q", *table)).hexdigest()[:16] == GEAR_DIGEST
    assert mask_for_bits(12) == 0xFFF0
    assert mask_for_bits(16) == 0xFFFF
    assert mask_for_bits(22) == 0xFC0000000000FFFF
    assert DEFAULT_PARAMS.mask_s == mask_for_bits(20)
    assert DEFAULT_PARAMS.mask_l == mask_for_bits(16)
    # low16(mask_l) within low16(mask_s): the vector filter's premise
    for bits in range(1, 63):
        assert mask_for_bits(bits) & mask_for_bits(bits + 1) == mask_for_bits(bits)


GOLDEN = "f537325bf4550a826b322a9b09480d8e7371bd61a7ff643d19c92cc0a7a51255"
GEAR1_EMPTY_SEED = 0x2DF10279218E0170
GEAR_DIGEST = "d3e54ab8fc3e3bf3"
