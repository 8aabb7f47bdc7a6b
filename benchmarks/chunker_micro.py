"""Chunker microbenchmark: every kernel against its floors, on the same data, in one run.

For each dataset and parameter set it times, on one core, data in memory:
  - each chunker kernel (the full streaming chunker, fed 1 MiB buffers),
  - the minimal byte-serial native gear-hash loop (no chunking logic: the scalar floor),
  - keyed BLAKE3 (single-threaded),
and prints bytes/s and the ratios kernel/gear-loop and kernel/BLAKE3.

"default" parameters skip the first min_size bytes of each chunk, as production does; "dense"
(min = 64 bytes) makes every kernel test nearly every byte, which is the per-byte cost.

    python -m benchmarks.chunker_micro [--size 256MiB] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

import blake3

from mover._native import load_cdc
from mover.chunking import DEFAULT_PARAMS, ChunkerParams, available_kernels, make_chunker
from mover.cli.sizes import parse_size
from mover.tools.sampledata import BLOCK, SampleData

PARAMS = {
    "default": DEFAULT_PARAMS,
    "dense": ChunkerParams(64, DEFAULT_PARAMS.avg_size, DEFAULT_PARAMS.max_size),
}


def best_rate(fn: Callable[[], object], nbytes: int, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return nbytes / best


def chunk_all(params: ChunkerParams, kernel: str, view: memoryview) -> Callable[[], object]:
    def run() -> list[int]:
        chunker = make_chunker(params, kernel)
        cuts: list[int] = []
        for i in range(0, len(view), BLOCK):
            cuts += chunker.feed(view[i : i + BLOCK])
        return cuts + chunker.finish()

    return run


def measure(size: int, rounds: int) -> dict[str, dict[str, dict[str, float]]]:
    cdc = load_cdc()
    datasets = {
        "random": blake3.blake3(b"chunker_micro").digest(size),
        "mixed": SampleData(seed=3).generate(size),
    }
    key = bytes(range(32))
    results: dict[str, dict[str, dict[str, float]]] = {}
    for data_name, data in datasets.items():
        view = memoryview(data)
        for params_name, params in PARAMS.items():
            row: dict[str, float] = {}
            row["gear_loop"] = best_rate(
                lambda p=params, v=view: cdc.gear_loop(p.gear_bytes, v, p.mask_l), size, rounds
            )
            row["blake3"] = best_rate(
                lambda v=view: blake3.blake3(v, key=key).digest(), size, rounds
            )
            for kernel in available_kernels():
                rate = best_rate(chunk_all(params, kernel, view), size, rounds)
                row[kernel] = rate
                row[f"{kernel}/gear_loop"] = rate / row["gear_loop"]
                row[f"{kernel}/blake3"] = rate / row["blake3"]
            results.setdefault(data_name, {})[params_name] = row
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="256MiB", help="bytes per dataset (default 256MiB)")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds; the best counts")
    parser.add_argument("--json", dest="json_path", help="also write the results as JSON here")
    args = parser.parse_args()
    size = parse_size(args.size, "--size", minimum=BLOCK)
    results = measure(size, args.rounds)
    kernels = available_kernels()
    header = ["data", "params", "gear loop", "BLAKE3", *kernels]
    header += [f"{k}/loop" for k in kernels] + [f"{k}/BLAKE3" for k in kernels]
    print(f"one core, {size / 2**20:.0f} MiB per dataset, MB/s and ratios")
    print(" | ".join(header))
    for data_name, by_params in results.items():
        for params_name, row in by_params.items():
            cells = [data_name, params_name]
            cells += [f"{row[k] / 1e6:,.0f}" for k in ("gear_loop", "blake3", *kernels)]
            cells += [f"{row[f'{k}/gear_loop']:.2f}x" for k in kernels]
            cells += [f"{row[f'{k}/blake3']:.2f}x" for k in kernels]
            print(" | ".join(cells))
    if args.json_path:
        with open(args.json_path, "w") as out:
            json.dump({"size": size, "results": results}, out, indent=2)


if __name__ == "__main__":
    main()
