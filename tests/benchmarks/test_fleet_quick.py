"""`python -m benchmarks.fleet --quick`: 20 apps backed up per namespace and migrated to a
second emulated cluster, end to end. Correctness only: every object and every volume byte
arrived, every app moved; nothing about speed."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow  # ~40 s on 2 cores: runs in CI (CI=true)
def test_fleet_quick_moves_every_app_and_loses_nothing(tmp_path: Path) -> None:
    figures = tmp_path / "fleet.json"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.fleet", "--quick", "--json", str(figures)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith(("MOVER_", "KUBE"))},
            "MOVER_TMPDIR": str(tmp_path),
        },
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    out = proc.stdout
    assert "lost: 0 objects, 0 bytes" in out, out
    assert re.search(r"arrived: (\d+) of \1 objects, (\d+) of \2 volume bytes", out), out
    result = json.loads(figures.read_text())
    assert result["apps"] == 20
    for step in ("backupAll", "seed", "cutover"):
        assert result[step]["completed"] == 20, result[step]
    assert result["seed"]["failed"] == result["cutover"]["failed"] == 0
    check = result["verify"]
    assert check["objects"] == 20 * 24 and check["objectsLost"] == 0
    assert check["volumeBytes"] == 20 * 2 * (1 << 20) and check["bytesLost"] == 0
    # The cut over restored by difference: most of every volume was there from the seed.
    assert 0 < result["bytes"]["fetched"] < result["bytes"]["unchanged"]
    assert set(result["peakRss"]) == {
        "source controller",
        "source agent",
        "target controller",
        "target agent",
    }
    assert all(rss > 0 for rss in result["peakRss"].values())
