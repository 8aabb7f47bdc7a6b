"""`backup --streams N` throughput: one volume read and chunked in N parallel streams.

Writes a volume image of --size bytes with the realistic mix (mover.tools.sampledata, seed 11, in a
helper process so that this one stays small), creates one repository (--kdf-memory 8MiB), and
measures `python -m mover backup IMAGE --streams N --json` as a child process, for each N:

- "new": into an empty copy of the repository (every chunk is hashed, compressed, encrypted,
  packed and written: the first backup of a volume);
- "reused": into a repository that already holds the image (chunking and hashing only: the
  nightly backup of a volume that changed little).

- "read+chunk": the stage that streams parallelise, alone, in a helper process: mover's
  parallel_chunks over the image (page cache), per chunker kernel, against one chunker fed
  8 MiB preads (the streams=1 backup's loop).

Each (case, N) runs --repeat times, the Ns interleaved so that load from elsewhere on the machine
hits them alike; the median is reported, with every run's wall seconds, user+sys CPU seconds and
peak RSS. Checkpointing stays at its default (every 1 GiB). Every snapshot of a case must have
the same tree root (the streams store the same chunks); the benchmark fails otherwise.

    python -m benchmarks.streams_bench [--size 1GiB] [--streams 1,2] [--repeat 3] [--json out]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from benchmarks.backup_bench import write_image
from benchmarks.child import run_child
from mover.chunking import DEFAULT_PARAMS, available_kernels, make_chunker
from mover.cli.sizes import parse_size
from mover.pipeline.parallel import parallel_chunks

PASSWORD = "streams-bench"


def mover(args: list[str], logs: Path, name: str) -> tuple[dict[str, Any], dict[str, float]]:
    env = {**os.environ, "MOVER_PASSWORD": PASSWORD}
    out_path, err_path = logs / f"{name}.out", logs / f"{name}.err"
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        child = run_child([sys.executable, "-m", "mover", *args, "--json"], out, err, env)
    if child.returncode != 0:
        sys.exit(f"`mover {' '.join(args)}` exited {child.returncode}: {err_path.read_text()}")
    result: dict[str, Any] = json.loads(out_path.read_text())
    figures = {
        "wall_s": child.wall_s,
        "cpu_s": child.user_s + child.sys_s,
        "max_rss_mib": child.max_rss_kib / 1024,
    }
    return result, figures


def chunk_stage(image: Path, counts: list[int], repeat: int) -> dict[str, dict[str, float]]:
    """MB/s of read+chunk: 'serial' (one chunker, 8 MiB preads) and each stream count."""
    fd = os.open(image, os.O_RDONLY)
    size = os.fstat(fd).st_size
    out: dict[str, dict[str, float]] = {}
    try:
        for kernel in available_kernels():
            times: dict[str, list[float]] = {}
            for _ in range(repeat):
                buf = bytearray(8 << 20)
                started = time.perf_counter()
                chunker, pos = make_chunker(DEFAULT_PARAMS, kernel), 0
                while n := os.preadv(fd, [buf], pos):
                    chunker.feed(memoryview(buf)[:n])
                    pos += n
                times.setdefault("serial", []).append(time.perf_counter() - started)
                for count in counts:
                    started = time.perf_counter()
                    for _ in parallel_chunks(fd, DEFAULT_PARAMS, count, kernel=kernel):
                        pass
                    times.setdefault(str(count), []).append(time.perf_counter() - started)
            out[kernel] = {k: size / statistics.median(v) / 1e6 for k, v in times.items()}
    finally:
        os.close(fd)
    return out


def run(size: int, counts: list[int], repeat: int, work: Path) -> dict[str, Any]:
    image, logs = work / "volume.img", work / "logs"
    logs.mkdir()
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=spawn) as helper:
        helper.submit(write_image, image, size).result()
        stage = helper.submit(chunk_stage, image, counts, repeat).result()
    empty = work / "empty"
    mover(["init", "--repo", str(empty), "--kdf-memory", "8MiB"], logs, "init")
    full = work / "full"
    shutil.copytree(empty, full)
    mover(["backup", "--repo", str(full), str(image)], logs, "populate")

    runs: dict[str, dict[int, list[dict[str, float]]]] = {"new": {}, "reused": {}}
    roots: dict[str, set[str]] = {"new": set(), "reused": set()}
    for r in range(repeat):
        for n in counts:
            fresh = work / f"fresh-{n}-{r}"
            shutil.copytree(empty, fresh)
            for case, repo in (("new", fresh), ("reused", full)):
                args = ["backup", "--repo", str(repo), str(image), "--streams", str(n)]
                result, figures = mover(args, logs, f"{case}-{n}-{r}")
                runs[case].setdefault(n, []).append(figures)
                roots[case].add(result["tree"])
                print(f"{case} --streams {n} run {r + 1}: {figures['wall_s']:.2f} s", flush=True)
            shutil.rmtree(fresh)
    if any(len(r) != 1 for r in roots.values()):
        sys.exit(f"STREAMS DIFFER: tree roots per case {roots}")

    report: dict[str, Any] = {"size": size, "cpus": os.cpu_count(), "chunk": stage, "cases": {}}
    for case, by_n in runs.items():
        rows = {}
        for n, per_run in by_n.items():
            wall = statistics.median(f["wall_s"] for f in per_run)
            rows[n] = {
                "mb_per_s": size / wall / 1e6,
                "wall_s": [round(f["wall_s"], 2) for f in per_run],
                "cpu_s": round(statistics.median(f["cpu_s"] for f in per_run), 2),
                "max_rss_mib": round(max(f["max_rss_mib"] for f in per_run), 1),
            }
        report["cases"][case] = rows
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="1GiB")
    parser.add_argument("--streams", default="1,2", help="comma-separated stream counts")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    size = parse_size(args.size, "--size")
    counts = [int(c) for c in args.streams.split(",")]
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        report = run(size, counts, args.repeat, Path(tmp))
    base = {case: rows[counts[0]]["mb_per_s"] for case, rows in report["cases"].items()}
    print(f"\n{size / 2**20:,.0f} MiB volume, {report['cpus']} CPUs (median of {args.repeat})")
    print(f"{'case':8} {'streams':>7} {'MB/s':>8} {'vs 1':>6} {'CPU s':>7} {'RSS MiB':>8}", "runs")
    for case, rows in report["cases"].items():
        for n, row in rows.items():
            print(
                f"{case:8} {n:>7} {row['mb_per_s']:>8,.0f} {row['mb_per_s'] / base[case]:>5.2f}x "
                f"{row['cpu_s']:>7.2f} {row['max_rss_mib']:>8.1f}  {row['wall_s']}"
            )
    print("\nread+chunk alone, MB/s (median):")
    for kernel, stage in report["chunk"].items():
        cells = ", ".join(f"{k}: {v:,.0f}" for k, v in stage.items())
        print(f"  {kernel}: {cells}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
