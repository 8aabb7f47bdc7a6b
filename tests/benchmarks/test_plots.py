"""`python -m benchmarks.plots`: every chart drawn from the committed results, valid PNG and SVG,
the same bytes when drawn again; bad input is one line on stderr, a non-zero exit and nothing
written. Nothing here looks at pixels."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
CHARTS = ["cbt", "fleet", "index_scale", "peers", "streams", "tuning"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def plots(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "benchmarks.plots", *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == PNG_MAGIC
    assert data[12:16] == b"IHDR"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_every_chart_is_a_png_from_the_committed_results(tmp_path: Path) -> None:
    proc = plots("--out", tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{c}.png" for c in CHARTS]
    for chart in CHARTS:
        data = (tmp_path / f"{chart}.png").read_bytes()
        width, height = png_size(data)
        assert width >= 600 and height >= 300, chart
        assert 10_000 < len(data) < 150_000, (chart, len(data))  # drawn, and kept small
        assert data.endswith(b"IEND\xaeB`\x82"), chart  # complete
        assert b"Software" not in data and b"matplotlib" not in data.lower()


def test_drawing_again_gives_the_same_bytes(tmp_path: Path) -> None:
    for out in ("a", "b"):
        assert plots("--out", tmp_path / out, "--format", "svg").returncode == 0
    for chart in CHARTS:
        first = (tmp_path / "a" / f"{chart}.svg").read_bytes()
        assert first == (tmp_path / "b" / f"{chart}.svg").read_bytes(), chart


def test_svg_is_well_formed_and_carries_no_date(tmp_path: Path) -> None:
    proc = plots("--out", tmp_path, "--format", "svg", "--in", RESULTS / "peers.json")
    assert proc.returncode == 0, proc.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["peers.svg"]
    data = (tmp_path / "peers.svg").read_bytes()
    assert len(data) > 10_000
    root = ET.fromstring(data)
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    assert b"dc:date" not in data and b"Matplotlib" not in data


def test_committed_images_are_what_the_results_draw(tmp_path: Path) -> None:
    """docs/images holds the charts of benchmarks/results: redrawn, same size within a margin
    (fonts and matplotlib versions may shift pixels; a different chart would not be this close)."""
    assert plots("--out", tmp_path).returncode == 0
    for chart in CHARTS:
        committed = (ROOT / "docs" / "images" / f"{chart}.png").read_bytes()
        drawn = (tmp_path / f"{chart}.png").read_bytes()
        assert png_size(committed) == png_size(drawn), chart
        assert len(committed) <= 110_000, chart


def test_each_committed_result_names_its_command_and_date() -> None:
    for chart in CHARTS:
        doc = json.loads((RESULTS / f"{chart}.json").read_text())
        assert doc["benchmark"] == chart
        assert "BENCHMARKS.md" in doc["source"]
        for run in doc["runs"]:
            assert run["command"].startswith("python -m benchmarks.")
            assert len(run["date"]) == 10 and run["date"].startswith("2026-")


def peers_step(name: str, rate: float | None) -> dict[str, object]:
    return {"name": name, "wall_s": 1.0, "mb_per_s": rate, "cpu_s": 1.0, "repo_added": 0}


RAW = {
    # `python -m benchmarks.cbt --json` (stdout)
    "cbt": {
        "size": 1 << 30,
        "changed_percent": 2.0,
        "changed_bytes": 21474836,
        "extents": 16,
        "verify_percent": 0.0,
        "full": {"bytes_read": 1 << 30, "seconds": 0.8},
        "changed": {"bytes_read": 40 << 20, "parent_bytes": 0, "verify_bytes": 0, "seconds": 0.2},
        "read_percent": 3.906,
        "speedup": 4.0,
        "trees_equal": True,
    },
    # `python -m benchmarks.peers --json F`, the fields the chart reads
    "peers": {
        "command": "python -m benchmarks.peers --quick",
        "mode": "quick",
        "tools": {"mover": {"label": "mover"}, "borg-lz4": {"label": "borg lz4"}},
        "datasets": [
            {
                "name": name,
                "runs": {
                    tool: {"steps": [peers_step("init", None), peers_step("backup day 1", rate)]}
                    for tool, rate in (("mover", 300.0), ("borg-lz4", 100.0))
                },
            }
            for name in ("fs", "db")
        ],
    },
    # `python -m benchmarks.tuning --json F`
    "tuning": [
        {
            "dataset": "fs",
            "avg": avg << 10,
            "level": level,
            "day1_added": 9 << 20,
            "day2_added": (avg >> 4) << 20,
            "index_bytes": 1,
            "chunks": 1,
        }
        for avg in (64, 256)
        for level in (0, 3)
    ],
}


@pytest.mark.parametrize("chart", sorted(RAW))
def test_a_benchmarks_own_json_is_drawn(tmp_path: Path, chart: str) -> None:
    source = tmp_path / "run.json"
    source.write_text(json.dumps(RAW[chart]))
    proc = plots("--in", source, "--out", tmp_path / "out")
    assert proc.returncode == 0, proc.stderr
    assert [p.name for p in (tmp_path / "out").iterdir()] == [f"{chart}.png"]
    assert png_size((tmp_path / "out" / f"{chart}.png").read_bytes())[0] >= 600


def bad_input(tmp_path: Path, name: str, content: str | None) -> Path:
    """A copy of the committed results with one file replaced (or removed when None)."""
    copy = tmp_path / "results"
    shutil.copytree(RESULTS, copy)
    if content is None:
        (copy / name).unlink()
        return copy / name
    (copy / name).write_text(content)
    return copy


def peers_without_a_rate() -> str:
    doc = json.loads((RESULTS / "peers.json").read_text())
    doc["runs"][0]["rows"][3]["mb_per_s"]["restic"] = "fast"
    return json.dumps(doc)


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("tuning.json", '{"benchmark": "tuning", "runs": [', "not JSON"),
        ("peers.json", peers_without_a_rate(), "expected a number, found 'fast'"),
        ("fleet.json", '{"benchmark": "fleet", "runs": [{"command": "x"}]}', "missing 'apps'"),
        ("cbt.json", '{"benchmark": "cbt"}', "missing 'runs'"),
        ("other.json", '{"benchmark": "nosuch", "runs": [{"command": "x"}]}', "unknown benchmark"),
        ("other.json", "[1, 2]", "not a results document"),
        ("streams.json", None, "no such file"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(
    tmp_path: Path, name: str, content: str | None, expected: str
) -> None:
    source = bad_input(tmp_path, name, content)
    out = tmp_path / "out"
    out.mkdir()
    (out / "peers.png").write_bytes(b"the image before")
    proc = plots("--in", source, "--out", out)
    assert proc.returncode == 2
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("benchmarks.plots: error: ") and expected in lines[0]
    assert name in lines[0]
    assert sorted(p.name for p in out.iterdir()) == ["peers.png"]  # no other, no temporary
    assert (out / "peers.png").read_bytes() == b"the image before"


def test_two_results_for_one_chart_are_refused(tmp_path: Path) -> None:
    copy = tmp_path / "again.json"
    shutil.copy(RESULTS / "cbt.json", copy)
    proc = plots("--in", RESULTS, copy, "--out", tmp_path / "out")
    assert proc.returncode == 2
    assert "a second results file for 'cbt'" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_a_directory_without_results_is_refused(tmp_path: Path) -> None:
    proc = plots("--in", tmp_path, "--out", tmp_path / "out")
    assert proc.returncode == 2
    assert "no *.json" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_the_docs_show_every_chart() -> None:
    benchmarks = (ROOT / "BENCHMARKS.md").read_text()
    for chart in CHARTS:
        assert f"](docs/images/{chart}.png)" in benchmarks, chart
    assert "](docs/images/peers.png)" in (ROOT / "README.md").read_text()
    assert "python -m benchmarks.plots" in benchmarks


def table_rows(markdown: str) -> list[tuple[set[str], set[float]]]:
    """Each Markdown table row of BENCHMARKS.md as (its text cells, its numbers): a cell's first
    word, without thousands separators or bold, read as a number where it is one."""
    rows = []
    for line in markdown.splitlines():
        if not line.startswith("|"):
            continue
        cells = [c.strip().replace("**", "") for c in line.strip().strip("|").split("|")]
        numbers: set[float] = set()
        for cell in cells:
            with contextlib.suppress(ValueError):
                numbers.add(float(cell.split(" ")[0].replace(",", "")))
        rows.append((set(cells), numbers))
    return rows


@pytest.mark.parametrize("chart", ["peers", "tuning", "index_scale", "streams"])
def test_committed_figures_are_benchmarks_md_rows(chart: str) -> None:
    """Nothing invented: every row of these results files is a row of a BENCHMARKS.md table,
    its labels cells of that row and every figure one of its numbers."""
    tables = table_rows((ROOT / "BENCHMARKS.md").read_text())
    doc = json.loads((RESULTS / f"{chart}.json").read_text())
    for run in doc["runs"]:
        for row in run["rows"] + run.get("stage", []):
            values = list(row.values())
            if isinstance(row.get("mb_per_s"), dict):  # peers: one rate per tool
                values += row["mb_per_s"].values()
            labels = {v for v in values if isinstance(v, str)}
            numbers = {float(v) for v in values if isinstance(v, int | float)}
            assert any(labels <= cells and numbers <= found for cells, found in tables), row
