"""End-to-end backup and restore through the real CLI, on a local repository.

Generates a volume image of --size bytes with the realistic mix (mover.tools.sampledata, seed 11), a
"day 2" copy with ~2% rewritten in scattered 64 KiB regions (new data from seed 12, same size,
everything else in place), then runs `python -m mover` as child processes:

    init --kdf-memory 8MiB, backup day 1, backup day 2, restore day 2 (compared bit for bit
    against the day-2 image), backup day 2 again (nothing changed)

and reports, per step, wall seconds, source MB/s (MB = 1e6), the child's user+sys CPU seconds
and peak RSS (os.wait4), and the bytes the repository grew by. Linux carries a parent's peak RSS
into its children's ru_maxrss, so images are made and compared in a helper process and this
one stays small (its own peak is printed: the floor under every RSS figure). Images are fsynced
before the first step, so they are read from the page cache but not written back during the
steps; mover fsyncs what it writes (packs, index, snapshot, the restored file).

    python -m benchmarks.backup_bench [--size 1GiB] [--json out.json] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import resource
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchmarks.child import run_child, tree_bytes
from mover.cli.sizes import parse_size
from mover.tools.sampledata import BLOCK, SampleData

REGION = 64 << 10
CHANGED_SHARE = 0.02
COMPARE_SIZE = 8 << 20
PASSWORD = "backup-bench"


@dataclass
class Step:
    name: str
    source_bytes: int
    wall_s: float
    user_s: float
    sys_s: float
    max_rss_mib: float
    repo_added: int
    output: Any  # the command's --json output

    @property
    def cpu_s(self) -> float:
        return self.user_s + self.sys_s

    @property
    def mb_per_s(self) -> float | None:
        return self.source_bytes / self.wall_s / 1e6 if self.source_bytes else None


def write_image(path: Path, size: int) -> None:
    with open(path, "wb") as f:
        for block in SampleData(seed=11).blocks(size):
            f.write(block)
        f.flush()
        os.fsync(f.fileno())


def make_day2(image: Path, day2: Path, size: int) -> tuple[int, int]:
    """Copy `image` and rewrite ~2% of it in place; (regions rewritten, bytes that changed)."""
    shutil.copyfile(image, day2)
    slots = size // REGION
    count = max(1, round(size * CHANGED_SHARE / REGION))
    regions = sorted(random.Random("day2").sample(range(slots), min(count, slots)))
    new = SampleData(seed=12)
    changed = 0
    cached: tuple[int, bytes] = (-1, b"")
    with open(day2, "r+b") as f:
        for slot in regions:
            offset = slot * REGION
            index = offset // BLOCK
            if cached[0] != index:
                cached = (index, new.block(index))
            data = cached[1][offset % BLOCK : offset % BLOCK + REGION]
            f.seek(offset)
            old = f.read(REGION)
            changed += sum(a != b for a, b in zip(old, data, strict=True))
            f.seek(offset)
            f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return len(regions), changed


def run_step(name: str, args: list[str], repo: Path, source_bytes: int, logs: Path) -> Step:
    env = {**os.environ, "MOVER_PASSWORD": PASSWORD}
    before = tree_bytes(repo) if repo.exists() else 0
    out_path, err_path = logs / f"{name}.out", logs / f"{name}.err"
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        child = run_child(
            [sys.executable, "-m", "mover", *args, "--repo", str(repo), "--json"], out, err, env
        )
    if child.returncode != 0:
        sys.exit(
            f"step {name!r} failed: `mover {' '.join(args)}` exited {child.returncode}\n"
            f"{err_path.read_text(errors='replace')}"
        )
    text = out_path.read_text()
    return Step(
        name=name,
        source_bytes=source_bytes,
        wall_s=child.wall_s,
        user_s=child.user_s,
        sys_s=child.sys_s,
        max_rss_mib=child.max_rss_kib / 1024,
        repo_added=tree_bytes(repo) - before,
        output=json.loads(text) if text.strip() else None,
    )


def first_difference(a: Path, b: Path) -> int | None:
    """Offset of the first byte where the files differ (or one ends), None if identical."""
    offset = 0
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            da, db = fa.read(COMPARE_SIZE), fb.read(COMPARE_SIZE)
            if da != db:
                return offset + next(
                    (i for i, (x, y) in enumerate(zip(da, db, strict=False)) if x != y),
                    min(len(da), len(db)),
                )
            if not da:
                return None
            offset += len(da)


def snapshot_id(step: Step) -> str:
    assert isinstance(step.output, dict), step.output
    return str(step.output["id"])


def prepare(image: Path, day2: Path, size: int) -> tuple[int, int, float, float]:
    """Write both images (in the helper process); regions, bytes changed and the seconds each."""
    started = time.perf_counter()
    write_image(image, size)
    generated = time.perf_counter()
    regions, changed = make_day2(image, day2, size)
    return regions, changed, generated - started, time.perf_counter() - generated


def run(size: int, work: Path) -> tuple[list[Step], dict[str, float]]:
    image, day2, restored = work / "day1.img", work / "day2.img", work / "restored.img"
    repo, logs = work / "repo", work / "logs"
    logs.mkdir()
    started = time.perf_counter()
    # Linux carries a process's peak RSS across (v)fork + exec into the child's ru_maxrss, so the
    # bulky work runs in a helper and this process, the children's parent, stays small.
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=spawn) as helper:
        regions, changed, generate_s, day2_s = helper.submit(prepare, image, day2, size).result()
        print(
            f"images: {size / 2**20:,.0f} MiB in {generate_s:.1f} s; day 2: {regions} regions "
            f"of 64 KiB rewritten, {changed / 2**20:.2f} MiB of bytes differ ({day2_s:.1f} s)",
            flush=True,
        )
        steps = [run_step("init", ["init", "--kdf-memory", "8MiB"], repo, 0, logs)]
        for name, source in (("backup day 1", image), ("backup day 2", day2)):
            steps.append(run_step(name, ["backup", str(source)], repo, size, logs))
            print(f"{name}: {steps[-1].wall_s:.1f} s", flush=True)
        second = snapshot_id(steps[-1])
        steps.append(
            run_step("restore day 2", ["restore", second, str(restored)], repo, size, logs)
        )
        print(f"restore day 2: {steps[-1].wall_s:.1f} s", flush=True)
        compare_start = time.perf_counter()
        diff = helper.submit(first_difference, day2, restored).result()
        if diff is not None:
            sys.exit(f"RESTORE MISMATCH: {restored} differs from {day2} at byte {diff}")
        compared = time.perf_counter() - compare_start
        print(f"restore verified bit-exact ({compared:.1f} s to compare)", flush=True)
        restored.unlink()
        steps.append(run_step("backup unchanged", ["backup", str(day2)], repo, size, logs))
    timings = {
        "generate_s": generate_s,
        "day2_s": day2_s,
        "compare_s": compared,
        "total_s": time.perf_counter() - started,
        "regions_rewritten": regions,
        "bytes_differing": changed,
        # The floor under every peak RSS figure (see run()).
        "parent_max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    return steps, timings


def print_table(steps: list[Step]) -> None:
    header = ["step", "wall s", "MB/s", "CPU s", "(sys)", "CPU/wall", "peak RSS MiB", "repo +MiB"]
    rows = [
        [
            s.name,
            f"{s.wall_s:.2f}",
            f"{s.mb_per_s:,.0f}" if s.mb_per_s else "-",
            f"{s.cpu_s:.2f}",
            f"{s.sys_s:.2f}",
            f"{s.cpu_s / s.wall_s:.2f}",
            f"{s.max_rss_mib:,.0f}",
            f"{s.repo_added / 2**20:,.1f}",
        ]
        for s in steps
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print(
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )
    for s in steps:
        stats = s.output.get("stats") if isinstance(s.output, dict) else None
        if isinstance(stats, dict):
            parts = ", ".join(
                f"{k} {stats[k] / 2**20:,.1f} MiB"
                for k in ("new_bytes", "reused_bytes", "zero_bytes", "stored_bytes")
                if k in stats
            )
            print(f"{s.name}: {parts}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="1GiB", help="image size (default 1GiB)")
    parser.add_argument("--json", dest="json_path", help="also write the results as JSON here")
    parser.add_argument("--workdir", help="where images and the repository go (default: /tmp)")
    args = parser.parse_args()
    size = parse_size(args.size, "--size", minimum=REGION)
    work = Path(tempfile.mkdtemp(prefix="backup_bench-", dir=args.workdir))
    try:
        steps, timings = run(size, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\n{size / 2**20:,.0f} MiB image, {os.cpu_count()} CPUs, local repository")
    print_table(steps)
    print(
        f"total {timings['total_s']:.0f} s (generating images {timings['generate_s']:.0f} s); "
        f"peak RSS floor (this process) {timings['parent_max_rss_mib']:.0f} MiB"
    )
    if args.json_path:
        body = {
            "size": size,
            "cpus": os.cpu_count(),
            **timings,
            "steps": [{**asdict(s), "cpu_s": s.cpu_s, "mb_per_s": s.mb_per_s} for s in steps],
        }
        with open(args.json_path, "w") as out:
            json.dump(body, out, indent=2)


if __name__ == "__main__":
    main()
