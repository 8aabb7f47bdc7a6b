"""`python -m benchmarks.peers --quick` end to end: every tool on every dataset, every step, and
every restore bit-exact. Nothing about speed. restic and borg are installed by the benchmark
(apt-get) where missing, so this never skips."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DATASETS = ("fs", "db", "random")
TOOLS = ("mover", "restic", "borg-lz4", "borg-zstd3")
STEPS = ("init", "backup day 1", "backup day 2", "restore day 2", "backup unchanged")
CHANGED = "backup day 2, changed blocks"  # mover's, where both days are images of one size


@pytest.mark.slow
def test_peers_quick(tmp_path: Path) -> None:
    # The work directory is the default one under /tmp: pytest's tmp_path is not searchable by
    # the postgres user, which runs the db dataset's cluster.
    out = tmp_path / "peers.json"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.peers", "--quick", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-6000:]
    report = json.loads(out.read_text())
    assert report["ok"] is True and report["failures"] == []
    assert set(report["tools"]) == set(TOOLS)
    assert [d["name"] for d in report["datasets"]] == list(DATASETS)
    for dataset in report["datasets"]:
        assert dataset["day1_bytes"] > 0 and dataset["day2_bytes"] > 0
        assert set(dataset["runs"]) == set(TOOLS), dataset["name"]
        for tool, run in dataset["runs"].items():
            where = f"{dataset['name']} / {tool}"
            assert run["error"] is None, where
            assert run["restore_verified"] is True, (where, run["restore_mismatch"])
            image = dataset["day1_bytes"] == dataset["day2_bytes"]
            extra = [CHANGED] if tool == "mover" and image else []
            assert [s["name"] for s in run["steps"]] == [*STEPS, *extra], where
            for step in run["steps"]:
                assert step["wall_s"] > 0 and step["cpu_s"] >= 0, (where, step["name"])
                assert step["max_rss_mib"] > 0, (where, step["name"])
                if step["name"].startswith("backup"):
                    assert step["source_bytes"] > 0 and step["mb_per_s"] > 0, where
            # the first backup stored something; restoring stored nothing
            steps = {s["name"]: s for s in run["steps"]}
            assert steps["backup day 1"]["repo_added"] > 0, where
        image = dataset["day1_bytes"] == dataset["day2_bytes"]
        extra = {CHANGED} if image else set()
        for peer in ("restic", "borg-lz4", "borg-zstd3"):
            assert set(dataset["ratios"][peer]) == set(STEPS) | extra, (dataset["name"], peer)
        if image:
            # The changed-blocks day 2 read less than the image (bytes_read in its --json) and
            # stored what the full day 2 stored, give or take its metadata.
            mover_steps = {s["name"]: s for s in dataset["runs"]["mover"]["steps"]}
            read = mover_steps[CHANGED]["output"]["stats"]["bytes_read"]
            assert 0 < read < dataset["day2_bytes"], (dataset["name"], read)
            assert mover_steps[CHANGED]["repo_added"] > 0, dataset["name"]
    assert any(d["day1_bytes"] == d["day2_bytes"] for d in report["datasets"])  # fs: an image
