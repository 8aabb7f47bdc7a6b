"""Backup memory does not grow with the volume: peak RSS for a 4 GiB and a 32 GiB sparse image
(the same 64 MiB of data at 8 evenly spread places, zeros elsewhere) differs by under 10%."""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from mover.tools.sampledata import Mix, SampleData
from tests.integration.conftest import MOVER, MiB, init_repo, mover_env

GiB = 1 << 30
PIECES = 8
PIECE = 8 * MiB
RUNS = 3  # each figure is the median of this many backups, each into a fresh repository
# Runs the command in a child and prints the child's peak RSS (KiB) as the last line.
WRAPPER = (
    "import resource,subprocess,sys; subprocess.run(sys.argv[1:], check=True); "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
)


def make_sparse(path: Path, size: int, data: bytes) -> None:
    with open(path, "wb") as f:
        f.truncate(size)
        for i in range(PIECES):
            f.seek(i * (size // PIECES) + size // (2 * PIECES))
            f.write(data[i * PIECE : (i + 1) * PIECE])
    assert os.stat(path).st_blocks * 512 < 2 * PIECES * PIECE, "the image is not sparse"


def peak_rss_kib(repo: Path, source: Path, size: int) -> int:
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            WRAPPER,
            *MOVER,
            "backup",
            "--repo",
            str(repo),
            str(source),
            "--json",
        ],
        env=mover_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    head, _, last = proc.stdout.rstrip().rpartition("\n")
    stats = json.loads(head)["stats"]
    assert stats["bytes_read"] == size
    # The data has no zero blocks; chunks at its edges may take in some zeros.
    assert PIECES * PIECE <= stats["new_bytes"] <= 2 * PIECES * PIECE, stats
    assert stats["zero_bytes"] == size - stats["new_bytes"], stats
    return int(last)


@pytest.mark.slow
def test_peak_rss_does_not_grow_with_volume_size(tmp_path: Path) -> None:
    data = SampleData(31, Mix(text=50, binary=30, compressed=20)).generate(PIECES * PIECE)
    figures: dict[int, list[int]] = {}
    for size in (4 * GiB, 32 * GiB):
        source = tmp_path / f"sparse-{size // GiB}g.img"
        make_sparse(source, size, data)
        try:
            for run in range(RUNS):
                repo = init_repo(tmp_path / f"repo-{size // GiB}g-{run}")
                figures.setdefault(size, []).append(peak_rss_kib(repo, source, size))
                shutil.rmtree(repo)
        finally:
            source.unlink()
    small, large = (statistics.median(figures[s]) for s in (4 * GiB, 32 * GiB))
    print(
        f"\npeak RSS of backup (KiB, median of {RUNS}): 4 GiB sparse {small:.0f} "
        f"(runs {figures[4 * GiB]}), 32 GiB sparse {large:.0f} (runs {figures[32 * GiB]}); "
        f"difference {abs(large - small) / min(small, large):.1%}"
    )
    assert abs(large - small) < 0.10 * min(small, large)
