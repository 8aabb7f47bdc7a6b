"""`restore --partial`: past damage (a flipped byte, a deleted or truncated pack, an unreadable
tree node) everything readable is restored, the unreadable ranges are zeros and listed in
TARGET.badranges.json, and the run exits 1 with one line. The expected ranges are worked out
independently, from the repository's index and tree through the API."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mover.content.index import Location
from mover.content.pack import KIND_TREE, pack_name
from mover.objects.repository import Repository
from mover.objects.tree import walk
from mover.storage.local import LocalBackend
from tests.integration.conftest import (
    PASSWORD,
    MiB,
    assert_one_error_line,
    assert_same_file,
    backup,
    init_repo,
    mover,
    ok,
    pack_files,
    stderr_lines,
    write_image,
)
from tests.integration.test_damage import flip_byte

IMAGE_SIZE = 16 * MiB


@dataclass(frozen=True)
class Placed:
    """A chunk extent of the snapshot and where its blob is stored."""

    offset: int
    length: int
    chunk_id: bytes
    location: Location


@dataclass
class Layout:
    size: int
    chunks: list[Placed]
    root: bytes
    root_location: Location


@dataclass
class Setup:
    repo: Path
    image: Path
    snapshot: dict[str, Any]
    layout: Layout


def layout_of(repo: Path, snapshot_id: str) -> Layout:
    repository = Repository.open(LocalBackend(repo), PASSWORD.encode())
    snapshot = repository.find_snapshot(snapshot_id)
    root = bytes.fromhex(snapshot.tree)
    chunks = []
    for extent in walk(repository.read_blob, root):
        if extent.chunk_id is not None:
            location = repository.index.get(extent.chunk_id)
            assert location is not None
            chunks.append(Placed(extent.offset, extent.length, extent.chunk_id, location))
    root_location = repository.index.get(root)
    assert root_location is not None and root_location.kind == KIND_TREE
    return Layout(snapshot.size, chunks, root, root_location)


def pack_path(repo: Path, location: Location) -> Path:
    return repo / pack_name(location.pack_id)


def merged(extents: Iterator[Placed] | list[Placed]) -> list[tuple[int, int]]:
    """(offset, length) of the extents, in order, adjacent ones merged."""
    out: list[tuple[int, int]] = []
    for e in sorted(extents, key=lambda p: p.offset):
        if out and out[-1][0] + out[-1][1] == e.offset:
            out[-1] = (out[-1][0], out[-1][1] + e.length)
        else:
            out.append((e.offset, e.length))
    return out


def assert_partial_file(image: Path, out: Path, ranges: list[tuple[int, int]]) -> None:
    """out is image everywhere except in ranges, which are zeros."""
    original, restored = image.read_bytes(), out.read_bytes()
    assert len(restored) == len(original)
    at = 0
    for offset, length in [*ranges, (len(original), 0)]:
        assert restored[at:offset] == original[at:offset], f"differs in [{at}, {offset})"
        assert restored[offset : offset + length] == bytes(length), f"not zeros at {offset}"
        at = offset + length


def read_bad_ranges(path: Path) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(path.read_text())
    return body


def listed(body: dict[str, Any]) -> list[tuple[int, int]]:
    return [(r["offset"], r["length"]) for r in body["ranges"]]


@pytest.fixture
def setup(tmp_path: Path) -> Setup:
    repo = init_repo(tmp_path / "repo", "--pack-size", "1MiB")
    image = write_image(tmp_path / "image.img", seed=1, size=IMAGE_SIZE)
    snapshot = backup(repo, image)
    layout = layout_of(repo, snapshot["id"])
    assert len({c.location.pack_id for c in layout.chunks}) >= 4, "want several packs"
    assert {pack_path(repo, c.location) for c in layout.chunks} <= pack_files(repo)
    return Setup(repo, image, snapshot, layout)


def data_pack(setup: Setup) -> bytes:
    """A pack in the middle of the volume holding several of its chunks and no tree node of it."""
    chunks = setup.layout.chunks
    for placed in chunks[len(chunks) // 3 :]:
        pack_id = placed.location.pack_id
        if pack_id == setup.layout.root_location.pack_id:
            continue
        if sum(c.location.pack_id == pack_id for c in chunks) >= 2:
            return pack_id
    raise AssertionError("no data pack with two chunks of the snapshot")


def restore_partial(
    setup: Setup, out: Path, *extra: str
) -> tuple[subprocess.CompletedProcess[bytes], str]:
    proc = mover("restore", "--repo", setup.repo, setup.snapshot["id"], out, "--partial", *extra)
    return proc, assert_one_error_line(proc, exit_code=1)


def check_report(
    setup: Setup, out: Path, line: str, report: Path, expected: list[tuple[int, int]]
) -> dict[str, Any]:
    """The one line, the bad-ranges file and the restored file all agree with `expected`."""
    bad_bytes = sum(length for _, length in expected)
    assert f"restored snapshot {setup.snapshot['id'][:8]} to {out}" in line, line
    assert f"{len(expected)} unreadable range" in line and f"{bad_bytes} bytes" in line, line
    assert str(report) in line, line
    body = read_bad_ranges(report)
    assert body["snapshot"] == setup.snapshot["id"]
    assert body["target"] == str(out)
    assert body["size"] == IMAGE_SIZE
    assert listed(body) == expected
    assert body["bad_bytes"] == bad_bytes
    assert all(r["reason"] for r in body["ranges"])
    assert_partial_file(setup.image, out, expected)
    return body


def test_flipped_byte(setup: Setup, tmp_path: Path) -> None:
    chunks = setup.layout.chunks
    victim = chunks[len(chunks) // 2]
    pack = pack_path(setup.repo, victim.location)
    flip_byte(pack, victim.location.offset + victim.location.length // 2)
    expected = merged(c for c in chunks if c.chunk_id == victim.chunk_id)
    assert 0 < sum(n for _, n in expected) < IMAGE_SIZE

    # Without --partial: the first error stops the restore, as before.
    plain = tmp_path / "plain.img"
    proc = mover("restore", "--repo", setup.repo, setup.snapshot["id"], plain)
    line = assert_one_error_line(proc, exit_code=1)
    assert "incomplete" in line and victim.chunk_id.hex()[:16] in line, line
    assert not Path(f"{plain}.badranges.json").exists()

    out = tmp_path / "out.img"
    _, line = restore_partial(setup, out)
    body = check_report(setup, out, line, Path(f"{out}.badranges.json"), expected)
    assert victim.chunk_id.hex()[:16] in body["ranges"][0]["reason"]
    assert "authentication" in body["ranges"][0]["reason"]
    assert not list(tmp_path.glob(".*.tmp")), "a temp file was left behind"

    # --json: the usual report plus the bad ranges on stdout, the one line on stderr.
    again = tmp_path / "again.img"
    proc = mover(
        "restore", "--repo", setup.repo, setup.snapshot["id"], again, "--partial", "--json"
    )
    assert proc.returncode == 1
    (line,) = stderr_lines(proc)
    assert line.startswith("mover: error: restored snapshot"), line
    report = json.loads(proc.stdout)
    assert report["snapshot"] == setup.snapshot["id"]
    assert report["size"] == IMAGE_SIZE
    assert [(r["offset"], r["length"]) for r in report["bad_ranges"]] == expected
    assert report["bad_bytes"] == sum(n for _, n in expected)
    assert report["bytes_written"] + report["hole_bytes"] + report["bad_bytes"] == IMAGE_SIZE
    assert_partial_file(setup.image, again, expected)


def test_deleted_pack(setup: Setup, tmp_path: Path) -> None:
    victim = data_pack(setup)
    pack_path(setup.repo, Location(victim, 0, 0, 0)).unlink()
    expected = merged(c for c in setup.layout.chunks if c.location.pack_id == victim)
    assert 0 < sum(n for _, n in expected) < IMAGE_SIZE

    plain = tmp_path / "plain.img"
    proc = mover("restore", "--repo", setup.repo, setup.snapshot["id"], plain)
    assert "incomplete" in assert_one_error_line(proc, exit_code=1)

    out = tmp_path / "out.img"
    _, line = restore_partial(setup, out)
    body = check_report(setup, out, line, Path(f"{out}.badranges.json"), expected)
    assert all("missing" in r["reason"] for r in body["ranges"]), body["ranges"]


def test_truncated_pack(setup: Setup, tmp_path: Path) -> None:
    victim = data_pack(setup)
    path = pack_path(setup.repo, Location(victim, 0, 0, 0))
    in_pack = [c for c in setup.layout.chunks if c.location.pack_id == victim]
    # Cut inside the last of the snapshot's blobs in this pack that starts past the first one:
    # the blobs before the cut stay readable, those reaching past it are lost.
    cut = max(c.location.offset for c in in_pack) + 1
    os.truncate(path, cut)
    expected = merged(c for c in in_pack if c.location.offset + c.location.length > cut)
    readable = [c for c in in_pack if c.location.offset + c.location.length <= cut]
    assert expected and readable

    out = tmp_path / "out.img"
    _, line = restore_partial(setup, out)
    body = check_report(setup, out, line, Path(f"{out}.badranges.json"), expected)
    assert all("shorter than expected" in r["reason"] for r in body["ranges"]), body["ranges"]


def test_damaged_tree_node(setup: Setup, tmp_path: Path) -> None:
    # A volume this small has one tree node, the root: its damage loses the whole volume.
    root = setup.layout.root_location
    flip_byte(pack_path(setup.repo, root), root.offset + root.length // 2)

    plain = tmp_path / "plain.img"
    proc = mover("restore", "--repo", setup.repo, setup.snapshot["id"], plain)
    assert "incomplete" in assert_one_error_line(proc, exit_code=1)

    out = tmp_path / "out.img"
    _, line = restore_partial(setup, out)
    body = check_report(setup, out, line, Path(f"{out}.badranges.json"), [(0, IMAGE_SIZE)])
    reason = body["ranges"][0]["reason"]
    assert "tree node" in reason and setup.layout.root.hex()[:16] in reason, reason
    assert out.stat().st_size == IMAGE_SIZE
    with open(out, "rb") as f:
        while block := f.read(MiB):
            assert block == bytes(len(block))


def test_no_damage(setup: Setup, tmp_path: Path) -> None:
    out = tmp_path / "out.img"
    proc = ok(
        mover("restore", "--repo", setup.repo, setup.snapshot["id"], out, "--partial", "--json")
    )
    report = json.loads(proc.stdout)
    assert report["bad_bytes"] == 0 and report["bad_ranges"] == []
    assert report["bytes_written"] + report["hole_bytes"] == IMAGE_SIZE
    assert_same_file(setup.image, out)
    assert not Path(f"{out}.badranges.json").exists()
    assert stderr_lines(proc) == []

    plain = tmp_path / "plain.img"
    proc = ok(mover("restore", "--repo", setup.repo, setup.snapshot["id"], plain, "--partial"))
    assert proc.stdout.decode().startswith(f"restored snapshot {setup.snapshot['id'][:8]}")
    assert_same_file(setup.image, plain)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "image.img",
        "out.img",
        "plain.img",
        "repo",
    ]


def test_bad_ranges_path(setup: Setup, tmp_path: Path) -> None:
    victim = data_pack(setup)
    pack_path(setup.repo, Location(victim, 0, 0, 0)).unlink()
    expected = merged(c for c in setup.layout.chunks if c.location.pack_id == victim)

    # --bad-ranges without --partial: a usage error, before anything is written.
    out = tmp_path / "out.img"
    report = tmp_path / "lists" / "damage.json"
    report.parent.mkdir()
    proc = mover("restore", "--repo", setup.repo, setup.snapshot["id"], out, "--bad-ranges", report)
    assert "--partial" in assert_one_error_line(proc, exit_code=2)
    assert not out.exists() and not report.exists()

    # A directory that cannot take the list: a usage error, before anything is written.
    proc = mover(
        "restore",
        "--repo",
        setup.repo,
        setup.snapshot["id"],
        out,
        "--partial",
        "--bad-ranges",
        tmp_path / "nowhere" / "damage.json",
    )
    assert "not writable" in assert_one_error_line(proc, exit_code=2)
    assert not out.exists()

    _, line = restore_partial(setup, out, "--bad-ranges", str(report))
    check_report(setup, out, line, report, expected)
    assert not Path(f"{out}.badranges.json").exists()
    assert sorted(p.name for p in report.parent.iterdir()) == ["damage.json"]


def _loop_available() -> str | None:
    if os.geteuid() != 0 or shutil.which("losetup") is None:
        return "needs root and losetup"
    if not Path("/dev/loop-control").exists():
        return "no /dev/loop-control"
    return None


@pytest.mark.skipif(_loop_available() is not None, reason=str(_loop_available()))
def test_block_device_target(setup: Setup, tmp_path: Path) -> None:
    """On a device the unreadable ranges are written as zeros (it holds old data), and the
    list's path must be given: a device's directory is no place for it."""
    victim = data_pack(setup)
    pack_path(setup.repo, Location(victim, 0, 0, 0)).unlink()
    expected = merged(c for c in setup.layout.chunks if c.location.pack_id == victim)

    backing = tmp_path / "device.img"
    backing.write_bytes(b"\xa5" * IMAGE_SIZE)
    device = subprocess.run(
        ["losetup", "--find", "--show", str(backing)], check=True, capture_output=True, text=True
    ).stdout.strip()
    try:
        proc = mover("restore", "--repo", setup.repo, setup.snapshot["id"], device, "--partial")
        assert "--bad-ranges" in assert_one_error_line(proc, exit_code=2)
        assert backing.read_bytes() == b"\xa5" * IMAGE_SIZE  # nothing written
        assert not Path(f"{device}.badranges.json").exists()

        report = tmp_path / "device.badranges.json"
        proc = mover(
            "restore",
            "--repo",
            setup.repo,
            setup.snapshot["id"],
            device,
            "--partial",
            "--bad-ranges",
            report,
        )
        line = assert_one_error_line(proc, exit_code=1)
        assert str(report) in line
        assert listed(read_bad_ranges(report)) == expected
    finally:
        subprocess.run(["losetup", "--detach", device], check=False)
    assert_partial_file(setup.image, backing, expected)
