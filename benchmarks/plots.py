"""Charts of the benchmarks' figures, for BENCHMARKS.md and the README.

    python -m benchmarks.plots [--in DIR_OR_FILE ...] [--out docs/images] [--format png|svg]

Reads results documents (default: every *.json under benchmarks/results/) and draws one chart
per benchmark into --out, named after it (peers.png, tuning.png, index_scale.png, streams.png,
cbt.png, fleet.png). A results document is

    {"benchmark": NAME, "source": WHERE THE FIGURES COME FROM,
     "runs": [{"label", "command", "date", "rows": [...], ...}, ...]}

benchmarks/results/ holds one per chart, transcribed from BENCHMARKS.md's tables (the file says
which), so that the committed charts can be drawn again from the repository alone. The JSON that
`python -m benchmarks.peers --json F`, `python -m benchmarks.tuning --json F` and
`python -m benchmarks.cbt --json > F` write is read as well, so a new run is drawn without
copying figures by hand (those documents carry no date: the caption shows the command only).

All input is read and checked, and every chart drawn in memory, before anything is written: a
missing or malformed file is one line on stderr (exit 2) and leaves --out as it was. The output
is deterministic for a given matplotlib (no dates or versions in the files, a fixed SVG id
salt), so drawing again does not change committed images needlessly.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import sys
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no screen: before anything imports pyplot

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
IMAGES = HERE.parent / "docs" / "images"
FORMATS = ("png", "svg")
DPI = 90

# Colours: mover stands out, the peers stay muted (tab10's first and greys/browns).
MOVER = "#1f77b4"
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#7f7f7f"]
PEERS = {"restic": "#ff7f0e", "borg lz4": "#8c8c8c", "borg zstd,3": "#c49c94"}


class InputError(Exception):
    """A results file that cannot be drawn; the message names the file and what is wrong."""


# ---------------------------------------------------------------------------------------------
# reading


@dataclass(frozen=True)
class Results:
    """One results document: which benchmark, where it was read from, its runs."""

    benchmark: str
    path: Path
    runs: list[dict[str, Any]]
    goal: dict[str, Any] | None


def _where(obj: Any, key: str, where: str) -> Any:
    if not isinstance(obj, dict):
        raise InputError(f"{where}: expected an object, found {type(obj).__name__}")
    if key not in obj:
        raise InputError(f"{where}: missing {key!r}")
    return obj[key]


def number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InputError(f"{where}: expected a number, found {value!r}")
    return float(value)


def num(obj: Any, key: str, where: str) -> float:
    return number(_where(obj, key, where), f"{where}.{key}")


def text(obj: Any, key: str, where: str) -> str:
    value = _where(obj, key, where)
    if not isinstance(value, str):
        raise InputError(f"{where}.{key}: expected a string, found {value!r}")
    return value


def items(obj: Any, key: str, where: str) -> list[Any]:
    value = _where(obj, key, where)
    if not isinstance(value, list) or not value:
        raise InputError(f"{where}.{key}: expected a non-empty list")
    return value


def mapping(obj: Any, key: str, where: str) -> dict[str, Any]:
    value = _where(obj, key, where)
    if not isinstance(value, dict):
        raise InputError(f"{where}.{key}: expected an object")
    return value


def from_peers_report(doc: dict[str, Any], where: str) -> list[dict[str, Any]]:
    """`python -m benchmarks.peers --json` output as one run of MB/s per dataset and step."""
    tools = mapping(doc, "tools", where)
    labels = {k: text(v, "label", f"{where}.tools.{k}") for k, v in tools.items()}
    rows = []
    for i, dataset in enumerate(items(doc, "datasets", where)):
        at = f"{where}.datasets[{i}]"
        name = text(dataset, "name", at)
        by_step: dict[str, dict[str, float]] = {}
        for key, run in mapping(dataset, "runs", at).items():
            for j, step in enumerate(items(run, "steps", f"{at}.runs.{key}")):
                step_at = f"{at}.runs.{key}.steps[{j}]"
                rate = _where(step, "mb_per_s", step_at)
                if rate is not None:  # init has no rate
                    cells = by_step.setdefault(text(step, "name", step_at), {})
                    cells[labels.get(key, key)] = num(step, "mb_per_s", step_at)
        rows += [{"dataset": name, "step": s, "mb_per_s": r} for s, r in by_step.items()]
    return [
        {
            "label": f"{doc.get('mode', '?')} mode",
            "command": text(doc, "command", where),
            "rows": rows,
        }
    ]


def from_tuning_rows(doc: list[Any], where: str) -> list[dict[str, Any]]:
    """`python -m benchmarks.tuning --json` output (a list of rows, bytes) as one run."""
    rows = []
    for i, row in enumerate(doc):
        at = f"{where}[{i}]"
        rows.append(
            {
                "dataset": text(row, "dataset", at),
                "avg_kib": num(row, "avg", at) / 1024,
                "zstd_level": num(row, "level", at),
                "day1_stored_mib": num(row, "day1_added", at) / 2**20,
                "day2_added_mib": num(row, "day2_added", at) / 2**20,
            }
        )
    return [{"label": "tuning", "command": "python -m benchmarks.tuning", "rows": rows}]


def from_cbt_result(doc: dict[str, Any], where: str) -> list[dict[str, Any]]:
    """`python -m benchmarks.cbt --json` output as one run."""
    size = num(doc, "size", where)
    full, changed = mapping(doc, "full", where), mapping(doc, "changed", where)
    percent = num(doc, "changed_percent", where)
    return [
        {
            "label": f"{size / 2**30:g} GiB image",
            "command": f"python -m benchmarks.cbt --size {size / 2**30:g}GiB --changed {percent:g}"
            " --json",
            "image_gib": size / 2**30,
            "changed_percent": percent,
            "full": {
                "read_percent": 100 * num(full, "bytes_read", f"{where}.full") / size,
                "seconds": num(full, "seconds", f"{where}.full"),
            },
            "changed": {
                "read_percent": num(doc, "read_percent", where),
                "seconds": num(changed, "seconds", f"{where}.changed"),
            },
        }
    ]


def load(path: Path) -> Results:
    where = str(path)
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"{where}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{where}: cannot read: {exc}") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"{where}: not JSON: {exc}") from None
    if isinstance(doc, dict) and "benchmark" in doc:
        goal = doc.get("goal")
        if goal is not None and not isinstance(goal, dict):
            raise InputError(f"{where}.goal: expected an object")
        runs = items(doc, "runs", where)
        for i, run in enumerate(runs):
            text(run, "command", f"{where}.runs[{i}]")
        return Results(text(doc, "benchmark", where), path, runs, goal)
    if isinstance(doc, dict) and "datasets" in doc and "tools" in doc:
        return Results("peers", path, from_peers_report(doc, where), None)
    if isinstance(doc, list) and doc and isinstance(doc[0], dict) and "level" in doc[0]:
        return Results("tuning", path, from_tuning_rows(doc, where), None)
    if isinstance(doc, dict) and "changed_percent" in doc and "full" in doc:
        return Results("cbt", path, from_cbt_result(doc, where), None)
    raise InputError(
        f"{where}: not a results document (no 'benchmark' key) nor the JSON of peers, tuning or cbt"
    )


def inputs(paths: Iterable[Path]) -> list[Path]:
    """The files named, and the *.json of the directories named, sorted within a directory."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            files = sorted(path.glob("*.json"))
            if not files:
                raise InputError(f"{path}: no *.json in this directory")
            found += files
        else:
            found.append(path)  # a missing file is reported by load(), with its name
    return found


# ---------------------------------------------------------------------------------------------
# drawing helpers


def figure(title: str, ncols: int, nrows: int = 1, height: float = 4.6) -> tuple[Figure, Any]:
    fig = Figure(figsize=(11, height), dpi=DPI, layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    fig.suptitle(title, fontsize=12, fontweight="bold")
    return fig, axes


def caption(fig: Figure, results: Results, note: str = "") -> None:
    """The commands that produced the figures, footnote-sized, under the axes."""
    runs = []
    for run in results.runs:
        date = run.get("date")
        runs.append(f"{run['command']}" + (f" ({date})" if isinstance(date, str) else ""))
    lines = ["Source: " + "; ".join(dict.fromkeys(runs))]
    if note:
        lines.append(note)
    # A layout-managed footer: constrained layout makes room for it under the axes.
    fig.supxlabel("\n".join(lines), fontsize=7, color="#444444", ha="left", x=0.01)


def label_bars(ax: Axes, bars: Any, labels: list[str], size: float = 7) -> None:
    ax.bar_label(bars, labels=labels, padding=2, fontsize=size)


def thousands(ax: Axes) -> None:
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))


# ---------------------------------------------------------------------------------------------
# the charts

STEP_ORDER = ("backup day 1", "backup day 2", "restore day 2", "backup unchanged")


def draw_peers(results: Results) -> Figure:
    run = results.runs[0]
    where = f"{results.path}.runs[0]"
    table: dict[str, dict[str, dict[str, float]]] = {}
    tools: list[str] = []
    for i, row in enumerate(items(run, "rows", where)):
        at = f"{where}.rows[{i}]"
        rates = mapping(row, "mb_per_s", at)
        cells = {tool: num(rates, tool, f"{at}.mb_per_s") for tool in rates}
        table.setdefault(text(row, "dataset", at), {})[text(row, "step", at)] = cells
        tools += [t for t in cells if t not in tools]
    if "mover" not in tools:
        raise InputError(f"{where}: no figures for mover")
    tools = ["mover"] + [t for t in tools if t != "mover"]
    fig, axes = figure(
        "mover against restic and borg, MB/s per step (higher is better; ratio: mover / restic)",
        ncols=len(table),
    )
    width = 0.8 / len(tools)
    top = max(v for steps in table.values() for cells in steps.values() for v in cells.values())
    for ax, (dataset, steps) in zip(axes[0], table.items(), strict=True):
        names = [s for s in STEP_ORDER if s in steps] + [s for s in steps if s not in STEP_ORDER]
        for k, tool in enumerate(tools):
            values = [steps[s].get(tool, 0.0) for s in names]
            xs = [i + (k - (len(tools) - 1) / 2) * width for i in range(len(names))]
            colour = MOVER if tool == "mover" else PEERS.get(tool, PALETTE[k % len(PALETTE)])
            bars = ax.bar(xs, values, width, label=tool, color=colour)
            if tool == "mover" and "restic" in tools:
                ratios = [
                    f"{steps[s]['mover'] / steps[s]['restic']:.1f}x"
                    if steps[s].get("restic")
                    else ""
                    for s in names
                ]
                label_bars(ax, bars, ratios, size=7.5)
        ax.set_title(f"{dataset} dataset", fontsize=10)
        ax.set_xticks(range(len(names)), [n.replace(" ", "\n", 1) for n in names], fontsize=8)
        ax.set_ylim(0, top * 1.12)
        ax.grid(axis="y", alpha=0.3)
        thousands(ax)
    axes[0][0].set_ylabel("throughput, MB/s of source (MB = 10^6 bytes)")
    axes[0][0].legend(fontsize=8, loc="upper left")
    caption(fig, results, f"{run.get('label', '')}; {run.get('machine', '')}".strip("; "))
    return fig


def draw_tuning(results: Results) -> Figure:
    run = results.runs[0]
    where = f"{results.path}.runs[0]"
    data: dict[str, dict[float, dict[float, tuple[float, float]]]] = {}
    for i, row in enumerate(items(run, "rows", where)):
        at = f"{where}.rows[{i}]"
        by_level = data.setdefault(text(row, "dataset", at), {})
        by_level.setdefault(num(row, "zstd_level", at), {})[num(row, "avg_kib", at)] = (
            num(row, "day1_stored_mib", at),
            num(row, "day2_added_mib", at),
        )
    fig, axes = figure(
        "Chunk size x zstd level: what a repository stores (lower is better)",
        ncols=len(data),
        nrows=2,
        height=5.8,
    )
    for col, (dataset, by_level) in enumerate(data.items()):
        for k, (level, points) in enumerate(sorted(by_level.items())):
            sizes = sorted(points)
            for r in range(2):
                axes[r][col].plot(
                    sizes,
                    [points[s][r] for s in sizes],
                    marker="o",
                    markersize=4,
                    color=PALETTE[k % len(PALETTE)],
                    label="no compression" if level == 0 else f"zstd {level:g}",
                )
        for r, what in enumerate(("day 1: stored", "day 2: added (incremental)")):
            ax = axes[r][col]
            ax.set_xscale("log", base=2)
            ax.set_xticks([64, 256, 1024, 4096], ["64", "256", "1,024", "4,096"])
            ax.minorticks_off()
            ax.set_ylim(0, ax.dataLim.y1 * 1.08)
            thousands(ax)
            ax.axvline(256, color="#444444", linestyle=":", linewidth=1)
            ax.grid(alpha=0.3)
            ax.set_title(f"{dataset}, {what}", fontsize=9)
        axes[1][col].set_xlabel("average chunk size, KiB (log)")
    axes[0][0].set_ylabel("day-1 stored, MiB")
    axes[1][0].set_ylabel("day-2 added, MiB")
    axes[0][0].legend(fontsize=8)
    caption(
        fig,
        results,
        "Chunks: min = avg/4, max = 4 x avg. Dotted: the chosen default, 256 KiB average, with "
        "zstd 3. Lines that coincide: compression levels on incompressible data. MB/s is left "
        "out: other work shared the cores during the run.",
    )
    return fig


def draw_index_scale(results: Results) -> Figure:
    fig, axes = figure("Index and prune at scale: peak RSS and wall time vs chunks", ncols=2)
    rss, wall = axes[0]
    colours: dict[str, str] = {}
    chunks: set[float] = set()
    for r, run in enumerate(results.runs):
        where = f"{results.path}.runs[{r}]"
        series: dict[str, list[tuple[float, float, float]]] = {}
        for i, row in enumerate(items(run, "rows", where)):
            at = f"{where}.rows[{i}]"
            step = text(row, "step", at)
            if step == "generate":  # the harness making the repository, not mover
                continue
            series.setdefault(step, []).append(
                (num(row, "chunks", at), num(row, "peak_rss_mib", at), num(row, "wall_s", at))
            )
        for step, points in series.items():
            colour = colours.setdefault(step, PALETTE[len(colours) % len(PALETTE)])
            points.sort()
            xs = [p[0] / 1e6 for p in points]
            chunks.update(xs)
            style: dict[str, Any] = (
                {"marker": "o", "linestyle": "-", "label": step}
                if r == 0
                else {
                    "marker": "D",
                    "linestyle": "none",
                    "markerfacecolor": "none",
                    "markersize": 8,
                }
            )
            rss.plot(xs, [p[1] for p in points], color=colour, **style)
            wall.plot(xs, [p[2] for p in points], color=colour, **style)
    later = [run.get("label", "") for run in results.runs[1:]]
    if later:  # one legend entry for the hollow markers of later runs
        for ax in (rss, wall):
            ax.plot(
                [],
                [],
                marker="D",
                linestyle="none",
                markerfacecolor="none",
                color="#444444",
                markersize=8,
                label="; ".join(later),
            )
    rss.axhline(1024, color="#d62728", linestyle="--", linewidth=1, label="goal: < 1 GiB")
    wall.set_yscale("log")
    rss.set_ylim(0, rss.dataLim.y1 * 1.1)
    for ax, what in ((rss, "peak RSS, MiB"), (wall, "wall time, s (log)")):
        ax.set_xscale("log")
        ax.set_xticks(sorted(chunks), [f"{c:g}" for c in sorted(chunks)])
        ax.minorticks_off()
        ax.set_xlabel("chunks in the repository, millions (log)")
        ax.set_ylabel(what)
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
        ax.grid(alpha=0.3)
    rss.set_title("peak RSS of each step (a child process)", fontsize=10)
    wall.set_title("wall time of each step", fontsize=10)
    rss.legend(fontsize=7.5)
    caption(fig, results)
    return fig


def draw_streams(results: Results) -> Figure:
    run = results.runs[0]
    where = f"{results.path}.runs[0]"
    cases: dict[str, dict[float, float]] = {}
    for i, row in enumerate(items(run, "rows", where)):
        at = f"{where}.rows[{i}]"
        cases.setdefault(text(row, "case", at), {})[num(row, "streams", at)] = num(
            row, "mb_per_s", at
        )
    fig, axes = figure("backup --streams N on 2 cores", ncols=2)
    left, right = axes[0]
    counts = sorted({n for by_n in cases.values() for n in by_n})
    width = 0.8 / len(counts)
    for k, n in enumerate(counts):
        xs = [i + (k - (len(counts) - 1) / 2) * width for i in range(len(cases))]
        values = [by_n.get(n, 0.0) for by_n in cases.values()]
        bars = left.bar(
            xs, values, width, label=f"{n:g} stream" + ("s" if n != 1 else ""), color=PALETTE[k]
        )
        base = [by_n.get(counts[0], 0.0) for by_n in cases.values()]
        label_bars(
            left, bars, [f"{v / b:.2f}x" if b else "" for v, b in zip(values, base, strict=True)]
        )
    left.set_xticks(range(len(cases)), [f"{c} data" for c in cases])
    left.set_ylabel("backup throughput, MB/s of source")
    left.set_title("whole backup (median of runs)", fontsize=10)
    stage = run.get("stage")
    if stage is not None:
        columns = (
            ("serial", "serial_mb_per_s"),
            ("1 stream", "one_stream_mb_per_s"),
            ("2 streams", "two_streams_mb_per_s"),
        )
        if not isinstance(stage, list) or not stage:
            raise InputError(f"{where}.stage: expected a non-empty list")
        kernels = [text(row, "kernel", f"{where}.stage[{i}]") for i, row in enumerate(stage)]
        width = 0.8 / len(columns)
        for k, (name, key) in enumerate(columns):
            xs = [i + (k - 1) * width for i in range(len(kernels))]
            values = [num(row, key, f"{where}.stage[{i}]") for i, row in enumerate(stage)]
            bars = right.bar(xs, values, width, label=name, color=PALETTE[k + 3])
            label_bars(right, bars, [f"{v:,.0f}" for v in values])
        right.set_xticks(range(len(kernels)), [f"{k} kernel" for k in kernels])
        right.set_ylabel("read + chunk, MB/s")
        right.set_title("the read + chunk stage alone", fontsize=10)
        right.legend(fontsize=8)
    for ax in (left, right):
        ax.grid(axis="y", alpha=0.3)
        thousands(ax)
    left.legend(fontsize=8)
    caption(fig, results, str(run.get("label", "")))
    return fig


def draw_cbt(results: Results) -> Figure:
    fig, axes = figure("Changed-range backups: day 2 with a change list against a full read", 2)
    left, right = axes[0]
    labels, full_s, changed_s = [], [], []
    by_image: dict[float, list[tuple[float, float, float]]] = {}  # GiB: (share, read, full read)
    for r, run in enumerate(results.runs):
        where = f"{results.path}.runs[{r}]"
        share = num(run, "changed_percent", where)
        full, changed = mapping(run, "full", where), mapping(run, "changed", where)
        gib = num(run, "image_gib", where)
        read = num(changed, "read_percent", f"{where}.changed")
        full_read = num(full, "read_percent", f"{where}.full") if "read_percent" in full else 0.0
        by_image.setdefault(gib, []).append((share, read, full_read))
        labels.append(f"{gib:g} GiB, {share:g}%")
        full_s.append(num(full, "seconds", f"{where}.full"))
        changed_s.append(num(changed, "seconds", f"{where}.changed"))
    for g, (gib, points) in enumerate(sorted(by_image.items())):
        points.sort()
        colour = PALETTE[g % len(PALETTE)]
        shares, reads = [p[0] for p in points], [p[1] for p in points]
        left.plot(
            shares, reads, marker="o", color=colour, label=f"--changed-ranges, {gib:g} GiB image"
        )
        for share, read, _ in points:
            left.annotate(
                f"{read:g}%", (share, read), textcoords="offset points", xytext=(8, -3), fontsize=8
            )
        fulls = [(p[0], p[2]) for p in points if p[2]]
        if fulls:
            left.plot(
                [f[0] for f in fulls],
                [f[1] for f in fulls],
                marker="s",
                linestyle="none",
                color=colour,
                label=f"full read, {gib:g} GiB image",
            )
    shares = [num(run, "changed_percent", f"{results.path}.runs") for run in results.runs]
    low, high = min(0.5, *shares), max(100.0, *shares)
    left.plot(
        [low, high],
        [low, high],
        color="#444444",
        linestyle=":",
        linewidth=1,
        label="reads exactly what changed",
    )
    if results.goal is not None:
        goal_at = num(results.goal, "changed_percent", f"{results.path}.goal")
        goal = num(results.goal, "max_read_percent", f"{results.path}.goal")
        left.plot(
            [goal_at],
            [goal],
            marker="_",
            markersize=30,
            color="#d62728",
            linestyle="none",
            label=f"goal: <= {goal:g}% read at {goal_at:g}% changed",
        )
    left.set_xscale("log")
    left.set_yscale("log")
    left.set_xlim(low / 1.5, high * 1.5)
    left.set_ylim(low / 1.5, high * 1.5)
    for axis in (left.xaxis, left.yaxis):
        axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}%"))
    left.set_xlabel("changed share of the image, % (log)")
    left.set_ylabel("bytes read on day 2, % of the image (log)")
    left.set_title("bytes read vs changed share", fontsize=10)
    left.grid(alpha=0.3)
    left.legend(fontsize=7.5, loc="lower right")
    xs = range(len(labels))
    for k, (name, values) in enumerate((("full read", full_s), ("--changed-ranges", changed_s))):
        bars = right.bar(
            [x + (k - 0.5) * 0.38 for x in xs], values, 0.38, label=name, color=PALETTE[[6, 0][k]]
        )
        label_bars(right, bars, [f"{v:.2f} s" for v in values])
    right.set_xticks(list(xs), labels, rotation=30, ha="right", fontsize=8)
    right.set_ylabel("day-2 backup wall time, s (image in the page cache)")
    right.set_title("wall time", fontsize=10)
    right.grid(axis="y", alpha=0.3)
    right.legend(fontsize=8)
    caption(fig, results, "Both day-2 trees are equal in every run.")
    return fig


@dataclass(frozen=True)
class FleetRun:
    apps: float
    date: str
    label: str
    total_s: float
    other_totals_s: list[float]
    steps: dict[str, tuple[float, float, float]] | None  # wall s, requests/app source, target
    lossless: bool


def fleet_runs(results: Results) -> list[FleetRun]:
    runs = []
    for r, run in enumerate(results.runs):
        where = f"{results.path}.runs[{r}]"
        steps = None
        if "rows" in run:
            steps = {}
            for i, row in enumerate(items(run, "rows", where)):
                at = f"{where}.rows[{i}]"
                steps[text(row, "step", at)] = (
                    num(row, "wall_s", at),
                    num(row, "requests_per_app_source", at),
                    num(row, "requests_per_app_target", at),
                )
        others = run.get("other_totals_s", [])
        if not isinstance(others, list):
            raise InputError(f"{where}.other_totals_s: expected a list")
        runs.append(
            FleetRun(
                apps=num(run, "apps", where),
                date=str(run.get("date", "")),
                label=str(run.get("label", "")),
                total_s=num(run, "total_s", where),
                other_totals_s=[number(v, f"{where}.other_totals_s") for v in others],
                steps=steps,
                lossless=run.get("lost_objects") == 0 and run.get("lost_bytes") == 0,
            )
        )
    return sorted(runs, key=lambda run: run.apps)


def draw_fleet(results: Results) -> Figure:
    runs = fleet_runs(results)
    fig, axes = figure("Fleet migration to a second cluster: wall time and API load vs apps", 2)
    left, right = axes[0]
    steps = list(dict.fromkeys(s for run in runs for s in run.steps or {}))
    colour = {step: PALETTE[i % len(PALETTE)] for i, step in enumerate(steps)}
    for r, run in enumerate(runs):
        if run.steps is None:
            left.bar(
                [r],
                [run.total_s],
                0.6,
                color="#dddddd",
                edgecolor="#444444",
                hatch="//",
                label="total only (steps not recorded)",
            )
        else:
            bottom = 0.0
            for step, (wall, _, _) in run.steps.items():
                left.bar([r], [wall], 0.6, bottom=bottom, color=colour[step], label=step)
                bottom += wall
        left.annotate(
            f"{run.total_s:,.0f} s",
            (r, run.total_s),
            textcoords="offset points",
            xytext=(0, 3),
            ha="center",
            fontsize=8,
        )
        for other in run.other_totals_s:
            left.plot(
                [r + 0.38],
                [other],
                marker="x",
                color="#444444",
                linestyle="none",
                label="another run's total",
            )
    left.set_xticks(range(len(runs)), [f"{run.apps:g} apps\n{run.date}" for run in runs])
    left.set_ylabel("wall time of the steps, s")
    left.set_title("backup all, seed and cut over (stacked)", fontsize=10)
    handles, names = left.get_legend_handles_labels()
    unique = dict(zip(names, handles, strict=True))  # one entry per step, not per bar
    left.legend(unique.values(), unique.keys(), fontsize=7.5, loc="upper left")
    # API requests per app, by step: flat as the fleet grows
    detailed = [run for run in runs if run.steps is not None]
    bars = [(run, side) for run in detailed for side in (1, 2)]
    width = 0.8 / max(1, len(bars))
    for k, (run, side) in enumerate(bars):
        assert run.steps is not None
        xs = [i + (k - (len(bars) - 1) / 2) * width for i in range(len(steps))]
        values = [run.steps[s][side] if s in run.steps else 0.0 for s in steps]
        faded = len(detailed) > 1 and run is not detailed[-1]  # the latest run in full colour
        right.bar(
            xs,
            values,
            width,
            color=PALETTE[side - 1],
            alpha=0.5 if faded else 1.0,
            label=f"{run.apps:g} apps, {['source', 'target'][side - 1]} cluster",
        )
    right.set_xticks(range(len(steps)), steps)
    right.set_ylabel("API requests per app")
    right.set_title("Kubernetes API requests per app, by step", fontsize=10)
    right.set_ylim(0, right.dataLim.y1 * 1.3)
    right.legend(fontsize=7.5, ncols=2, loc="upper center")
    for ax in (left, right):
        ax.grid(axis="y", alpha=0.3)
        thousands(ax)
    notes = [f"{run.apps:g} apps: {run.label}" for run in runs]
    lossless = [f"{run.apps:g}" for run in runs if run.lossless]
    if lossless:
        notes.append(f"0 objects and 0 volume bytes lost at {' and '.join(lossless)} apps")
    caption(fig, results, ". ".join(notes) + ".")
    return fig


CHARTS: dict[str, Callable[[Results], Figure]] = {
    "peers": draw_peers,
    "tuning": draw_tuning,
    "index_scale": draw_index_scale,
    "streams": draw_streams,
    "cbt": draw_cbt,
    "fleet": draw_fleet,
}


# ---------------------------------------------------------------------------------------------
# rendering and writing


def render(fig: Figure, fmt: str) -> bytes:
    """The figure's bytes, with nothing in them that changes from one run to the next."""
    out = io.BytesIO()
    metadata: dict[str, str | None] = (
        {"Software": None} if fmt == "png" else {"Date": None, "Creator": None}
    )
    with matplotlib.rc_context({"svg.hashsalt": "mover-benchmarks", "svg.fonttype": "path"}):
        fig.savefig(out, format=fmt, dpi=DPI, metadata=metadata)
    return out.getvalue()


def draw_all(results: list[Results], fmt: str) -> dict[str, bytes]:
    seen: dict[str, Path] = {}
    drawn: dict[str, bytes] = {}
    for res in results:
        if res.benchmark not in CHARTS:
            known = ", ".join(CHARTS)
            raise InputError(f"{res.path}: unknown benchmark {res.benchmark!r} (known: {known})")
        if res.benchmark in seen:
            raise InputError(
                f"{res.path}: a second results file for {res.benchmark!r} "
                f"(the first: {seen[res.benchmark]}); pass one"
            )
        seen[res.benchmark] = res.path
        try:
            fig = CHARTS[res.benchmark](res)
        except InputError:
            raise
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise InputError(f"{res.path}: malformed {res.benchmark} results: {exc!r}") from None
        drawn[f"{res.benchmark}.{fmt}"] = render(fig, fmt)
    return drawn


def write_all(drawn: dict[str, bytes], out: Path) -> None:
    """Every file to a temporary name first, then renamed: a failure leaves no half file."""
    out.mkdir(parents=True, exist_ok=True)
    staged: list[tuple[str, Path]] = []
    try:
        for name, data in drawn.items():
            fd, temp = tempfile.mkstemp(dir=out, prefix=f".{name}.", suffix=".tmp")
            staged.append((name, Path(temp)))
            with os.fdopen(fd, "wb") as f:
                f.write(data)
        for name, tmp in staged:
            os.chmod(tmp, 0o644)
            os.replace(tmp, out / name)
    finally:
        for _, tmp in staged:
            tmp.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.plots", description=(__doc__ or "").splitlines()[0]
    )
    parser.add_argument(
        "--in",
        dest="inputs",
        nargs="+",
        type=Path,
        default=[RESULTS],
        metavar="DIR_OR_FILE",
        help="results documents, or directories of them (default: benchmarks/results)",
    )
    parser.add_argument("--out", type=Path, default=IMAGES, help="default: docs/images")
    parser.add_argument("--format", choices=FORMATS, default="png")
    args = parser.parse_args(argv)
    try:
        results = [load(path) for path in inputs(args.inputs)]
        drawn = draw_all(results, args.format)
        write_all(drawn, args.out)
    except InputError as exc:
        print(f"benchmarks.plots: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"benchmarks.plots: error: cannot write {args.out}: {exc}", file=sys.stderr)
        return 1
    for name, data in drawn.items():
        print(f"{args.out / name}  {len(data) / 1024:,.0f} KiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
