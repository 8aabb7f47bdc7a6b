"""mover, restic and borg side by side on the same data, in one run.

    python -m benchmarks.peers [--quick | --large] [--json out.json] [--workdir DIR]
                               [--datasets fs,db,random] [--seed N] [--keep] [--mover-rev REV]

For each dataset (see datasets.py) and each tool (mover; restic; borg with lz4 and with zstd,3:
see tools.py) on a fresh repository under the work directory: init, backup day 1, backup day 2,
restore the day-2 snapshot to a file (compared bit for bit with the day-2 source: a mismatch
fails the run), backup day 2 again (unchanged); for mover, where both days are images of one
size, day 2 once more with `--changed-ranges` (the 4 KiB blocks that differ from day 1) on a
copy of its repository as day 1 left it (_ChangedDay2). Every step is measured as child processes
(measure.py): wall seconds, MB/s of source (MB = 10^6), user+sys CPU seconds, peak RSS, and the
bytes the repository grew by. Before each step, as much memory as the step reads is freed
(make_room), so that no tool pays the page-cache reclaim another tool's files caused. Missing
tools are installed from Debian packages (apt-get).

Modes: --quick (a few MiB a dataset, for CI, ~40 s), default (~1 GiB a dataset, 3-4 minutes on
2 cores), --large (>= 16 GiB in all).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import resource
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from benchmarks.peers.datasets import MODES, Dataset, build, write_changed_ranges
from benchmarks.peers.measure import CHANGED_STEP, Step, StepFailed, compare, run_step
from benchmarks.peers.report import print_text, ratios
from benchmarks.peers.tools import (
    TOOLS,
    Mover,
    Tool,
    ensure_installed,
    mover_fingerprint,
    mover_source,
    pin_mover,
    versions,
)

DATASETS = ("fs", "db", "random")
ROOM_CAP = 2 << 30  # most a step is given room for (see make_room)


def make_room(work: Path, nbytes: int) -> None:
    """Free at least `nbytes` of memory for the next step by writing a scratch file that size
    and deleting it (its page-cache pages are then free, not cached data to be reclaimed).

    The datasets and repositories fill the page cache, so a step that writes (a restore, a
    first backup) otherwise pays the kernel's reclaim of other files' pages as its own system
    time, and how much depends on what the step before it freed: measured, the same 1.1 GiB
    restore took 3.2 s (3.2 s of it sys) with 1.4 GiB free and 1.4 s right after a file that
    size was deleted. Every tool's step gets the same room, so none pays for another's."""
    scratch = work / "room.scratch"
    block = bytes(4 << 20)
    with open(scratch, "wb") as f:
        for _ in range(0, min(nbytes, ROOM_CAP), len(block)):
            f.write(block)
    scratch.unlink()


def run_tool(tool: Tool, ds: Dataset, logs: Path, restored: Path) -> dict[str, Any]:
    """The five steps on one fresh repository; a failed step ends this tool's run."""
    steps: list[Step] = []
    result: dict[str, Any] = {"restore_verified": False, "restore_mismatch": None, "error": None}

    def step(name: str, commands: list[Any], source_bytes: int, repo: Path | None = None) -> Step:
        make_room(restored.parent, source_bytes)
        done = run_step(name, commands, repo or tool.repo, source_bytes, logs, tool.parse)
        steps.append(done)
        rate = f", {done.mb_per_s:,.0f} MB/s" if done.mb_per_s else ""
        print(
            f"  {ds.name:6} {tool.label:11} {name:16} {done.wall_s:7.2f} s{rate}, "
            f"+{done.repo_added / 2**20:,.1f} MiB",
            flush=True,
        )
        return done

    try:
        step("init", tool.init(), 0)
        step("backup day 1", tool.backup(ds.day1, ds.stream_name, "day1"), ds.day1_bytes)
        changed = (
            _ChangedDay2(tool, ds, logs)
            if isinstance(tool, Mover) and ds.day1_bytes == ds.day2_bytes
            else None
        )
        second = step("backup day 2", tool.backup(ds.day2, ds.stream_name, "day2"), ds.day2_bytes)
        restored.unlink(missing_ok=True)
        ref = tool.snapshot_ref(second, "day2")
        step("restore day 2", tool.restore(ref, ds.stream_name, restored), ds.day2_bytes)
        started = time.perf_counter()
        mismatch = compare(ds.day2, restored)
        result["compare_s"] = time.perf_counter() - started
        result["restore_verified"] = mismatch is None
        result["restore_mismatch"] = mismatch
        if mismatch is not None:
            print(f"  RESTORE MISMATCH ({tool.label}, {ds.name}): {mismatch}", flush=True)
        restored.unlink()
        step("backup unchanged", tool.backup(ds.day2, ds.stream_name, "day2-again"), ds.day2_bytes)
        if changed is not None:
            changed.point_at_day2()
            step(CHANGED_STEP, changed.commands, ds.day2_bytes, changed.copy)
    except StepFailed as exc:
        result["error"] = str(exc)
        print(f"  FAILED ({tool.label}, {ds.name}): {exc}", flush=True)
    result["steps"] = [s.as_dict() for s in steps]
    return result


class _ChangedDay2:
    """mover's changed-blocks day 2, on a copy of its repository as day 1 left it. mover names a
    snapshot by its source's path, and a change list is relative to a parent of the same
    source, so both days are seen at one path: a hard link to day 1 is backed up into the copy
    (unmeasured; every chunk is there already), then pointed at day 2 for the measured step."""

    def __init__(self, tool: Mover, ds: Dataset, logs: Path) -> None:
        self.copy = tool.repo.with_name(tool.repo.name + "-changed")
        shutil.copytree(tool.repo, self.copy)
        self.volume = ds.day1.with_name(f"{ds.name}-volume.img")
        self.volume.unlink(missing_ok=True)
        os.link(ds.day1, self.volume)
        self.day2 = ds.day2
        (plain,) = tool.backup_changed(self.copy, self.volume, None, None)
        proc = subprocess.run(
            plain.argv, env=plain.env, cwd=plain.cwd, capture_output=True, text=True, check=True
        )
        ranges = logs / f"{ds.name}-changed-ranges.txt"
        write_changed_ranges(ds.day1, ds.day2, ranges)
        self.commands = tool.backup_changed(
            self.copy, self.volume, ranges, json.loads(proc.stdout)["id"]
        )

    def point_at_day2(self) -> None:
        link = self.volume.with_name(self.volume.name + ".new")
        link.unlink(missing_ok=True)
        os.link(self.day2, link)
        os.replace(link, self.volume)


def machine() -> dict[str, Any]:
    model = "?"
    try:
        with open("/proc/cpuinfo") as f:
            model = next(ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "kernel": platform.release(),
        "memory_gib": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30,
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.peers", description=(__doc__ or "").splitlines()[0]
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="a few MiB a dataset (CI)")
    size.add_argument("--large", action="store_true", help=">= 16 GiB of data in all")
    parser.add_argument("--json", dest="json_path", help="also write every figure as JSON here")
    parser.add_argument("--workdir", help="where data and repositories go (default: /tmp)")
    parser.add_argument("--datasets", default=",".join(DATASETS), help="default: fs,db,random")
    parser.add_argument("--seed", type=int, default=1, help="dataset seed (default 1)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument(
        "--mover-rev",
        help="run mover as of this commit (git archive) rather than the working tree",
    )
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.datasets.split(",") if n.strip()]
    unknown = [n for n in names if n not in DATASETS]
    if unknown or not names:
        parser.error(f"--datasets: unknown {', '.join(unknown) or '(none)'}; use {DATASETS}")
    args.names = list(dict.fromkeys(names))
    args.mode = "quick" if args.quick else "large" if args.large else "default"
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    installed = ensure_installed(args.names)
    if args.workdir:
        Path(args.workdir).mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="peers-", dir=args.workdir))
    os.chmod(work, 0o711)  # the postgres user must reach its cluster directory
    pinned = pin_mover(args.mover_rev, work / "mover-src") if args.mover_rev else None
    found = versions(args.names, pinned)
    mover_before = mover_fingerprint()
    print(f"mode {args.mode}, datasets {', '.join(args.names)}, seed {args.seed}")
    print("versions: " + "; ".join(f"{k} {v}" for k, v in found.items()), flush=True)
    report: dict[str, Any] = {
        "command": shlex_command(argv),
        "mode": args.mode,
        "seed": args.seed,
        "sizes": vars(MODES[args.mode]),
        "machine": machine(),
        "versions": found,
        "installed": installed,
        "tools": {t.key: {"label": t.label, "settings": t.settings} for t in TOOLS},
        "datasets": [],
        "warnings": [],
    }
    failures: list[str] = []
    ok = False
    try:
        # Datasets are built in a helper process: Linux carries a parent's peak RSS into its
        # children's ru_maxrss, so this process, the parent of every measured one, stays small.
        spawn = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(1, mp_context=spawn) as helper:
            for name in args.names:
                print(f"\nbuilding {name} ({args.mode})...", flush=True)
                ds = helper.submit(build, name, work / "data" / name, args.mode, args.seed).result()
                print(f"  day 1: {ds.description}\n  day 2: {ds.day2_description}", flush=True)
                for note in ds.notes:
                    print(f"  NOTE: {note}", flush=True)
                runs: dict[str, Any] = {}
                for cls in TOOLS:
                    slot = f"{name}-{cls.key}"
                    home = work / "home" / slot
                    home.mkdir(parents=True)
                    tool = cls(work / "repos" / slot, home)
                    runs[cls.key] = run_tool(tool, ds, work / "logs" / slot, work / "restored")
                    shutil.rmtree(tool.repo, ignore_errors=True)
                    shutil.rmtree(home, ignore_errors=True)
                    if runs[cls.key]["error"]:
                        failures.append(f"{name} / {cls.label}: step failed")
                    elif not runs[cls.key]["restore_verified"]:
                        failures.append(f"{name} / {cls.label}: restore NOT bit-exact")
                shutil.rmtree(work / "data" / name)
                entry = {k: v for k, v in vars(ds).items() if k not in ("day1", "day2", "notes")}
                entry["notes"] = ds.notes
                entry["runs"] = runs
                entry["ratios"] = ratios(runs, [t.key for t in TOOLS if t.key != "mover"])
                report["datasets"].append(entry)
        ok = not failures
    finally:
        if args.keep:
            print(f"work directory kept: {work}")
        elif ok:
            shutil.rmtree(work, ignore_errors=True)
        else:
            for sub in ("data", "repos", "home"):
                shutil.rmtree(work / sub, ignore_errors=True)
            (work / "restored").unlink(missing_ok=True)
            print(f"logs kept in {work}/logs", file=sys.stderr)
    if not pinned and mover_fingerprint() != mover_before:
        report["warnings"].append(
            f"mover's source changed during the run (now: {mover_source()}): its figures may "
            "mix two versions"
        )
    report["ok"] = ok
    report["failures"] = failures
    report["total_s"] = time.perf_counter() - started
    report["parent_max_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print_text(report)
    if args.json_path:
        with open(args.json_path, "w") as out:
            json.dump(report, out, indent=2, default=str)
        print(f"JSON: {args.json_path}")
    for warning in report["warnings"]:
        print(f"WARNING: {warning}", file=sys.stderr)
    if failures:
        print("\nFAILED:\n  " + "\n  ".join(failures), file=sys.stderr)
        return 1
    return 0


def shlex_command(argv: list[str] | None) -> str:
    args = sys.argv[1:] if argv is None else argv
    return shlex.join(["python", "-m", "benchmarks.peers", *args])


if __name__ == "__main__":
    sys.exit(main())
