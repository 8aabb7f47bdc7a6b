"""Throughput of each data-path stage on this node, on one core and on all cores.

What a user runs on a node before tuning (`mover benchmark`), and what benchmarks/ builds on.
Every stage works on the same generated data with a realistic mix (mover.tools.sampledata), except
the zero test, which is measured on zeros: that is where it has to read every byte.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import blake3
import zstandard
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from mover.chunking import (
    DEFAULT_PARAMS,
    ChunkerParams,
    available_kernels,
    is_zero,
    make_chunker,
    select_kernel,
)
from mover.chunking.native import KERNEL_ENV
from mover.tools.sampledata import BLOCK, SampleData

Work = Callable[[memoryview], None]  # processes one contiguous part of the data
PREFERRED_MIN_RATE = 500e6  # bytes/s the compression stage should sustain on this node


@dataclass(frozen=True)
class StageResult:
    name: str
    description: str
    one_core: float  # bytes per second
    all_cores: float

    @property
    def scaling(self) -> float:
        return self.all_cores / self.one_core if self.one_core else 0.0


@dataclass(frozen=True)
class NodeBenchmark:
    size: int
    threads: int
    kernels: list[str]
    params: ChunkerParams
    stages: list[StageResult] = field(default_factory=list)

    def stage(self, name: str) -> StageResult | None:
        return next((s for s in self.stages if s.name == name), None)

    def preferred_zstd_level(self) -> tuple[int, str]:
        """The zstd level this node should use: the strongest whose all-cores rate keeps up
        with PREFERRED_MIN_RATE (a fast local disk or a 10 GbE link), since compression is the
        slowest stage for new data (benchmarks/tuning.py: level 3 stores 2-8% less than 1)."""
        for level in (3, 1):
            result = self.stage(f"zstd_{level}")
            if result and result.all_cores >= PREFERRED_MIN_RATE:
                return level, (
                    f"zstd {level} compresses {result.all_cores / 1e6:,.0f} MB/s on all cores, "
                    f">= {PREFERRED_MIN_RATE / 1e6:,.0f} MB/s"
                )
        return 1, (
            f"no level reaches {PREFERRED_MIN_RATE / 1e6:,.0f} MB/s here; level 1 is the fastest "
            "that still compresses (0 = none if the data is known to be incompressible)"
        )

    def as_json(self) -> dict[str, object]:
        level, reason = self.preferred_zstd_level()
        return {
            "preferred": {
                "zstd_level": level,
                "chunk_avg_size": self.params.avg_size,
                "kernel": self.kernels[-1],
                "reason": reason,
            },
            "data_bytes": self.size,
            "threads": self.threads,
            "kernels": self.kernels,
            "chunker": {
                "min_size": self.params.min_size,
                "avg_size": self.params.avg_size,
                "max_size": self.params.max_size,
            },
            "stages": {
                s.name: {
                    "description": s.description,
                    "one_core_bytes_per_s": round(s.one_core),
                    "all_cores_bytes_per_s": round(s.all_cores),
                    "scaling": round(s.scaling, 2),
                }
                for s in self.stages
            },
        }


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _rate(work: Work, parts: list[memoryview], nbytes: int, min_time: float) -> float:
    """Best bytes/s over repeated rounds lasting at least min_time in all; one thread a part."""
    best, spent = 0.0, 0.0
    with ThreadPoolExecutor(max_workers=len(parts)) as pool:
        while spent < min_time or best == 0.0:
            start = time.perf_counter()
            for result in [pool.submit(work, part) for part in parts]:
                result.result()
            elapsed = time.perf_counter() - start
            spent += elapsed
            best = max(best, nbytes / elapsed)
    return best


def _split(view: memoryview, n: int) -> list[memoryview]:
    """n contiguous parts, cut at BLOCK multiples."""
    blocks = (len(view) + BLOCK - 1) // BLOCK
    per = max(1, (blocks + n - 1) // n) * BLOCK
    return [view[i : i + per] for i in range(0, len(view), per)]


def _pieces(part: memoryview) -> Iterator[memoryview]:
    """The part as read buffers of BLOCK bytes."""
    for i in range(0, len(part), BLOCK):
        yield part[i : i + BLOCK]


def _chunk_work(params: ChunkerParams, kernel: str) -> Work:
    def work(part: memoryview) -> None:
        chunker = make_chunker(params, kernel)
        for piece in _pieces(part):
            chunker.feed(piece)
        chunker.finish()

    return work


def _chunk_hash_work(params: ChunkerParams, kernel: str, key: bytes) -> Work:
    def work(part: memoryview) -> None:
        chunker = make_chunker(params, kernel)
        start = 0
        for piece in _pieces(part):
            for cut in chunker.feed(piece):
                blake3.blake3(part[start:cut], key=key).digest()
                start = cut
        for cut in chunker.finish():
            blake3.blake3(part[start:cut], key=key).digest()

    return work


def _hash_work(key: bytes) -> Work:
    def work(part: memoryview) -> None:
        for piece in _pieces(part):
            blake3.blake3(piece, key=key).digest()

    return work


def _zstd_work(level: int) -> Work:
    def work(part: memoryview) -> None:
        compressor = zstandard.ZstdCompressor(level=level)
        for piece in _pieces(part):
            compressor.compress(piece)

    return work


def _aead_work(aead: AESGCM | ChaCha20Poly1305) -> Work:
    def work(part: memoryview) -> None:
        nonce = bytes(12)  # a benchmark: nothing is kept, so one nonce is harmless here
        for piece in _pieces(part):
            aead.encrypt(nonce, piece, b"")

    return work


def _zero_work(part: memoryview) -> None:
    for piece in _pieces(part):
        if not is_zero(piece):
            raise AssertionError("zero-test data is not zero")


def run(
    size: int = 256 << 20,
    threads: int | None = None,
    params: ChunkerParams = DEFAULT_PARAMS,
    min_time: float = 0.5,
    progress: Callable[[str], None] | None = None,
) -> NodeBenchmark:
    threads = threads or usable_cpus()
    # A kernel asked for by MOVER_CDC_KERNEL is the only one measured (and must exist here).
    requested = os.environ.get(KERNEL_ENV, "auto")
    kernels = available_kernels() if requested == "auto" else [select_kernel(requested)]
    data = SampleData(seed=1).generate(size)
    mixed = memoryview(data)
    zeros = memoryview(bytes(size))
    key = bytes(range(32))
    stages: list[tuple[str, str, Work, memoryview]] = [
        *((f"chunk_{k}", f"FastCDC, {k} kernel", _chunk_work(params, k), mixed) for k in kernels),
        ("blake3", "keyed BLAKE3 over 1 MiB pieces", _hash_work(key), mixed),
        (
            "chunk_hash",
            "FastCDC (fastest kernel) + keyed BLAKE3 of each chunk",
            _chunk_hash_work(params, kernels[-1], key),
            mixed,
        ),
        ("zstd_1", "zstd level 1 compress, 1 MiB pieces", _zstd_work(1), mixed),
        ("zstd_3", "zstd level 3 compress, 1 MiB pieces", _zstd_work(3), mixed),
        ("aes_gcm", "AES-256-GCM encrypt, 1 MiB pieces", _aead_work(AESGCM(key)), mixed),
        (
            "chacha20",
            "ChaCha20-Poly1305 encrypt, 1 MiB pieces",
            _aead_work(ChaCha20Poly1305(key)),
            mixed,
        ),
        ("zero_test", "all-zero test on zero-filled data", _zero_work, zeros),
    ]
    result = NodeBenchmark(size=size, threads=threads, kernels=kernels, params=params)
    for name, description, work, source in stages:
        if progress:
            progress(name)
        one = _rate(work, [source], size, min_time)
        many = _rate(work, _split(source, threads), size, min_time)
        result.stages.append(StageResult(name, description, one, many))
    return result
