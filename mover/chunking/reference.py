"""Plain-Python FastCDC, the test oracle for the native kernels.

Never used by the data path (it is ~1000x slower). It follows the definition in
docs/format.md literally: the cut test at p is a function of the 64 bytes ending at p.
"""

from __future__ import annotations

from collections.abc import Iterator

from mover.chunking.params import WINDOW, ChunkerParams

_MASK64 = (1 << 64) - 1


def window_hash(gear: tuple[int, ...], data: bytes, p: int) -> int:
    h = 0
    for i in range(p - WINDOW + 1, p + 1):
        h = ((h << 1) + gear[data[i]]) & _MASK64
    return h


def cut_points(params: ChunkerParams, data: bytes) -> Iterator[int]:
    """Exclusive end offsets of every chunk of data, the last one included."""
    gear = params.gear
    mask_s, mask_l = params.mask_s, params.mask_l
    start, n = 0, len(data)
    while start < n:
        end = min(start + params.max_size, n)
        cut = end
        p = start + params.min_size - 1
        if p < end:
            # Roll the hash: after 64 updates it equals window_hash(p); min_size >= 64.
            h = 0
            for i in range(p - WINDOW + 1, p):
                h = ((h << 1) + gear[data[i]]) & _MASK64
            while p < end:
                h = ((h << 1) + gear[data[p]]) & _MASK64
                mask = mask_s if p - start + 1 < params.avg_size else mask_l
                if h & mask == 0:
                    cut = p + 1
                    break
                p += 1
        yield cut
        start = cut
