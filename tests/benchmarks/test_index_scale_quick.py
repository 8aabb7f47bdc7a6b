"""`python -m benchmarks.index_scale --quick` end to end: every step measured, and what prune
left in the index is exactly the referenced half plus the tree nodes and the backup's new
chunks. Nothing about speed or memory thresholds."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STEPS = ["generate", "load index", "lookup", "backup", "prune", "verify"]
CHUNKS = 20_000
VOLUME = 1 << 30
# Tree nodes a backup of the quick volume stores: leaves of 8192 entries of at least 64 KiB
# (2 for 1 GiB, holes included), plus the root; with room to spare.
BACKUP_NODES_MAX = 8


def test_index_scale_quick(tmp_path: Path) -> None:
    out = tmp_path / "index_scale.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.index_scale",
            "--quick",
            "--json",
            str(out),
            "--workdir",
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-6000:]
    report = json.loads(out.read_text())
    assert report["ok"] is True and report["problems"] == []
    assert report["generation"] and report["volume_bytes"] == VOLUME
    assert [r["chunks"] for r in report["results"]] == [CHUNKS]
    # the work directory (repository, volume, index runs) is gone
    assert [p.name for p in tmp_path.iterdir()] == [out.name]

    result = report["results"][0]
    assert [s["name"] for s in result["steps"]] == STEPS
    for step in result["steps"]:
        assert step["wall_s"] > 0 and step["cpu_s"] >= 0, step["name"]
        assert step["max_rss_mib"] > 0, step["name"]
    steps = {s["name"]: s["output"] for s in result["steps"]}

    gen = result["generated"]
    referenced, unreferenced = gen["referenced_chunks"], gen["unreferenced_chunks"]
    assert referenced + unreferenced == CHUNKS
    assert abs(referenced - unreferenced) <= 64  # whole packs of 64: about half each
    assert gen["tree_nodes"] >= 2 and gen["tree_packs"] >= 1

    assert steps["load index"]["index_chunks"] == CHUNKS + gen["tree_nodes"]

    lookup = steps["lookup"]
    assert lookup["lookups"] == CHUNKS  # the one data index file, every id of it
    assert lookup["present_found"] == CHUNKS and lookup["absent_found"] == 0
    assert lookup["present_per_s"] > 0 and lookup["absent_per_s"] > 0

    backup = steps["backup"]["stats"]
    assert backup["bytes_read"] == VOLUME
    assert backup["new_chunks"] > 0 and backup["zero_bytes"] > VOLUME // 2

    prune = steps["prune"]
    assert prune["chunks_dropped"] == unreferenced
    assert prune["packs_condemned"] == gen["fake_packs"] // 2

    verify = steps["verify"]
    assert verify["snapshots"] == 2
    kept = referenced + gen["tree_nodes"] + backup["new_chunks"]
    assert kept <= verify["index_chunks"] <= kept + BACKUP_NODES_MAX
    assert verify["sampled_referenced"] == referenced
    assert verify["referenced_found"] == referenced
    assert verify["sampled_unreferenced"] == unreferenced
    assert verify["unreferenced_found"] == 0
