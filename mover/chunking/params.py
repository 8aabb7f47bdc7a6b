"""Chunker parameters and what they derive: the gear table and the two masks.

Everything here is part of repository format v1 (docs/format.md): changing the table
derivation, the mask layout or the normalisation level moves every cut point, and existing
repositories would stop deduplicating against new backups. The golden test pins it.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from functools import cached_property

import blake3

from mover.errors import UsageError

WINDOW = 64  # bytes the cut test looks at; min_size must cover it
NORMALISATION = 2  # FastCDC level: strict mask avg_bits + 2, loose mask avg_bits - 2
GEAR_CONTEXT = "mover 2026-11 FastCDC gear table v1"
MAX_CHUNK_LIMIT = 1 << 30


def mask_for_bits(bits: int) -> int:
    """The v1 mask with `bits` one-bits.

    Up to 16 bits sit at the top of the low 16 (bits 16-k..15: the higher of the low bits see
    more bytes); beyond 16, all low 16 bits plus the top bits of the word (which see the whole
    64-byte window). Masks with more bits contain those with fewer, and the low 16 bits of any
    mask are a pure function of the last 16 bytes: that is what the vector kernel filters on.
    """
    if not 1 <= bits <= 64:
        raise ValueError(f"mask bits out of range: {bits}")
    if bits <= 16:
        return ((1 << bits) - 1) << (16 - bits)
    high = bits - 16
    return 0xFFFF | (((1 << high) - 1) << (64 - high))


def gear_table(seed: bytes) -> tuple[int, ...]:
    """256 pseudo-random 64-bit values derived from seed (BLAKE3 key derivation), except
    gear[0] = 0.

    With gear[0] = 0 the hash of an all-zero window is 0, which passes every mask: inside a zero
    run every position from min_size on is a cut, so a zero run of length L becomes all-zero
    chunks of min_size covering all but at most min_size + 64 bytes at each end. Those chunks are
    recognised by the zero test and stored as holes, never hashed or stored, wherever the run
    starts: that is how block devices' free space costs nothing.
    """
    stream = blake3.blake3(seed, derive_key_context=GEAR_CONTEXT).digest(256 * 8)
    return (0, *struct.unpack("<256Q", stream)[1:])


@dataclass(frozen=True)
class ChunkerParams:
    """min/avg/max chunk sizes in bytes and the seed of the gear table.

    avg must be a power of two; min >= 64 so that every tested position has its whole window
    inside the stream; min <= avg <= max.
    """

    min_size: int
    avg_size: int
    max_size: int
    seed: bytes = b""

    def __post_init__(self) -> None:
        if self.min_size < WINDOW:
            raise UsageError(f"chunk min size {self.min_size} is below {WINDOW} bytes; raise it")
        if self.avg_size & (self.avg_size - 1) or self.avg_size < 256:
            raise UsageError(
                f"chunk avg size {self.avg_size} must be a power of two >= 256, e.g. 1048576"
            )
        if not self.min_size <= self.avg_size <= self.max_size:
            raise UsageError(
                f"chunk sizes must satisfy min <= avg <= max, got "
                f"{self.min_size}/{self.avg_size}/{self.max_size}"
            )
        if self.max_size > MAX_CHUNK_LIMIT:
            raise UsageError(f"chunk max size {self.max_size} exceeds {MAX_CHUNK_LIMIT} bytes")

    @property
    def avg_bits(self) -> int:
        return int(math.log2(self.avg_size))

    @property
    def mask_s(self) -> int:
        return mask_for_bits(self.avg_bits + NORMALISATION)

    @property
    def mask_l(self) -> int:
        return mask_for_bits(max(1, self.avg_bits - NORMALISATION))

    @cached_property
    def gear(self) -> tuple[int, ...]:
        return gear_table(self.seed)

    @cached_property
    def gear_bytes(self) -> bytes:
        return struct.pack("<256Q", *self.gear)


# Defaults chosen by the tuning table (benchmarks/tuning.py, BENCHMARKS.md): 256 KiB average
# chunks add 30% (fs image) to 64% (shifted data) fewer bytes on day 2 than 1 MiB chunks, at the
# same throughput; 64 KiB would save more again but quadruples the index.
DEFAULT_PARAMS = ChunkerParams(min_size=64 * 1024, avg_size=256 * 1024, max_size=1024 * 1024)
