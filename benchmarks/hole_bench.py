"""Backup of a sparse volume: holes cut arithmetically (the default) against the chunker
seeing every zero byte, on the same file, in one run.

    python -m benchmarks.hole_bench --size 16GiB

The volume is a sparse file of --size with 1 MiB of random data at each quarter; both runs
back it up into a fresh local repository and must give the same chunks (checked through a
shared key and gear seed: equal tree roots)."""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import time

from mover.chunking import DEFAULT_PARAMS
from mover.cli.sizes import parse_size
from mover.crypto import KdfParams
from mover.objects.repository import RepoConfig, Repository
from mover.pipeline import backup as backup_module
from mover.pipeline.backup import run_backup
from mover.storage.local import LocalBackend

NO_FAST_PATH = 1 << 62  # a hole head longer than any piece: the chunker sees every byte


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", default="16GiB")
    args = parser.parse_args()
    size = parse_size(args.size, "--size")
    with tempfile.TemporaryDirectory(dir=os.environ.get("MOVER_TMPDIR")) as work:
        source = os.path.join(work, "sparse.img")
        rng = random.Random(1)
        with open(source, "wb") as f:
            f.truncate(size)
            for i in range(4):
                f.seek(i * (size // 4) + 12345)
                f.write(rng.randbytes(1 << 20))
        first: Repository | None = None
        roots: list[str] = []
        for label, head in (
            ("holes cut arithmetically", None),
            ("chunker sees every byte", NO_FAST_PATH),
        ):
            backup_module.HOLE_HEAD = head
            backend = LocalBackend(os.path.join(work, f"repo{len(roots)}"))
            repo = Repository.init(
                backend, b"bench", RepoConfig(DEFAULT_PARAMS), KdfParams(8192, 1, 1)
            )
            if first is None:
                first = repo
            else:  # the same key and gear seed, so that the roots compare
                repo = Repository(repo.backend, first.master, first.config, repo.id)
            wall, cpu = time.perf_counter(), time.process_time()
            with open(source, "rb") as f:
                snapshot = run_backup(repo, f, "sparse", checkpoint_interval=None)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            roots.append(snapshot.tree)
            print(f"{label:28} {size / wall / 1e9:7.1f} GB/s  wall {wall:6.2f} s  cpu {cpu:6.2f} s")
        print("same chunks and root:", roots[0] == roots[1])
        if roots[0] != roots[1]:
            raise SystemExit("the two runs gave different snapshots")


if __name__ == "__main__":
    main()
