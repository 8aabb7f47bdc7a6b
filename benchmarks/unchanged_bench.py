"""Backup of data already stored, against its bound: chunking plus hashing on every core.

    python -m benchmarks.unchanged_bench [--size 4GiB] [--repeat 5] [--perf]
                                         [--bound-size 256MiB] [--min-time 0.5]

In one run, on the same machine:

- the bound: `mover benchmark`'s chunk_hash stage on all cores (FastCDC + keyed BLAKE3 of each
  chunk, data in memory, nothing read, nothing looked up);
- the pipeline in steady state: a sample image of --size (mover.tools.sampledata, the realistic mix,
  as `mover benchmark` uses) is backed up once, then --repeat more times with nothing changed,
  in this process (no interpreter start, no key derivation): read from the page cache, chunk,
  zero test, hash, index lookup, tree;
- the command as users run it: `python -m mover backup` of the same image in a child process
  (start-up, Argon2id with the repository's 64 MiB, locks and the snapshot included);
- with --perf, where the CPU time of one unchanged backup goes (perf record, grouped by
  library: BLAKE3, the chunker, the kernel, the interpreter).

Ratios are steady-state and command throughput over the bound.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from benchmarks.backup_bench import write_image  # the same sample image (seed 11), fsynced
from benchmarks.child import run_child
from mover.chunking import DEFAULT_PARAMS
from mover.cli.sizes import parse_size
from mover.crypto import KdfParams
from mover.objects.repository import RepoConfig, Repository
from mover.pipeline.backup import run_backup
from mover.storage.local import LocalBackend
from mover.tools import nodebench

PASSWORD = "unchanged-bench"
GB = 1e9
GROUPS = (("blake3", "BLAKE3"), ("cdc", "chunker"), ("kernel", "kernel"), ("python", "Python"))


def steady_state(repo: Repository, image: Path, repeat: int) -> list[float]:
    """Seconds of each unchanged backup, in this process."""
    times = []
    for _ in range(repeat):
        with open(image, "rb", buffering=0) as f:
            started = time.perf_counter()
            snapshot = run_backup(repo, f, "image", checkpoint_interval=None)
            times.append(time.perf_counter() - started)
        assert snapshot.stats["new_chunks"] == 0, "the data changed between runs"
    return times


def profile(argv: list[str], env: dict[str, str], work: Path) -> dict[str, float]:
    """Share of samples per library group for one run of argv under perf."""
    data = work / "perf.data"
    subprocess.run(
        ["perf", "record", "-q", "-F", "999", "-o", str(data), "--", *argv],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    report = subprocess.run(
        ["perf", "report", "-i", str(data), "--sort", "dso", "--stdio", "-q"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    shares: Counter[str] = Counter()  # percent of samples
    for line in report.splitlines():
        parts = line.split()
        if len(parts) < 2 or not parts[0].endswith("%"):
            continue
        share, dso = float(parts[0].rstrip("%")), " ".join(parts[1:])
        group = next((label for key, label in GROUPS if key in dso), "other")
        if "libpython" in dso:
            group = "Python"
        shares[group] += round(share * 100)  # hundredths of a percent
    return {name: hundredths / 100 for name, hundredths in shares.most_common()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", default="4GiB")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--perf", action="store_true", help="profile one unchanged backup")
    parser.add_argument("--bound-size", default="256MiB", help="data for the bound's stage")
    parser.add_argument("--min-time", type=float, default=0.5, help="seconds per bound stage")
    args = parser.parse_args(argv)
    size = parse_size(args.size, "--size")

    print("bound: mover benchmark's chunk_hash stage ...", flush=True)
    bench = nodebench.run(parse_size(args.bound_size, "--bound-size"), min_time=args.min_time)
    stage = bench.stage("chunk_hash")
    assert stage is not None
    bound = stage.all_cores
    print(f"  chunk+hash on {bench.threads} cores: {bound / GB:.2f} GB/s", flush=True)

    with tempfile.TemporaryDirectory(dir=os.environ.get("MOVER_TMPDIR")) as tmp:
        work = Path(tmp)
        image = work / "image.img"
        write_image(image, size)
        repo_dir = work / "repo"
        repo = Repository.init(
            LocalBackend(repo_dir), PASSWORD.encode(), RepoConfig(DEFAULT_PARAMS), KdfParams()
        )
        with open(image, "rb", buffering=0) as f:
            first = run_backup(repo, f, "image", checkpoint_interval=None)
        print(f"first backup of {size / GB:.2f} GB: {first.stats['new_chunks']} chunks stored")

        times = steady_state(repo, image, args.repeat)
        best, median = size / min(times), size / statistics.median(times)
        print(
            f"steady state ({args.repeat} runs): best {best / GB:.2f} GB/s "
            f"({best / bound:.0%} of the bound), median {median / GB:.2f} GB/s "
            f"({median / bound:.0%})"
        )

        env = {**os.environ, "MOVER_PASSWORD": PASSWORD}
        argv = [sys.executable, "-m", "mover", "backup", "--repo", str(repo_dir), str(image)]
        walls = []
        with open(os.devnull, "w") as devnull:
            for _ in range(3):
                run = run_child([*argv, "--json"], devnull, devnull, env=env)
                assert run.returncode == 0, "mover backup failed"
                walls.append(run.wall_s)
        command = size / statistics.median(walls)
        print(
            f"command (median of 3, start-up and key derivation included): "
            f"{command / GB:.2f} GB/s ({command / bound:.0%} of the bound)"
        )
        if args.perf:
            shares = profile([*argv, "--json"], env, work)
            listed = ", ".join(f"{name} {share:.0f}%" for name, share in shares.items())
            print(f"where one unchanged backup's CPU time goes (perf): {listed}")


if __name__ == "__main__":
    main()
