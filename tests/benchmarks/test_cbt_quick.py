"""`python -m benchmarks.cbt` on a small image, end to end: both day-2 backups run, the trees are
equal and the changed run reads a small share. Nothing about speed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MiB = 1 << 20


@pytest.mark.slow  # ~4 s on 2 cores: runs in CI (CI=true)
def test_cbt_bench_reports_every_figure(tmp_path: Path) -> None:
    args = ["--size", "24MiB", "--changed", "1", "--extents", "4", "--verify", "10", "--json"]
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.cbt", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "MOVER_TMPDIR": str(tmp_path)},
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    result = json.loads(proc.stdout)
    assert result["trees_equal"] is True
    assert result["extents"] == 4
    assert result["full"]["bytes_read"] == 24 * MiB
    changed = result["changed"]
    assert 0 < changed["bytes_read"] < 12 * MiB
    assert changed["parent_bytes"] > 12 * MiB
    assert changed["verify_bytes"] > 0
    assert result["read_percent"] == round(100 * changed["bytes_read"] / (24 * MiB), 3)
