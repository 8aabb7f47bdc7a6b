"""`backup --changed-ranges FILE [--parent SNAPSHOT] [--verify-unchanged PERCENT]` and
`backup --allocated-ranges FILE`.

The property that matters: a changed-range backup writes the very tree (same root) that a full
read of the same image writes, restores bit-exact, and reads far less. Checked for many change
patterns in process (fast), then through the real CLI: the default parent, JSON stats, a lying
change list caught by --verify-unchanged with nothing written, every bad input refused with one
line and the repository untouched, and the allocation list of a first backup."""

from __future__ import annotations

import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mover.chunking import ChunkerParams, make_chunker
from mover.content.pack import PackEntry
from mover.crypto import KdfParams
from mover.objects.repository import RepoConfig, Repository
from mover.objects.snapshot import Snapshot
from mover.objects.tree import walk
from mover.pipeline.backup import run_backup
from mover.pipeline.changed import ChangedRanges, ChangeListWrong
from mover.pipeline.ranges import read_ranges
from mover.pipeline.restore import run_restore
from mover.storage.local import LocalBackend
from tests.integration.conftest import (
    MiB,
    assert_one_error_line,
    assert_same_file,
    init_repo,
    mover,
    ok,
    out_json,
    restore,
    snapshot_list,
    tree_state,
)
from tests.native.data import random_bytes

KiB = 1 << 10
# Small chunks: many cuts, so many places to resynchronise at (max 256 KiB).
PARAMS = ChunkerParams(16 * KiB, 64 * KiB, 256 * KiB, b"changed ranges")
SIZE = 12 * MiB
BLOCK = 4096


def base_image(path: Path) -> bytes:
    """12 MiB: data, 2 MiB of zeros written as data, data, a 1 MiB hole of the file, data."""
    rng = random.Random(7)
    words = ["volume", "chunk", "the", "of", "restore", "snapshot", "node", "error", "retry"]
    text = "".join(f"{i} {rng.choice(words)} {rng.randrange(10**6)}\n" for i in range(200_000))
    data = bytearray(SIZE)
    data[0 : 3 * MiB] = random_bytes(3 * MiB, seed=1)
    data[5 * MiB : 7 * MiB] = text.encode()[: 2 * MiB]
    data[8 * MiB : SIZE] = random_bytes(4 * MiB, seed=2)
    write_sparse(path, bytes(data), holes=[(7 * MiB, 8 * MiB)])
    return bytes(data)


def write_sparse(path: Path, data: bytes, holes: list[tuple[int, int]] | None = None) -> None:
    """Every byte written, except in `holes` (None: every all-zero 4 KiB block) which stay
    holes of the file."""
    with open(path, "wb") as f:
        f.truncate(len(data))
        for start in range(0, len(data), BLOCK):
            block = data[start : start + BLOCK]
            if holes is None:
                if any(block):
                    f.seek(start)
                    f.write(block)
            elif not any(a <= start < b for a, b in holes):
                f.seek(start)
                f.write(block)


def open_repo(path: Path) -> Repository:
    return Repository.init(
        LocalBackend(path), b"pw", RepoConfig(PARAMS, pack_size=1 << 20), KdfParams(8192, 1, 1)
    )


def backup(repo: Repository, image: Path, **kwargs: Any) -> Snapshot:
    with open(image, "rb", buffering=0) as f:
        return run_backup(repo, f, str(image), threads=2, checkpoint_interval=None, **kwargs)


def changed_backup(
    repo: Repository,
    image: Path,
    parent: Snapshot,
    ranges: list[tuple[int, int]],
    verify: float = 0,
) -> Snapshot:
    listing = image.with_suffix(".ranges")
    listing.write_text("".join(f"{o} {n}\n" for o, n in ranges))
    with read_ranges(str(listing), image.stat().st_size, "--changed-ranges") as listed:
        return backup(repo, image, changed=ChangedRanges(parent, listed, verify))


# A change: (offset, length, what is written there: random bytes, zeros, or nothing new).
Change = tuple[int, int, str]


@dataclass(frozen=True)
class Pattern:
    changes: list[Change]
    max_read: int  # bytes_read at most
    grow: int = 0  # bytes appended (not listed: growth counts as changed)
    sparse: bool = False  # rewrite the new image with every zero block a hole of the file


def spread(count: int, seed: int) -> list[Change]:
    rng = random.Random(seed)
    step = SIZE // count
    return [(i * step + rng.randrange(step - BLOCK), rng.randrange(1, BLOCK), "random")
            for i in range(count)]  # fmt: skip


PATTERNS = {
    "inside-one-chunk": Pattern([(6 * MiB + 1000, 100, "random")], 1 * MiB),
    "spanning-chunks": Pattern([(1 * MiB + 17, 700 * KiB, "random")], 2 * MiB),
    "at-offset-0": Pattern([(0, 4096, "random")], 1 * MiB),
    "at-the-end": Pattern([(SIZE - 5000, 5000, "random")], 1 * MiB),
    "data-into-a-zero-run": Pattern([(4 * MiB + 12345, 5000, "random")], 2 * MiB),
    "across-a-zero-run-edge": Pattern([(3 * MiB - 3000, 10_000, "random")], 1 * MiB),
    "zeros-over-data": Pattern([(5 * MiB + 100 * KiB, 200 * KiB, "zeros")], 1 * MiB),
    "data-into-a-file-hole": Pattern([(7 * MiB + 300 * KiB, 5000, "random")], 2 * MiB),
    "zeroed-and-punched": Pattern(
        [(9 * MiB + 3 * BLOCK, 512 * KiB, "zeros")], 2 * MiB, sparse=True
    ),
    "many-small-extents": Pattern(spread(40, seed=3), SIZE // 2),
    "listed-but-unchanged": Pattern([(2 * MiB, 100 * KiB, "same"), (9 * MiB, 50, "same")], MiB),
    "everything": Pattern(
        [
            (0, SIZE, "same"),
        ],
        SIZE,
    ),
    "everything-rewritten": Pattern([(0, SIZE, "random")], SIZE),
    "nothing": Pattern([], 0),
    "growth": Pattern([(2 * MiB, 10, "random")], 3 * MiB, grow=MiB + 123),
}


def apply(data: bytes, pattern: Pattern, seed: int) -> bytes:
    rng = random.Random(seed)
    new = bytearray(data)
    for offset, length, what in pattern.changes:
        if what == "random":
            new[offset : offset + length] = rng.randbytes(length)
        elif what == "zeros":
            new[offset : offset + length] = bytes(length)
    return bytes(new) + rng.randbytes(pattern.grow)


@pytest.mark.parametrize("name", PATTERNS)
def test_changed_ranges_give_the_full_reads_tree(name: str, tmp_path: Path) -> None:
    pattern = PATTERNS[name]
    repo = open_repo(tmp_path / "repo")
    image = tmp_path / "volume.img"
    data = base_image(image)
    parent = backup(repo, image)

    new = apply(data, pattern, seed=len(name))
    if pattern.sparse:
        write_sparse(image, new)
    else:  # only the changed bytes are written: the file hole stays a hole where untouched
        with open(image, "r+b") as f:
            for offset, length, what in pattern.changes:
                if what != "same":
                    f.seek(offset)
                    f.write(new[offset : offset + length])
            f.seek(len(data))
            f.write(new[len(data) :])
    ranges = [(offset, length) for offset, length, _ in pattern.changes]

    changed = changed_backup(repo, image, parent, ranges)
    full = backup(repo, image)  # after: it finds every chunk stored by the changed backup
    assert changed.tree == full.tree
    assert changed.size == full.size == len(new)
    assert full.stats["new_bytes"] == 0, "the changed backup left a new chunk unstored"
    assert changed.stats["bytes_read"] <= pattern.max_read, changed.stats
    if name == "nothing":
        assert changed.tree == parent.tree
    target = tmp_path / "restored.img"
    run_restore(repo, changed, str(target))
    assert target.read_bytes() == new


def test_a_zero_run_inside_a_range_ending_at_a_parent_cut(tmp_path: Path) -> None:
    """The arithmetic cut through a hole of the file that a changed range ends in, where that
    end is a cut of the parent's and of the new image's alike: the run's last cut is where the
    parent takes over again."""
    repo = open_repo(tmp_path / "repo")
    image = tmp_path / "volume.img"
    edge = MiB + 100  # data before, zeros after (a hole of the file from the next block)
    data = random_bytes(edge, seed=5) + bytes(4 * MiB)
    tail = 5 << 30  # zeros after, more than one tree entry holds: merged as a full read does
    write_sparse(image, data)
    os.truncate(image, len(data) + tail)
    parent = backup(repo, image)
    extents = list(walk(repo.read_blob, bytes.fromhex(parent.tree)))
    hole = next(i for i, e in enumerate(extents) if e.chunk_id is None)
    # The chunk [start, zeros) that holds the edge: its cut comes with the zeros, min_size after
    # its start. Bytes changed after its start leave that cut, and the zero chunks after it,
    # where they are: the new zero chunks are in phase with the parent's.
    start, zeros = extents[hole - 1].offset, extents[hole].offset
    assert start + 10 < edge < zeros == start + PARAMS.min_size
    end = zeros + 10 * PARAMS.min_size  # a cut of both, 10 zero chunks into the parent's hole
    new = bytearray(data)
    new[start + 10 : edge] = random_bytes(edge - start - 10, seed=6)
    write_sparse(image, bytes(new))
    os.truncate(image, len(data) + tail)
    changed = changed_backup(repo, image, parent, [(start + 10, end - start - 10)])
    full = backup(repo, image)
    assert changed.tree == full.tree
    assert changed.stats["bytes_read"] < MiB // 2


def test_new_zeros_before_a_long_parent_hole_merge_as_a_full_read_does(tmp_path: Path) -> None:
    """Zeros written just before a parent's hole of more than 4 GiB, in phase with its zero
    chunks: the new zero chunks and the parent's hole join in the tree exactly as a full read
    joins them (one entry filled to 2^32 - 1 bytes, then the next), not entry by entry."""
    repo = open_repo(tmp_path / "repo")
    image = tmp_path / "volume.img"
    edge = MiB + 100
    data = random_bytes(edge, seed=5)
    size = edge + (5 << 30)
    write_sparse(image, data)
    os.truncate(image, size)
    parent = backup(repo, image)
    extents = list(walk(repo.read_blob, bytes.fromhex(parent.tree)))
    zeros = next(e.offset for e in extents if e.chunk_id is None)

    # Zero the data from x on, x chosen so that the new zero chunks (from the first cut that
    # the zeros allow, within 64 bytes of x) are in phase with the parent's.
    def in_phase(x: int) -> bool:
        cuts = make_chunker(PARAMS).feed(data[:x] + bytes(edge - x + 4 * PARAMS.min_size))
        first = next(c for c in cuts if c > x)
        return first <= x + 64 and (zeros - first) % PARAMS.min_size == 0

    candidates = (zeros - k * PARAMS.min_size - d for k in range(2, 6) for d in range(64))
    x = next((x for x in candidates if in_phase(x)), None)
    assert x is not None, "precondition: choose another seed"
    new = data[:x] + bytes(edge - x)
    write_sparse(image, new)
    os.truncate(image, size)
    changed = changed_backup(repo, image, parent, [(x, edge - x)])
    full = backup(repo, image)
    assert changed.tree == full.tree
    assert changed.stats["bytes_read"] < MiB


def test_a_big_sparse_volume_with_holes_over_4_gib(tmp_path: Path) -> None:
    """Holes longer than a tree entry holds (2^32 - 1 bytes): the parent's tree splits them
    into several entries, and a change between and after them still gives the full read's
    tree, reading only around the changes."""
    repo = open_repo(tmp_path / "repo")
    image = tmp_path / "sparse.img"
    size = 10 << 30
    with open(image, "wb") as f:
        f.truncate(size)
        for at in (0, 5 << 30, size - MiB):
            f.seek(at)
            f.write(random_bytes(MiB, seed=at))
    parent = backup(repo, image)
    changes = [(5 << 30, 1000), ((9 << 30) + 12345, 70_000), (size - 10, 10)]
    with open(image, "r+b") as f:
        for offset, length in changes:
            f.seek(offset)
            f.write(random_bytes(length, seed=offset + 1))
    changed = changed_backup(repo, image, parent, changes)
    full = backup(repo, image)
    assert changed.tree == full.tree
    assert changed.stats["bytes_read"] < 2 * MiB
    assert changed.stats["parent_bytes"] > 8 << 30


@pytest.mark.parametrize("where", ["in-a-chunk", "in-a-zero-run", "in-a-file-hole"])
def test_verify_unchanged_catches_a_byte_the_list_left_out(where: str, tmp_path: Path) -> None:
    repo = open_repo(tmp_path / "repo")
    image = tmp_path / "volume.img"
    data = base_image(image)
    parent = backup(repo, image)
    listed = [(1 * MiB, 100)]
    lie = {"in-a-chunk": 10 * MiB + 7, "in-a-zero-run": 4 * MiB, "in-a-file-hole": 7 * MiB}[where]
    with open(image, "r+b") as f:
        f.seek(MiB)
        f.write(b"x" * 100)
        f.seek(lie)
        f.write(b"\x01")
    before = snapshot_ids(repo)
    with pytest.raises(ChangeListWrong) as caught:
        changed_backup(repo, image, parent, listed, verify=100)
    message = str(caught.value)
    assert "--verify-unchanged: bytes " in message and "differ from parent snapshot" in message
    start, end = (int(x) for x in message.split("bytes ")[1].split(" ", 1)[0].split("-"))
    assert start <= lie <= end
    assert snapshot_ids(repo) == before  # no snapshot written
    # What verification guards against: the same lie, unverified, is a wrong snapshot.
    wrong = changed_backup(repo, image, parent, listed)
    assert wrong.tree != backup(repo, image).tree
    assert data[lie] != 1


def test_verify_unchanged_samples_the_share_asked_for(tmp_path: Path) -> None:
    repo = open_repo(tmp_path / "repo")
    image = tmp_path / "volume.img"
    base_image(image)
    parent = backup(repo, image)
    some = changed_backup(repo, image, parent, [(MiB, 10)], verify=25)
    unchanged = some.stats["parent_bytes"]
    assert 0.1 * unchanged < some.stats["verify_bytes"] < 0.45 * unchanged, some.stats
    none = changed_backup(repo, image, parent, [(MiB, 10)])
    assert none.stats["verify_bytes"] == 0
    # A lie in every unchanged chunk cannot hide from a 25% sample.
    with open(image, "r+b") as f:
        for at in range(2 * MiB, SIZE, 32 * KiB):
            f.seek(at)
            f.write(b"\xa5")
    with pytest.raises(ChangeListWrong):
        changed_backup(repo, image, parent, [(MiB, 10)], verify=25)


def snapshot_ids(repo: Repository) -> list[str]:
    return [s.id for s in repo.snapshots()]


def test_a_parent_chunk_missing_from_the_index_is_read_again(tmp_path: Path) -> None:
    """A chunk the parent names but the index lacks (damage) is never referenced unread: its
    bytes are chunked and stored again, and the tree is still the full read's."""
    repo = open_repo(tmp_path / "repo")
    image = tmp_path / "volume.img"
    base_image(image)
    parent = backup(repo, image)
    extents = [e for e in walk(repo.read_blob, bytes.fromhex(parent.tree)) if e.chunk_id]
    lost = extents[len(extents) // 2].chunk_id
    # The index rewritten without it, as a lost index file would leave it.
    names = list(repo.backend.list("index/"))
    kept = [(loc.pack_id, PackEntry(chunk_id, loc.offset, loc.length, loc.kind))
            for name in names for chunk_id, loc in repo.read_index_file(name)
            if chunk_id != lost]  # fmt: skip
    repo.write_index(kept, remember=False)
    for name in names:
        repo.backend.delete(name)
    repo = Repository.open(repo.backend, b"pw")
    assert lost not in repo.index
    changed = changed_backup(repo, image, parent, [(MiB, 10)])
    assert changed.stats["new_chunks"] >= 1
    assert changed.tree == backup(repo, image).tree


def test_allocated_ranges_store_unlisted_bytes_as_zeros_unread(tmp_path: Path) -> None:
    """With zeros where nothing is listed: the full read's tree. With garbage there (a device's
    stale blocks): the same tree again, so those bytes were never read."""
    repo = open_repo(tmp_path / "repo")
    allocated = [(0, 100 * KiB), (MiB + 5, 700 * KiB), (3 * MiB, 77_777), (4 * MiB - 10, 10)]
    zeros, junk = bytearray(4 * MiB), bytearray(random_bytes(4 * MiB, seed=99))
    for offset, length in allocated:
        zeros[offset : offset + length] = junk[offset : offset + length] = random_bytes(
            length, seed=offset
        )
    dense, garbage = tmp_path / "dense.img", tmp_path / "garbage.img"
    dense.write_bytes(zeros)
    write_sparse(garbage, bytes(junk), holes=[(MiB + 5 + 700 * KiB, 3 * MiB)])
    listing = tmp_path / "allocated.txt"
    listing.write_text("".join(f"{o} {n}\n" for o, n in allocated))
    full = backup(repo, dense)
    trees = []
    for image in (dense, garbage):
        with read_ranges(str(listing), 4 * MiB, "--allocated-ranges") as listed:
            snapshot = backup(repo, image, allocated=listed)
        trees.append(snapshot.tree)
        assert snapshot.stats["zero_bytes"] >= 4 * MiB - MiB - 900 * KiB
    assert trees == [full.tree, full.tree]


# -- through the command line ---------------------------------------------------------------


def cli_backup(repo: Path, source: Path, *extra: str | Path) -> dict[str, Any]:
    result: dict[str, Any] = out_json(mover("backup", "--repo", repo, source, "--json", *extra))
    return result


@dataclass(frozen=True)
class Cli:
    repo: Path
    image: Path  # never changed; its snapshot is `parent`
    parent: dict[str, Any]
    other: Path  # another source, backed up too
    lied: Path  # for the one test that changes it; its snapshot is `lied_parent`
    lied_parent: dict[str, Any]


@pytest.fixture(scope="module")
def cli(tmp_path_factory: pytest.TempPathFactory) -> Cli:
    """A repository with full backups of volume.img, other.img and lied.img."""
    tmp = tmp_path_factory.mktemp("cli")
    repo = init_repo(tmp / "repo", "--chunk-min", "16KiB", "--chunk-avg", "64KiB",
                     "--chunk-max", "256KiB", "--pack-size", "1MiB")  # fmt: skip
    image, other, lied = tmp / "volume.img", tmp / "other.img", tmp / "lied.img"
    base_image(image)
    other.write_bytes(random_bytes(MiB, seed=9))
    base_image(lied)
    parent = cli_backup(repo, image)
    cli_backup(repo, other)
    return Cli(repo, image, parent, other, lied, cli_backup(repo, lied))


@pytest.mark.slow
def test_cli_changed_ranges_backup(cli: Cli, tmp_path: Path) -> None:
    image = tmp_path / "volume.img"
    shutil.copy(cli.image, image)
    parent = cli_backup(cli.repo, image)
    changes = [(100_000, 3000), (6 * MiB, 64 * KiB), (SIZE - 1, 1)]
    with open(image, "r+b") as f:
        for offset, length in changes:
            f.seek(offset)
            f.write(random_bytes(length, seed=offset))
    listing = tmp_path / "changed.txt"
    listing.write_text("".join(f"{o} {n}\n" for o, n in changes))
    snap = cli_backup(cli.repo, image, "--changed-ranges", listing,
                      "--parent", parent["id"][:8], "--verify-unchanged", "5")  # fmt: skip
    assert snap["parent"] == parent["id"]
    stats = snap["stats"]
    assert 0 < stats["bytes_read"] < SIZE // 8
    assert stats["parent_bytes"] > SIZE // 2
    assert snap["tree"] == cli_backup(cli.repo, image)["tree"]
    # By default the parent is the newest snapshot of the source; the text says what was read.
    with open(image, "r+b") as f:
        f.seek(3 * MiB)
        f.write(b"new")
    listing.write_text(f"{3 * MiB} 3\n")
    with open(listing, "rb") as stdin:  # the list from stdin
        proc = ok(mover("backup", "--repo", cli.repo, image, "--changed-ranges", "-", stdin=stdin))
    assert " of 12.0 MiB read (changes since " in proc.stdout.decode()
    target = tmp_path / "restored.img"
    restore(cli.repo, "latest", target)
    assert_same_file(image, target)


def test_cli_verify_unchanged_refuses_a_lying_list(cli: Cli, tmp_path: Path) -> None:
    with open(cli.lied, "r+b") as f:
        f.seek(10 * MiB)
        f.write(b"unlisted")
    listing = tmp_path / "changed.txt"
    listing.write_text("0 10\n")
    before = tree_state(cli.repo)
    proc = mover("backup", "--repo", cli.repo, cli.lied, "--changed-ranges", listing,
                 "--verify-unchanged", "100")  # fmt: skip
    line = assert_one_error_line(proc, exit_code=2, starts="--verify-unchanged: bytes ")
    assert f"differ from parent snapshot {cli.lied_parent['id'][:8]}" in line
    assert "no snapshot was written" in line
    after = tree_state(cli.repo)
    assert {k: v for k, v in after.items() if k.startswith("snapshots")} == {
        k: v for k, v in before.items() if k.startswith("snapshots")
    }


BAD: dict[str, tuple[list[str], str]] = {
    "missing-file": (
        ["--changed-ranges", "{tmp}/absent"],
        "--changed-ranges {tmp}/absent: no such",
    ),
    "garbled": (["--changed-ranges", "{garbled}"], "--changed-ranges {garbled} line 2: expected"),
    "overlapping": (["--changed-ranges", "{overlap}"], "--changed-ranges {overlap} line 2: range"),
    "out-of-range": (["--changed-ranges", "{past}"], "--changed-ranges {past} line 1: range"),
    "parent-missing": (["--changed-ranges", "{good}", "--parent", "deadbeef"], "no snapshot"),
    "parent-of-another-source": (
        ["--changed-ranges", "{good}", "--parent", "{other_id}"],
        "--parent {other_short} is a snapshot of",
    ),
    "no-parent-yet": (["--changed-ranges", "{good}", "@fresh"], "--changed-ranges needs a parent"),
    "shrunk": (["--changed-ranges", "{good}", "--parent", "{parent_id}", "@small"], "@small is"),
    "parent-alone": (["--parent", "{parent_id}"], "--parent applies only with --changed-ranges"),
    "verify-alone": (["--verify-unchanged", "5"], "--verify-unchanged applies only with"),
    "verify-over-100": (["--changed-ranges", "{good}", "--verify-unchanged", "101"], "Invalid"),
    "both-lists": (["--changed-ranges", "{good}", "--allocated-ranges", "{good}"], "give --"),
    "with-streams": (["--changed-ranges", "{good}", "--streams", "2"], "--changed-ranges reads"),
    "allocated-garbled": (["--allocated-ranges", "{garbled}"], "--allocated-ranges {garbled} line"),
}


@pytest.mark.parametrize("case", BAD)
def test_cli_bad_input_is_one_line_and_changes_nothing(case: str, cli: Cli, tmp_path: Path) -> None:
    repo, image, other, parent = cli.repo, cli.image, cli.other, cli.parent
    files = {
        "garbled": "0 10\n10 ten\n",
        "overlap": "0 10\n5 10\n",
        "past": f"{SIZE - 5} 10\n",
        "good": "0 10\n",
    }
    values = {"tmp": str(tmp_path), "parent_id": parent["id"]}
    for key, text in files.items():
        (tmp_path / key).write_text(text)
        values[key] = str(tmp_path / key)
    other_id = next(s["id"] for s in snapshot_list(repo) if s["source"] == str(other.resolve()))
    values.update(other_id=other_id, other_short=other_id[:8])
    fresh, small = tmp_path / "fresh.img", tmp_path / "small.img"
    shutil.copy(image, fresh)
    small.write_bytes(image.read_bytes()[: SIZE // 2])
    args, message = BAD[case]
    source: Path = image
    filled = []
    for arg in args:
        if arg == "@fresh":
            source = fresh
        elif arg == "@small":
            source = small
        else:
            filled.append(arg.format(**values))
    if case == "shrunk":  # the parent is volume.img's; small.img is another source
        filled = ["--changed-ranges", values["good"]]
        source = small
        small_parent = cli_backup(repo, small)  # then shrink it under its own snapshot
        small.write_bytes(image.read_bytes()[: SIZE // 4])
        filled += ["--parent", small_parent["id"]]
        message = f"{small.resolve()} is {SIZE // 4} bytes, smaller than its parent snapshot"
    before = tree_state(repo)
    proc = mover("backup", "--repo", repo, source, *filled)
    line = assert_one_error_line(proc, exit_code=2)
    assert message.format(**values) in line, line
    assert tree_state(repo) == before


def test_cli_changed_ranges_from_stdin_source_is_refused(cli: Cli, tmp_path: Path) -> None:
    repo, image = cli.repo, cli.image
    listing = tmp_path / "changed.txt"
    listing.write_text("0 10\n")
    before = tree_state(repo)
    with open(image, "rb") as stdin:
        proc = mover("backup", "--repo", repo, "-", "--changed-ranges", listing, stdin=stdin)
    line = assert_one_error_line(proc, exit_code=2)
    assert "--changed-ranges needs a file or block device, not stdin" in line
    assert tree_state(repo) == before


@pytest.mark.slow
def test_cli_allocated_ranges_first_backup(tmp_path: Path) -> None:
    """Unlisted ranges are stored as zeros without being read: with zeros there, the full
    read's tree; with garbage there (never read), the same tree again."""
    repo = init_repo(tmp_path / "repo", "--chunk-min", "16KiB", "--chunk-avg", "64KiB",
                     "--chunk-max", "256KiB")  # fmt: skip
    allocated = [(0, 300 * KiB), (2 * MiB + 5, MiB), (7 * MiB, 77_777), (8 * MiB - 10, 10)]
    zeros = bytearray(8 * MiB)
    for offset, length in allocated:
        zeros[offset : offset + length] = random_bytes(length, seed=offset)
    dense = tmp_path / "dense.img"
    dense.write_bytes(zeros)
    garbage = tmp_path / "garbage.img"
    junk = bytearray(random_bytes(8 * MiB, seed=99))
    for offset, length in allocated:
        junk[offset : offset + length] = zeros[offset : offset + length]
    garbage.write_bytes(junk)
    listing = tmp_path / "allocated.txt"
    listing.write_text("".join(f"{o} {n}\n" for o, n in allocated))

    full = cli_backup(repo, dense)
    listed = cli_backup(repo, dense, "--allocated-ranges", listing)
    unread = cli_backup(repo, garbage, "--allocated-ranges", listing)
    assert listed["tree"] == full["tree"] == unread["tree"]
    assert unread["stats"]["zero_bytes"] >= 8 * MiB - 3 * MiB
    target = tmp_path / "restored.img"
    restore(repo, unread["id"], target)
    assert_same_file(dense, target)
