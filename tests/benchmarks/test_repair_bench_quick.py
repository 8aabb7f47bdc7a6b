"""`python -m benchmarks.repair_bench --quick` end to end: every step measured, each repair
indexed every blob of every pack, the damage was real, and the index rebuilt after it holds
every chunk. Nothing about speed or memory thresholds."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STEPS = [
    "generate",
    "repair index",
    "damage",
    "repair after damage",
    "verify",
    "repair --read-data",
    "check",
]
REPAIRS = ["repair index", "repair after damage", "repair --read-data"]
CHUNKS = 20_000
PACKS = 313  # 20,000 chunks in packs of 64
INDEX_FILES = 6  # 5 of 4,096 data entries (the last partial), and the tree's


def test_repair_bench_quick(tmp_path: Path) -> None:
    out = tmp_path / "repair_bench.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.repair_bench",
            "--quick",
            "--json",
            str(out),
            "--workdir",
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-6000:]
    report = json.loads(out.read_text())
    assert report["ok"] is True and report["problems"] == []
    assert report["generation"] and report["machine"]["cpus"] >= 1
    # the work directory (repository, saved index files) is gone
    assert [p.name for p in tmp_path.iterdir()] == [out.name]

    (result,) = report["results"]
    assert result["chunks"] == CHUNKS
    assert [s["name"] for s in result["steps"]] == STEPS
    for step in result["steps"]:
        assert step["wall_s"] > 0 and step["cpu_s"] >= 0, step["name"]
        assert step["max_rss_mib"] > 0, step["name"]
    steps = {s["name"]: s["output"] for s in result["steps"]}

    gen = result["generated"]
    assert gen["chunks"] == CHUNKS and gen["data_packs"] == PACKS
    assert gen["index_files"] == INDEX_FILES
    assert gen["tree_nodes"] >= 2 and gen["tree_packs"] == 1
    entries = CHUNKS + gen["tree_nodes"]
    assert result["entries"] == entries

    for name in REPAIRS:
        repair = steps[name]
        assert repair["chunks"] == entries, name
        assert repair["packs"] == PACKS + 1, name
        assert repair["index_files_written"] == 1, name  # 2^18 entries a file
        assert repair["damaged_packs"] == {} and repair["bad_blobs"] == 0, name
        assert repair["chunks_per_s"] > 0, name
    assert steps["repair index"]["index_files_deleted"] == INDEX_FILES
    # the damaged file is replaced too; the deleted ones are gone already
    assert steps["repair after damage"]["index_files_deleted"] == INDEX_FILES - 3
    assert steps["repair --read-data"]["index_files_deleted"] == 1

    damage = steps["damage"]
    assert damage["index_files"] == INDEX_FILES and len(damage["deleted"]) == 3
    assert damage["flipped"] not in damage["deleted"]
    assert damage["damaged"] == [f"index/{damage['flipped']}"]
    assert damage["index_chunks"] < entries

    verify = steps["verify"]
    assert verify["index_chunks"] == entries and verify["index_files"] == 1
    assert verify["damaged"] == []
    assert verify["checked"] == verify["found"] == CHUNKS
    assert verify["read_back"] == verify["read_back_equal"] == PACKS

    check = steps["check"]
    assert check["ok"] is True and check["errors"] == []
    assert check["chunks"] == entries and check["packs"] == PACKS + 1
    assert check["snapshots"] == 1
