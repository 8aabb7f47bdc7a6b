"""Damaged packs: `check` finds them and names exactly the snapshots they hurt; the other
snapshot still restores bit-exact; restoring a damaged one fails with one line."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tests.integration.conftest import (
    MiB,
    assert_one_error_line,
    assert_same_file,
    backup,
    init_repo,
    mover,
    ok,
    pack_files,
    restore,
    stderr_lines,
    write_image,
)


def flip_byte(path: Path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        (value,) = f.read(1)
        f.seek(offset)
        f.write(bytes([value ^ 0x40]))


def test_damaged_packs_are_found_and_attributed(image: Path, tmp_path: Path) -> None:
    repo = init_repo(tmp_path / "repo", "--pack-size", "1MiB")
    a = backup(repo, image)
    packs_a = pack_files(repo)
    image_b = write_image(tmp_path / "b.img", seed=3, size=24 * MiB)
    b = backup(repo, image_b)
    # B shares no chunk with A (other seed), so the packs B's backup wrote hold only B's data.
    assert b["stats"]["reused_bytes"] == 0
    packs_b = sorted(pack_files(repo) - packs_a, key=lambda p: (-p.stat().st_size, p.name))
    assert len(packs_b) >= 3, packs_b
    assert packs_a <= pack_files(repo)
    ok(mover("check", "--repo", repo, "--read-data"))

    # One flipped bit-pattern in the middle of B's largest pack (inside a data blob).
    flipped = packs_b[0]
    flip_byte(flipped, flipped.stat().st_size // 3)

    proc = mover("check", "--repo", repo, "--read-data")
    assert proc.returncode == 1
    lines = stderr_lines(proc)
    assert lines[-1].startswith("mover: error: check found")
    assert b["short_id"] in lines[-1] and a["short_id"] not in lines[-1], lines[-1]
    assert any(flipped.name[:16] in line for line in lines[:-1]), lines
    assert proc.stdout == b""

    report = mover("check", "--repo", repo, "--read-data", "--json")
    assert report.returncode == 1
    body = json.loads(report.stdout)
    assert body["ok"] is False
    assert body["damaged_snapshots"] == [b["id"]]
    assert len(stderr_lines(report)) == 1

    # Plain check reads no data: a flipped byte is invisible to it (pack sizes are intact).
    ok(mover("check", "--repo", repo))

    out_a = tmp_path / "a.out"
    restore(repo, a["id"], out_a)
    assert_same_file(image, out_a)

    proc = mover("restore", "--repo", repo, b["id"], tmp_path / "b.out")
    assert_one_error_line(proc, exit_code=1)

    # Truncate another of B's packs: plain check (sizes only) now fails and names B.
    truncated = packs_b[1]
    os.truncate(truncated, truncated.stat().st_size // 2)
    proc = mover("check", "--repo", repo)
    assert proc.returncode == 1
    lines = stderr_lines(proc)
    assert lines[-1].startswith("mover: error: check found")
    assert b["short_id"] in lines[-1] and a["short_id"] not in lines[-1], lines[-1]
    assert any(truncated.name[:16] in line and "truncated" in line for line in lines), lines
    assert not any(flipped.name[:16] in line for line in lines), "plain check read data"

    # A is still whole, and check --read-data still names only B.
    out_a.unlink()
    restore(repo, a["id"], out_a)
    assert_same_file(image, out_a)
    lines = stderr_lines(mover("check", "--repo", repo, "--read-data"))
    assert b["short_id"] in lines[-1] and a["short_id"] not in lines[-1], lines[-1]
    assert any(flipped.name[:16] in line for line in lines[:-1])
    assert any(truncated.name[:16] in line for line in lines[:-1])
