"""`backup --streams N` through the real CLI: the same snapshot content (tree root, every chunk id)
as one stream, and a bit-exact restore; bad input is refused with one line."""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mover.objects.repository import Repository
from mover.objects.tree import walk
from mover.storage.local import LocalBackend
from tests.integration.conftest import (
    MOVER,
    PASSWORD,
    MiB,
    assert_one_error_line,
    assert_same_file,
    init_repo,
    mover,
    mover_env,
    out_json,
    restore,
    tree_state,
)
from tests.native.data import random_bytes


def backup(repo: Path, source: Path, *extra: str) -> dict[str, Any]:
    result: dict[str, Any] = out_json(mover("backup", "--repo", repo, source, "--json", *extra))
    return result


def chunk_ids(repo: Path, snapshot_id: str) -> list[tuple[int, bytes | None]]:
    repository = Repository.open(LocalBackend(repo), PASSWORD.encode())
    found = repository.find_snapshot(snapshot_id)
    return [(e.length, e.chunk_id) for e in walk(repository.read_blob, bytes.fromhex(found.tree))]


@pytest.fixture
def sparse_image(tmp_path: Path) -> Path:
    """40 MiB: random data, a long zero run written as zeros, holes, a short tail."""
    path = tmp_path / "sparse.img"
    with open(path, "wb") as f:
        f.write(random_bytes(6 * MiB, seed=21))
        f.write(bytes(5 * MiB + 123))  # zeros that are data, not a hole
        f.write(random_bytes(3 * MiB, seed=22))
        f.seek(25 * MiB + 4097)  # a hole
        f.write(random_bytes(2 * MiB, seed=23))
        f.truncate(40 * MiB)  # a trailing hole
    return path


@pytest.mark.parametrize("source", ["image", "sparse_image"])
def test_one_two_and_four_streams_store_the_same_chunks(
    source: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    image: Path = request.getfixturevalue(source)
    # Small chunks and packs: many chunks, so many range boundaries to get right.
    repo = init_repo(tmp_path / "repo", "--chunk-min", "16KiB", "--chunk-avg", "64KiB",
                     "--chunk-max", "256KiB", "--pack-size", "1MiB")  # fmt: skip
    empty = tmp_path / "empty-repo"  # the same keys and chunker seed, no data
    shutil.copytree(repo, empty)
    one = backup(repo, image, "--checkpoint-every", "0")
    ids = chunk_ids(repo, one["id"])
    assert len(ids) > 100
    assert one["stats"]["new_chunks"] > 50
    for n in (2, 4):
        # Into an empty copy of the repository too, so that nothing is merely deduplicated.
        fresh = tmp_path / f"fresh-{n}"
        shutil.copytree(empty, fresh)
        alone = backup(fresh, image, "--streams", str(n))
        assert alone["stats"]["bytes_read"] == image.stat().st_size
        assert alone["stats"]["new_chunks"] == one["stats"]["new_chunks"]
        assert alone["tree"] == one["tree"]
        assert chunk_ids(fresh, alone["id"]) == ids
        again = backup(repo, image, "--streams", str(n))
        assert again["tree"] == one["tree"]
        assert chunk_ids(repo, again["id"]) == ids
        assert again["stats"]["new_bytes"] == 0 and again["stats"]["stored_bytes"] == 0
        out = tmp_path / f"restored-{n}.img"
        restore(fresh, alone["id"], out)
        assert_same_file(image, out)
    assert mover("check", "--repo", repo, "--read-data").returncode == 0


def test_streams_on_a_tiny_volume(tmp_path: Path) -> None:
    """Smaller than streams x max chunk: every range is a fraction of one chunk."""
    repo = init_repo(tmp_path / "repo")
    image = tmp_path / "tiny.img"
    image.write_bytes(random_bytes(300_000, seed=3))
    one = backup(repo, image)
    four = backup(repo, image, "--streams", "4")
    assert four["tree"] == one["tree"]
    out = tmp_path / "out.img"
    restore(repo, four["id"], out)
    assert_same_file(image, out)


def test_streams_need_a_seekable_source(repo: Path, image: Path) -> None:
    before = tree_state(repo)
    with open(image, "rb") as f:
        proc = mover("backup", "--repo", repo, "-", "--streams", "2", stdin=f)
    line = assert_one_error_line(proc, 2)
    assert "--streams 2 needs a file or block device" in line and "stdin" in line
    fifo = repo.parent / "fifo"
    os.mkfifo(fifo)
    writer = os.open(fifo, os.O_RDWR)  # so that opening it for reading does not block
    try:
        proc = mover("backup", "--repo", repo, fifo, "--streams", "3")
    finally:
        os.close(writer)
    assert "can only be read as one stream" in assert_one_error_line(proc, 2)
    assert tree_state(repo) == before


@pytest.mark.parametrize("value", ["0", "-1", "x"])
def test_bad_stream_count(repo: Path, image: Path, value: str) -> None:
    before = tree_state(repo)
    proc = mover("backup", "--repo", repo, image, "--streams", value)
    assert "--streams" in assert_one_error_line(proc, 2)
    assert tree_state(repo) == before


def test_bad_checkpoint_interval(repo: Path, image: Path) -> None:
    before = tree_state(repo)
    proc = mover("backup", "--repo", repo, image, "--checkpoint-every", "lots")
    assert "--checkpoint-every" in assert_one_error_line(proc, 2)
    proc = mover("backup", "--repo", repo, image, env={"MOVER_CHECKPOINT_INTERVAL": "-5"})
    assert "--checkpoint-every" in assert_one_error_line(proc, 2)
    assert tree_state(repo) == before


GiB = 1 << 30
# Runs the command in a child and prints the child's peak RSS (KiB) as the last line.
RSS_WRAPPER = (
    "import resource,subprocess,sys; subprocess.run(sys.argv[1:], check=True); "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
)


def peak_rss_kib(repo: Path, source: Path, streams: int) -> tuple[int, dict[str, Any]]:
    args = ["backup", "--repo", str(repo), str(source), "--json", "--streams", str(streams)]
    proc = subprocess.run(
        [sys.executable, "-c", RSS_WRAPPER, *MOVER, *args],
        env=mover_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    head, _, last = proc.stdout.rstrip().rpartition("\n")
    return int(last), json.loads(head)


@pytest.mark.slow
def test_streams_memory_does_not_grow_with_volume_size(tmp_path: Path) -> None:
    """Peak RSS of `--streams 4` for a 2 GiB and a 16 GiB sparse volume (the same 64 MiB of data
    at 8 places, holes elsewhere) differs by under 10%; the holes are never read."""
    pieces = [random_bytes(8 * MiB, seed=40 + i) for i in range(8)]
    figures: dict[int, list[int]] = {}
    for size in (2 * GiB, 16 * GiB):
        source = tmp_path / f"sparse-{size // GiB}g.img"
        with open(source, "wb") as f:
            f.truncate(size)
            for i, piece in enumerate(pieces):
                f.seek(i * (size // 8) + size // 16)
                f.write(piece)
        try:
            for run in range(3):
                repo = init_repo(tmp_path / f"repo-{size // GiB}g-{run}")
                rss, result = peak_rss_kib(repo, source, 4)
                assert result["stats"]["bytes_read"] == size
                assert 64 * MiB <= result["stats"]["new_bytes"] <= 66 * MiB, result["stats"]
                figures.setdefault(size, []).append(rss)
                shutil.rmtree(repo)
        finally:
            source.unlink()
    small, large = (statistics.median(figures[s]) for s in (2 * GiB, 16 * GiB))
    print(
        f"\npeak RSS KiB, --streams 4: 2 GiB sparse {figures[2 * GiB]}, 16 GiB {figures[16 * GiB]}"
    )
    assert abs(large - small) < 0.10 * min(small, large)
