"""`python -m benchmarks.unchanged_bench` on a small image, end to end: the bound, the steady
state and the command are all measured and reported as ratios. Nothing about speed."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_unchanged_bench_reports_every_figure(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.unchanged_bench",
            "--size",
            "24MiB",
            "--repeat",
            "2",
            "--bound-size",
            "8MiB",
            "--min-time",
            "0.01",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "MOVER_TMPDIR": str(tmp_path)},
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    out = proc.stdout
    assert re.search(r"chunk\+hash on \d+ cores: \d+\.\d\d GB/s", out), out
    assert re.search(r"first backup of 0\.03 GB: [1-9]\d* chunks stored", out), out
    assert re.search(r"steady state \(2 runs\): best \d+\.\d\d GB/s \(\d+% of the bound\)", out)
    assert re.search(r"command .*: \d+\.\d\d GB/s \(\d+% of the bound\)", out), out
