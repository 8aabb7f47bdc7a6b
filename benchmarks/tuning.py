"""Chunker and compression tuning table: which defaults should a repository get?

For every dataset of benchmarks/peers (fs image, PostgreSQL volume, shifted random data) and
every combination of average chunk size (64 KiB ... 4 MiB; min = avg/4, max = 4 x avg) and zstd
level (0 = none, 1, 2, 3), it backs up day 1 then day 2 into a fresh repository through the
library (one process, so start-up costs do not blur small runs) and reports:

  - day-1 throughput (MB/s of source, wall) and CPU seconds,
  - day-1 stored bytes, day-2 bytes added (what an incremental costs),
  - index bytes (index files) and chunk count (what the dedup index must hold).

    python -m benchmarks.tuning [--mode quick|default] [--datasets fs,db,random] [--json F]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.child import tree_bytes
from benchmarks.peers.datasets import Dataset, build
from benchmarks.peers.tools import ensure_installed
from mover.chunking import ChunkerParams
from mover.crypto import KdfParams
from mover.objects.repository import RepoConfig, Repository
from mover.pipeline.backup import run_backup
from mover.storage.local import LocalBackend

AVG_SIZES = [64 << 10, 256 << 10, 1 << 20, 4 << 20]
LEVELS = [0, 1, 2, 3]


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(ds: Dataset, avg: int, level: int, work: Path) -> dict[str, Any]:
    repo_dir = work / f"repo-{ds.name}-{avg}-{level}"
    params = ChunkerParams(avg // 4, avg, avg * 4, b"tuning")
    repo = Repository.init(
        LocalBackend(repo_dir), b"pw", RepoConfig(params, zstd_level=level), KdfParams(8192, 1, 1)
    )
    row: dict[str, Any] = {"dataset": ds.name, "avg": avg, "level": level}
    for day, path in (("day1", ds.day1), ("day2", ds.day2)):
        before = tree_bytes(repo_dir)
        cpu, start = cpu_seconds(), time.perf_counter()
        with open(path, "rb", buffering=0) as f:
            snapshot = run_backup(repo, f, str(path))
        wall = time.perf_counter() - start
        row[f"{day}_wall_s"] = round(wall, 3)
        row[f"{day}_cpu_s"] = round(cpu_seconds() - cpu, 3)
        row[f"{day}_mb_s"] = round(snapshot.size / wall / 1e6, 1)
        row[f"{day}_added"] = tree_bytes(repo_dir) - before
    row["index_bytes"] = tree_bytes(repo_dir / "index")
    row["chunks"] = len(repo.index)
    shutil.rmtree(repo_dir)
    return row


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", default="default", choices=["quick", "default"])
    parser.add_argument("--datasets", default="fs,db,random")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", dest="json_path")
    parser.add_argument("--workdir", type=Path)
    args = parser.parse_args(argv)
    names = args.datasets.split(",")
    ensure_installed(names)
    work = Path(tempfile.mkdtemp(prefix="mover-tuning-", dir=args.workdir))
    work.chmod(0o755)  # the db dataset runs PostgreSQL as the postgres user inside it
    rows: list[dict[str, Any]] = []
    try:
        for name in names:
            ds = build(name, work / name, args.mode, args.seed)
            print(f"{name}: day 1 {ds.day1_bytes / 2**20:,.0f} MiB, {ds.day2_description}")
            for avg in AVG_SIZES:
                for level in LEVELS:
                    row = measure(ds, avg, level, work)
                    rows.append(row)
                    print(
                        f"  avg {avg >> 10:>5} KiB zstd {level}: day1 {row['day1_mb_s']:>7,.0f}"
                        f" MB/s, stored {row['day1_added'] / 2**20:>8,.1f} MiB, day2 added "
                        f"{row['day2_added'] / 2**20:>7,.1f} MiB, index "
                        f"{row['index_bytes'] / 2**10:>7,.0f} KiB ({row['chunks']} chunks)",
                        flush=True,
                    )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
