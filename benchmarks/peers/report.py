"""Tables and ratios from a results dict (the --json document); also a Markdown rendering.

    python -m benchmarks.peers.report out.json      # print the Markdown tables of a saved run

Ratios compare mover with each peer on the same step of the same dataset:
    speed = peer wall / mover wall  (= mover MB/s / peer MB/s; > 1: mover is faster)
    cpu   = mover CPU s / peer CPU s  (< 1: mover uses less CPU)
    bytes = mover repo bytes added / peer repo bytes added  (< 1: mover stores less)
"""

from __future__ import annotations

import json
import sys
from typing import Any

from benchmarks.peers.measure import CHANGED_STEP, STEPS

Report = dict[str, Any]
MIB = 2**20


def ratios(runs: dict[str, Any], peers: list[str]) -> dict[str, dict[str, dict[str, float | None]]]:
    """{peer: {step: {"speed", "cpu", "bytes"}}} for every step both mover and the peer ran."""
    mover = {s["name"]: s for s in runs.get("mover", {}).get("steps", [])}
    out: dict[str, dict[str, dict[str, float | None]]] = {}
    for peer in peers:
        theirs = {s["name"]: s for s in runs.get(peer, {}).get("steps", [])}
        table: dict[str, dict[str, float | None]] = {}
        # mover's changed-blocks day 2 against the peer's (full) day 2: the same data stored.
        pairs = [(step, step) for step in STEPS] + [(CHANGED_STEP, "backup day 2")]
        for step, their_step in pairs:
            if step not in mover or their_step not in theirs:
                continue
            m, p = mover[step], theirs[their_step]
            table[step] = {
                "speed": p["wall_s"] / m["wall_s"] if m["wall_s"] else None,
                "cpu": m["cpu_s"] / p["cpu_s"] if p["cpu_s"] else None,
                "bytes": m["repo_added"] / p["repo_added"] if p["repo_added"] > 0 else None,
            }
        out[peer] = table
    return out


def _ratio(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:.2f}x" if x >= 0.1 else f"{x:.3f}x"


def _size(n: float) -> str:
    """Bytes in MiB, or KiB below 1 MiB (a snapshot's metadata, an index)."""
    if n == 0:
        return "0"
    if abs(n) < MIB:
        return f"{n / 1024:,.1f} KiB"
    value = n / MIB
    return f"{value:,.1f} MiB" if abs(value) < 100 else f"{value:,.0f} MiB"


def step_rows(dataset: dict[str, Any], labels: dict[str, str]) -> list[list[str]]:
    rows = []
    for step in (*STEPS, CHANGED_STEP):
        first = True
        for key, run in dataset["runs"].items():
            found = next((s for s in run["steps"] if s["name"] == step), None)
            if found is None and step == CHANGED_STEP:
                continue  # mover's only, on volume images
            if found is None:
                cells = ["(failed)" if run.get("error") else "(not run)"] + [""] * 6
            else:
                rate = found["mb_per_s"]
                cells = [
                    f"{found['wall_s']:.2f}",
                    f"{rate:,.0f}" if rate else "-",
                    f"{found['cpu_s']:.2f}",
                    f"{found['cpu_s'] / found['wall_s']:.2f}" if found["wall_s"] else "-",
                    f"{found['max_rss_mib']:,.0f}",
                    _size(found["repo_added"]),
                ]
                if step == "restore day 2":
                    cells.append("yes" if run.get("restore_verified") else "NO")
                else:
                    cells.append("")
            rows.append([step if first else "", labels[key], *cells])
            first = False
    return rows


STEP_HEADER = ["step", "tool", "wall s", "MB/s", "CPU s", "CPU/wall", "peak RSS MiB"]
STEP_HEADER += ["repo +", "bit-exact"]


def ratio_rows(
    dataset: dict[str, Any], labels: dict[str, str]
) -> tuple[list[str], list[list[str]]]:
    peers = list(dataset["ratios"])
    header = ["step"]
    for peer in peers:
        header += [f"speed vs {labels[peer]}", f"CPU vs {labels[peer]}", f"bytes vs {labels[peer]}"]
    rows = []
    steps = [
        *STEPS,
        *([CHANGED_STEP] if any(CHANGED_STEP in r for r in dataset["ratios"].values()) else []),
    ]
    for step in steps:
        row = [step + (" (vs their full day 2)" if step == CHANGED_STEP else "")]
        for peer in peers:
            r = dataset["ratios"][peer].get(step)
            row += [_ratio(r["speed"]), _ratio(r["cpu"]), _ratio(r["bytes"])] if r else ["-"] * 3
        rows.append(row)
    return header, rows


def text_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = []
    for row in [header, *rows]:
        lines.append(
            "  ".join(
                c.ljust(w) if i < 2 else c.rjust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            ).rstrip()
        )
    return "\n".join(lines)


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(c or " " for c in row) + " |" for row in rows]
    return "\n".join(lines)


def summary(report: Report) -> tuple[list[str], list[list[str]]]:
    """One row per dataset and step (init left out): every tool's MB/s, then its repo bytes."""
    labels = labels_of(report)
    keys = list(labels)
    header = ["data", "step", *[f"{labels[k]} MB/s" for k in keys]]
    header += [f"{labels[k]} repo +" for k in keys]
    rows = []
    for dataset in report["datasets"]:
        for step in (*STEPS[1:], CHANGED_STEP):
            found = [
                next((s for s in dataset["runs"][k]["steps"] if s["name"] == step), None)
                for k in keys
            ]
            if not any(found):
                continue
            rates = [f"{s['mb_per_s']:,.0f}" if s and s["mb_per_s"] else "-" for s in found]
            stored = [_size(s["repo_added"]) if s else "-" for s in found]
            rows.append([dataset["name"], step, *rates, *stored])
    return header, rows


def labels_of(report: Report) -> dict[str, str]:
    return {key: tool["label"] for key, tool in report["tools"].items()}


def describe(dataset: dict[str, Any]) -> list[str]:
    lines = [
        f"day 1: {dataset['description']}",
        f"day 2: {dataset['day2_description']}",
        f"built in {dataset['build_s']:.1f} s",
    ]
    lines += [f"NOTE: {note}" for note in dataset.get("notes", [])]
    for key, run in dataset["runs"].items():
        if run.get("error"):
            lines.append(f"FAILED {key}: {run['error']}")
        if run.get("restore_mismatch"):
            lines.append(f"RESTORE MISMATCH {key}: {run['restore_mismatch']}")
    return lines


def print_text(report: Report) -> None:
    labels = labels_of(report)
    for dataset in report["datasets"]:
        print(f"\n=== {dataset['name']} ===")
        for line in describe(dataset):
            print(line)
        print()
        print(text_table(STEP_HEADER, step_rows(dataset, labels)))
        print("\nmover against each peer (speed = peer wall / mover wall; cpu and bytes = mover /")
        print("peer; bytes = repository bytes added):")
        print(text_table(*ratio_rows(dataset, labels)))
    print("\nsummary (MB/s of source; bytes the repository grew by):")
    print(text_table(*summary(report)))
    print("\ntool settings:")
    for tool in report["tools"].values():
        print(f"  {tool['label']}: {tool['settings']}")
    print("versions: " + "; ".join(f"{k} {v}" for k, v in report["versions"].items()))
    print(
        f"total {report['total_s']:.0f} s; peak RSS floor (the parent's own) "
        f"{report['parent_max_rss_mib']:.0f} MiB"
    )


def markdown(report: Report) -> str:
    labels = labels_of(report)
    parts = [markdown_table(*summary(report))]
    for dataset in report["datasets"]:
        parts.append(f"**{dataset['name']}**")
        parts.append("\n".join(f"- {line}" for line in describe(dataset)))
        parts.append(markdown_table(STEP_HEADER, step_rows(dataset, labels)))
        parts.append(markdown_table(*ratio_rows(dataset, labels)))
    return "\n\n".join(parts) + "\n"


def main() -> None:
    with open(sys.argv[1]) as f:
        print(markdown(json.load(f)), end="")


if __name__ == "__main__":
    main()
