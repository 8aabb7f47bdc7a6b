"""Deterministic test data: random, and structured kinds that stress the cut test."""

from __future__ import annotations

import random

import blake3


def random_bytes(n: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(n)


def stable_bytes(n: int, seed: bytes) -> bytes:
    """Bytes that never change across Python versions (BLAKE3 XOF), for golden digests."""
    return blake3.blake3(seed).digest(n)


def structured(n: int, seed: int = 0) -> bytes:
    """A mix of runs: text, zeros, a short repeated period, 0xff, random, low-entropy bytes."""
    rnd = random.Random(seed)
    words = [b"backup", b"volume", b"chunk", b"restore", b"the", b"a", b"\n", b"snapshot"]
    out = bytearray()
    while len(out) < n:
        kind = rnd.randrange(6)
        size = rnd.randrange(1, 20000)
        if kind == 0:
            out += b" ".join(rnd.choice(words) for _ in range(size // 6 + 1))
        elif kind == 1:
            out += bytes(size)
        elif kind == 2:
            period = rnd.randbytes(rnd.randrange(1, 40))
            out += (period * (size // len(period) + 1))[:size]
        elif kind == 3:
            out += b"\xff" * size
        elif kind == 4:
            out += rnd.randbytes(size)
        else:
            out += bytes(rnd.choice(b"\x00\x01\x02\x48\x89") for _ in range(size // 8 + 1))
    return bytes(out[:n])


def split_random(data: bytes, seed: int, max_piece: int) -> list[bytes]:
    rnd = random.Random(seed)
    pieces, i = [], 0
    while i < len(data):
        k = rnd.randrange(0, max_piece + 1)  # empty pieces too
        pieces.append(data[i : i + k])
        i += k
    return pieces
