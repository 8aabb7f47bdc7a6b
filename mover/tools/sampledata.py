"""Deterministic sample data with the mix a volume holds: text, binaries, compressed data, zeros.

Used by `mover benchmark`, the README's demo and the benchmarks, so all of them measure the
same kind of bytes. Blocks are built from per-seed corpora with scattered edits, so that no two
blocks are byte-identical (which would turn a throughput figure into a dedup figure).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

BLOCK = 1 << 20
_WORDS = (
    "the of and to in is that for it with as was on be by at this are from or an but not "
    "volume backup restore chunk snapshot cluster node pod namespace storage replica config "
    "error warning info debug request response latency bytes seconds timeout retry commit "
    "select insert update delete from where table index primary key value null true false"
).split()


@dataclass(frozen=True)
class Mix:
    """Share of each kind of block, in percent; the rest is zeros."""

    text: int = 40
    binary: int = 25
    compressed: int = 20

    @property
    def zeros(self) -> int:
        return 100 - self.text - self.binary - self.compressed


REALISTIC = Mix()


class SampleData:
    """Blocks of BLOCK bytes from `seed`; block i is the same whatever was asked for before."""

    def __init__(self, seed: int = 0, mix: Mix = REALISTIC) -> None:
        self.seed = seed
        self.mix = mix
        rnd = random.Random(f"corpus-{seed}")
        text = " ".join(rnd.choices(_WORDS, k=(4 * BLOCK) // 5)).encode()
        self._text = (text + b"\n" * (4 * BLOCK))[: 4 * BLOCK]
        # Machine-code-like bytes: a skewed byte distribution with repeated short sequences.
        alphabet = bytes(range(256))
        weights = [40 if b in (0x00, 0xFF, 0x48, 0x89, 0x8B, 0xE8, 0x0F) else 1 for b in alphabet]
        words = [bytes(rnd.choices(alphabet, weights, k=rnd.randrange(2, 9))) for _ in range(4096)]
        self._binary = b"".join(rnd.choices(words, k=(4 * BLOCK) // 5))[: 4 * BLOCK]

    def kind(self, index: int) -> str:
        roll = random.Random(f"kind-{self.seed}-{index}").randrange(100)
        if roll < self.mix.text:
            return "text"
        if roll < self.mix.text + self.mix.binary:
            return "binary"
        if roll < self.mix.text + self.mix.binary + self.mix.compressed:
            return "compressed"
        return "zeros"

    def block(self, index: int) -> bytes:
        kind = self.kind(index)
        if kind == "zeros":
            return bytes(BLOCK)
        rnd = random.Random(f"block-{self.seed}-{index}")
        if kind == "compressed":
            return rnd.randbytes(BLOCK)
        corpus = self._text if kind == "text" else self._binary
        start = rnd.randrange(len(corpus) - BLOCK)
        block = bytearray(corpus[start : start + BLOCK])
        # An edit every ~2 KiB keeps blocks distinct at any chunk size we use.
        for pos in range(rnd.randrange(2048), BLOCK, 2048):
            block[pos] = rnd.randrange(256)
        return bytes(block)

    def blocks(self, size: int) -> Iterator[bytes]:
        """The first `size` bytes, a block at a time (the last one may be short)."""
        for index in range((size + BLOCK - 1) // BLOCK):
            block = self.block(index)
            yield block[: size - index * BLOCK] if (index + 1) * BLOCK > size else block

    def generate(self, size: int) -> bytes:
        return b"".join(self.blocks(size))


def main(argv: list[str] | None = None) -> None:
    """python -m mover.tools.sampledata [--size 256MiB] [--seed 0] PATH: write a sample image."""
    import argparse

    from mover.units import parse_size

    parser = argparse.ArgumentParser(description="Write a deterministic sample volume image.")
    parser.add_argument("path")
    parser.add_argument("--size", default="256MiB")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    size = parse_size(args.size, "--size", minimum=1)
    with open(args.path, "wb") as out:
        for block in SampleData(args.seed).blocks(size):
            out.write(block)


if __name__ == "__main__":
    main()
