"""Random access and `mover mount` against `mover restore`, on one local repository, in one run.

    python -m benchmarks.mount_bench --size 512MiB

The volume is --size of SampleData (text, binary, compressed and zero blocks), backed up with
the default chunk sizes and key derivation. Measured:
- time to first byte: `mover mount` started -> mounted -> the first 4 KiB of latest.img read
  (a new process: start-up, key derivation, index, lock); and in a process with the repository
  already open, a new reader's first read (the tree's nodes and one chunk);
- sequential read of the whole image through the mount (1 MiB reads, a fresh mount: nothing in
  the kernel's page cache), against `mover restore latest FILE` of the same snapshot;
- what one 1 MiB read in the middle of the volume fetches (readahead off): chunks, their bytes,
  tree nodes.
Prints one JSON object. Without FUSE (no /dev/fuse, no mfusepy) the mount figures are null.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from mover.cli.sizes import parse_size
from mover.objects.repository import Repository
from mover.pipeline.reader import SnapshotReader
from mover.storage.local import LocalBackend
from mover.tools.sampledata import SampleData

MiB = 1 << 20
PASSWORD = "mount bench"
MOVER = [sys.executable, "-m", "mover"]


def run(*args: str) -> float:
    """Seconds a mover command took; it must succeed."""
    env = {**os.environ, "MOVER_PASSWORD": PASSWORD}
    started = time.perf_counter()
    done = subprocess.run([*MOVER, *args], env=env, capture_output=True, stdin=subprocess.DEVNULL)
    if done.returncode:
        raise SystemExit(f"mover {args[0]} failed: {done.stderr.decode()}")
    return time.perf_counter() - started


def drop_caches(path: Path) -> None:
    """Take the file's pages out of the page cache (what the backend reads comes from disk or
    not is the same for both sides; this keeps the source image out of the comparison)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def mount_figures(repo: Path, work: Path, size: int) -> dict[str, Any]:
    try:
        from tests.integration.fusemount import fuse_unavailable
    except ImportError:
        return {"skipped": "the tests package is not importable"}
    why = fuse_unavailable()
    if why is not None:
        return {"skipped": why}
    mnt = work / "mnt"
    mnt.mkdir()
    env = {**os.environ, "MOVER_PASSWORD": PASSWORD}
    started = time.perf_counter()
    proc = subprocess.Popen(
        [*MOVER, "mount", "--repo", str(repo), str(mnt), "--json"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None
        proc.stdout.readline()
        mounted = time.perf_counter() - started
        fd = os.open(mnt / "latest.img", os.O_RDONLY)
        try:
            os.pread(fd, 4096, 0)
            first_byte = time.perf_counter() - started
            read_started = time.perf_counter()
            total = 0
            while block := os.read(fd, MiB):
                total += len(block)
            sequential = time.perf_counter() - read_started
        finally:
            os.close(fd)
        assert total == size, (total, size)
    finally:
        subprocess.run(["fusermount3", "-u", str(mnt)], check=False, capture_output=True)
        proc.communicate(timeout=120)
    return {
        "mount_ready_s": round(mounted, 3),
        "first_byte_s": round(first_byte, 3),
        "sequential_read_s": round(sequential, 3),
        "sequential_read_mb_s": round(size / sequential / 1e6),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", default="512MiB")
    args = parser.parse_args()
    size = parse_size(args.size, "--size")
    with tempfile.TemporaryDirectory(dir=os.environ.get("MOVER_TMPDIR")) as temp:
        work = Path(temp)
        source = work / "volume.img"
        with open(source, "wb") as f:
            for block in SampleData(7).blocks(size):
                f.write(block)
        repo = work / "repo"
        run("init", "--repo", str(repo))
        backup_s = run("backup", "--repo", str(repo), str(source))
        drop_caches(source)

        restored = work / "restored.img"
        restore_s = run("restore", "--repo", str(repo), "latest", str(restored))
        restored.unlink()
        results: dict[str, Any] = {
            "size_bytes": size,
            "backup_s": round(backup_s, 3),
            "restore_s": round(restore_s, 3),
            "restore_mb_s": round(size / restore_s / 1e6),
        }
        results["mount"] = mount_figures(repo, work, size)

        repository = Repository.open(LocalBackend(repo), PASSWORD.encode())
        snapshot = repository.find_snapshot("latest")
        started = time.perf_counter()
        repository.index  # noqa: B018
        index_s = time.perf_counter() - started
        started = time.perf_counter()
        with SnapshotReader(repository, snapshot, readahead=0) as reader:
            reader.read(0, 4096)
            first_read_s = time.perf_counter() - started
        middle = (size // 2) & ~4095
        with SnapshotReader(repository, snapshot, readahead=0) as reader:
            reader.read(middle, MiB)
            chunks, nodes = reader.chunks.stats, reader.nodes.stats
            extents = list(reader.extents(middle, MiB))
        results["library"] = {
            "index_load_s": round(index_s, 4),
            "first_read_s": round(first_read_s, 4),
            "one_mib_read": {
                "offset": middle,
                "extents": len(extents),
                "chunks_fetched": chunks.loads,
                "chunk_bytes_fetched": chunks.load_bytes,
                "tree_nodes_fetched": nodes.loads,
            },
        }
        repository.close()
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
