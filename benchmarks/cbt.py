"""Day 2 of a volume with changed-block tracking: a full read against `--changed-ranges`, on the
same image and the same changes, in one run.

    python -m benchmarks.cbt [--size 4GiB] [--changed 1] [--extents 16] [--verify 0] [--json]

Day 1: a sample image of --size (mover.tools.sampledata, seed 11, the realistic mix that the other
benchmarks use) is backed up in full into a fresh local repository. Then --changed percent of it
is rewritten with new sample data in --extents extents at seeded random offsets, and the
repository is copied, so that both day-2 backups start from the same repository:

- full: run_backup reads, chunks and hashes the whole image (what a backup without a change list
  does: deduplication keeps it from storing the unchanged chunks, not from reading them);
- changed: run_backup with the change list (mover.pipeline.changed): reads the changed extents plus
  the context the chunker needs to meet the parent's cuts again, takes the rest from the parent.

Reported: bytes read by each (and the changed run's share of the image), wall seconds of each,
and whether the two trees are equal (they must be: same root). The image is in the page cache
for both runs (it was just written): the wall ratio shows the CPU saved; on a real device, where
the full read is bound by the device, the bytes-read ratio is the one to expect.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.backup_bench import write_image
from mover.chunking import DEFAULT_PARAMS
from mover.crypto import KdfParams
from mover.objects.repository import RepoConfig, Repository
from mover.pipeline.backup import run_backup
from mover.pipeline.changed import ChangedRanges
from mover.pipeline.ranges import read_ranges
from mover.storage.local import LocalBackend
from mover.tools.sampledata import BLOCK, SampleData
from mover.units import format_size, parse_size

PASSWORD = b"cbt-bench"


def change(image: Path, size: int, percent: float, extents: int) -> list[tuple[int, int]]:
    """Rewrite `percent` of the image in `extents` extents of equal length at seeded random,
    non-overlapping offsets with new sample data; the (offset, length) written, ascending."""
    total = max(extents, int(size * percent / 100))
    length = total // extents
    slots = size // (2 * length)  # an extent in each chosen slot: they never touch
    rng = random.Random("cbt day 2")
    new = SampleData(seed=12)
    ranges = []
    with open(image, "r+b") as f:
        for slot in sorted(rng.sample(range(slots), min(extents, slots))):
            offset = slot * 2 * length + rng.randrange(length)  # aligned to nothing
            skip = offset % BLOCK
            data = b"".join(new.blocks(skip + length))[skip:]
            f.seek(offset)
            f.write(data)
            ranges.append((offset, length))
        f.flush()
        os.fsync(f.fileno())
    return ranges


def timed_backup(repo: Repository, image: Path, **kwargs: Any) -> tuple[dict[str, Any], float]:
    with open(image, "rb", buffering=0) as f:
        started = time.perf_counter()
        snapshot = run_backup(repo, f, "volume", checkpoint_interval=None, **kwargs)
        seconds = time.perf_counter() - started
    return {"tree": snapshot.tree, **snapshot.stats}, seconds


def run(size: int, percent: float, extents: int, verify: float, work: Path) -> dict[str, Any]:
    image = work / "volume.img"
    write_image(image, size)
    config = RepoConfig(DEFAULT_PARAMS)
    repo = Repository.init(LocalBackend(work / "full"), PASSWORD, config, KdfParams(8192, 1, 1))
    with open(image, "rb", buffering=0) as f:
        parent = run_backup(repo, f, "volume", checkpoint_interval=None)
    shutil.copytree(work / "full", work / "changed")
    ranges = change(image, size, percent, extents)
    listing = work / "changed.txt"
    listing.write_text("".join(f"{o} {n}\n" for o, n in ranges))

    full, full_s = timed_backup(repo, image)
    other = Repository.open(LocalBackend(work / "changed"), PASSWORD)
    with read_ranges(str(listing), size, "--changed-ranges") as listed:
        changed, changed_s = timed_backup(
            other, image, changed=ChangedRanges(parent, listed, verify)
        )
    return {
        "size": size,
        "changed_percent": percent,
        "changed_bytes": sum(n for _, n in ranges),
        "extents": len(ranges),
        "verify_percent": verify,
        "full": {"bytes_read": full["bytes_read"], "seconds": round(full_s, 3)},
        "changed": {
            "bytes_read": changed["bytes_read"],
            "parent_bytes": changed["parent_bytes"],
            "verify_bytes": changed["verify_bytes"],
            "seconds": round(changed_s, 3),
        },
        "read_percent": round(100 * changed["bytes_read"] / size, 3),
        "speedup": round(full_s / changed_s, 1) if changed_s else None,
        "trees_equal": full["tree"] == changed["tree"],
    }


def markdown(r: dict[str, Any]) -> str:
    full, changed = r["full"], r["changed"]
    lines = [
        f"day 2 of a {format_size(r['size'])} image, {r['changed_percent']}% changed in "
        f"{r['extents']} extents ({format_size(r['changed_bytes'])})",
        "",
        "| day 2 | bytes read | share of the image | wall s |",
        "|---|---:|---:|---:|",
        f"| full read | {format_size(full['bytes_read'])} | "
        f"{100 * full['bytes_read'] / r['size']:.1f}% | {full['seconds']:.2f} |",
        f"| --changed-ranges | {format_size(changed['bytes_read'])} | "
        f"{r['read_percent']:.2f}% | {changed['seconds']:.2f} |",
        "",
        f"trees equal: {'yes' if r['trees_equal'] else 'NO'}; wall: {r['speedup']}x faster",
    ]
    if r["verify_percent"]:
        verified = format_size(changed["verify_bytes"])
        lines.append(f"--verify-unchanged {r['verify_percent']}: {verified} re-read and compared")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="4GiB", help="the image's size [4GiB]")
    parser.add_argument("--changed", type=float, default=1.0, help="percent changed [1]")
    parser.add_argument("--extents", type=int, default=16, help="in this many extents [16]")
    parser.add_argument(
        "--verify", type=float, default=0.0, help="--verify-unchanged PERCENT for the changed run"
    )
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args(argv)
    size = parse_size(args.size, "--size")
    with tempfile.TemporaryDirectory(dir=os.environ.get("MOVER_TMPDIR")) as work:
        result = run(size, args.changed, args.extents, args.verify, Path(work))
    print(json.dumps(result, indent=2) if args.json else markdown(result))
    return 0 if result["trees_equal"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
