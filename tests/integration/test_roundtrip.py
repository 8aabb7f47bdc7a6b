"""Back up and restore through the CLI: bit-exact round trips, snapshot references, stdin,
deduplication of a changed image, sparse zeros, listings, stats, forget + prune."""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

import pytest

from mover.tools.sampledata import SampleData
from tests.integration.conftest import (
    IMAGE_SIZE,
    MiB,
    assert_same_file,
    backup,
    init_repo,
    mover,
    ok,
    out_json,
    pack_files,
    restore,
    snapshot_list,
    tree_bytes,
    write_image,
)


def shortest_unique_prefix(snapshot_id: str, ids: list[str]) -> str:
    for n in range(4, len(snapshot_id) + 1):
        prefix = snapshot_id[:n]
        if [i for i in ids if i.startswith(prefix)] == [snapshot_id]:
            return prefix
    raise AssertionError(f"{snapshot_id} has no unique prefix among {ids}")


def test_backup_json_has_id_and_restores_bit_exact(repo: Path, image: Path, tmp_path: Path) -> None:
    snap = backup(repo, image)
    assert len(snap["id"]) == 64 and int(snap["id"], 16) >= 0
    assert snap["short_id"] == snap["id"][:8]
    assert snap["size"] == IMAGE_SIZE
    assert snap["source"] == str(image.resolve())
    stats = snap["stats"]
    assert stats["bytes_read"] == IMAGE_SIZE
    assert stats["new_bytes"] + stats["reused_bytes"] + stats["zero_bytes"] == IMAGE_SIZE
    assert 0 < stats["stored_bytes"] < IMAGE_SIZE  # the mix holds compressible text

    out = tmp_path / "restored.img"
    done = restore(repo, snap["id"], out)
    assert done["snapshot"] == snap["id"]
    assert done["size"] == IMAGE_SIZE
    assert_same_file(image, out)


def test_restore_by_full_id_unique_prefix_and_latest(
    repo: Path, image: Path, tmp_path: Path
) -> None:
    other = write_image(tmp_path / "other.img", seed=3, size=4 * MiB)
    first = backup(repo, image)
    second = backup(repo, other)
    ids = [s["id"] for s in snapshot_list(repo)]
    assert sorted(ids) == sorted([first["id"], second["id"]])

    cases = [
        (first["id"], image),
        (shortest_unique_prefix(first["id"], ids), image),
        (second["id"], other),
        (shortest_unique_prefix(second["id"], ids), other),
        ("latest", other),
    ]
    for n, (ref, expected) in enumerate(cases):
        out = tmp_path / f"out-{n}.img"
        restore(repo, ref, out)
        assert_same_file(expected, out)


@pytest.mark.parametrize("how", ["pipe", "redirected-file"])
def test_backup_from_stdin_restores_bit_exact(
    repo: Path, image: Path, tmp_path: Path, how: str
) -> None:
    if how == "pipe":
        snap = backup(repo, "-", input=image.read_bytes())
    else:
        with open(image, "rb") as f:
            snap = backup(repo, "-", stdin=f)
    assert snap["source"] == "-"
    assert snap["size"] == IMAGE_SIZE
    out = tmp_path / "restored.img"
    restore(repo, "latest", out)
    assert_same_file(image, out)
    # Same bytes as a file backup: same tree root.
    assert backup(repo, image)["tree"] == snap["tree"]


def test_tiny_sources_round_trip(repo: Path, tmp_path: Path) -> None:
    for size in (0, 1, 4097):
        source = tmp_path / f"tiny-{size}"
        source.write_bytes(random.Random(size).randbytes(size))
        snap = backup(repo, source)
        assert snap["size"] == size
        out = tmp_path / f"tiny-{size}.out"
        restore(repo, snap["id"], out)
        assert_same_file(source, out)


def test_changed_image_stores_only_a_small_fraction(image: Path, tmp_path: Path) -> None:
    # 64 KiB average chunks (the default is 1 MiB, and chunks up to 4 MiB): three 4 KiB edits
    # then change well under a MiB, so the bound below has a wide margin for any chunker seed.
    repo = init_repo(
        tmp_path / "repo", "--chunk-min", "16KiB", "--chunk-avg", "64KiB", "--chunk-max", "256KiB"
    )
    first = backup(repo, image)
    after_first = tree_bytes(repo)

    changed = tmp_path / "changed.img"
    shutil.copyfile(image, changed)
    rnd = random.Random(7)
    with open(changed, "r+b") as f:
        for offset in (3 * MiB + 12345, 11 * MiB + 4096, 19 * MiB + 777):
            f.seek(offset)
            f.write(rnd.randbytes(4096))
    second = backup(repo, changed)
    growth = tree_bytes(repo) - after_first

    stats = second["stats"]
    assert stats["bytes_read"] == IMAGE_SIZE
    assert stats["new_bytes"] > 0, "three edited regions must yield new chunks"
    assert stats["new_bytes"] < IMAGE_SIZE // 16, stats
    assert stats["reused_bytes"] > IMAGE_SIZE // 2, stats
    assert growth < after_first // 16, (growth, after_first)
    assert second["tree"] != first["tree"]

    out = tmp_path / "changed.out"
    restore(repo, second["id"], out)
    assert_same_file(changed, out)
    out_first = tmp_path / "first.out"
    restore(repo, first["id"], out_first)
    assert_same_file(image, out_first)


def test_zero_region_is_counted_and_restored_sparse(repo: Path, tmp_path: Path) -> None:
    source = tmp_path / "holey.img"
    data = SampleData(11).generate(16 * MiB)
    with open(source, "wb") as f:
        f.write(data[: 8 * MiB])
        f.write(bytes(32 * MiB))
        f.write(data[8 * MiB :])
    size = source.stat().st_size
    snap = backup(repo, source)
    assert snap["stats"]["zero_bytes"] > 0
    # Chunks straddle the region's edges; at least the interior 4 MiB-max chunks are holes.
    assert snap["stats"]["zero_bytes"] >= 16 * MiB, snap["stats"]

    out = tmp_path / "holey.out"
    done = restore(repo, snap["id"], out)
    assert done["hole_bytes"] == snap["stats"]["zero_bytes"]
    st = os.stat(out)
    assert st.st_size == size
    assert st.st_blocks * 512 < size, "the restored file has no holes"
    assert st.st_blocks * 512 <= size - snap["stats"]["zero_bytes"] + MiB
    assert_same_file(source, out)


def make_sparse_source(path: Path) -> None:
    """Holes at the start, in the middle and at the end; data runs of odd lengths, one of them
    ending in a partial block, and a short one between two holes."""
    data = SampleData(13).generate(8 * MiB)
    with open(path, "wb") as f:
        f.seek(5 * MiB + 3)
        f.write(data[: 3 * MiB + 11])
        f.seek(20 * MiB)
        f.write(data[3 * MiB : 3 * MiB + 4096])
        f.seek(33 * MiB + 100)
        f.write(data[4 * MiB : 8 * MiB - 7])
        f.truncate(48 * MiB + 5)


@pytest.mark.parametrize("how", ["file", "stdin-redirect"])
def test_sparse_source_round_trips(repo: Path, tmp_path: Path, how: str) -> None:
    source = tmp_path / "sparse.img"
    make_sparse_source(source)
    size = source.stat().st_size
    assert source.stat().st_blocks * 512 < size // 2, "the source is not sparse here"
    if how == "file":
        snap = backup(repo, source)
    else:
        with open(source, "rb") as f:
            snap = backup(repo, "-", stdin=f)
    stats = snap["stats"]
    assert snap["size"] == stats["bytes_read"] == size
    assert stats["zero_bytes"] >= 20 * MiB, stats
    assert stats["new_bytes"] + stats["reused_bytes"] + stats["zero_bytes"] == size

    out = tmp_path / "sparse.out"
    restore(repo, snap["id"], out)
    assert_same_file(source, out)
    assert out.stat().st_blocks * 512 < size // 2


def test_snapshots_json_lists_ids_and_same_root_for_same_content(
    repo: Path, image: Path, tmp_path: Path
) -> None:
    copy = tmp_path / "copy-of-image.img"
    shutil.copyfile(image, copy)
    other = write_image(tmp_path / "other.img", seed=3, size=2 * MiB)
    made = [backup(repo, image), backup(repo, copy), backup(repo, other)]

    listed = snapshot_list(repo)
    assert [s["id"] for s in listed] == [s["id"] for s in made]  # oldest first
    by_id = {s["id"]: s for s in listed}
    for snap in made:
        entry = by_id[snap["id"]]
        assert entry["short_id"] == snap["id"][:8]
        assert entry["tree"] == snap["tree"]
        assert entry["size"] == snap["size"]
        assert entry["source"] == snap["source"]
    assert len({s["id"] for s in listed}) == 3
    assert listed[0]["tree"] == listed[1]["tree"], "same content, different roots"
    assert listed[2]["tree"] != listed[0]["tree"]
    assert made[1]["stats"]["new_bytes"] == 0
    assert made[1]["stats"]["stored_bytes"] == 0


def test_stats_json(repo: Path, image: Path, tmp_path: Path) -> None:
    empty = out_json(mover("stats", "--repo", repo, "--json"))
    assert empty == {
        "snapshots": 0,
        "logical_bytes": 0,
        "stored_bytes": 0,
        "packs": 0,
        "chunks": 0,
        "ratio": None,
    }
    backup(repo, image)
    backup(repo, image)
    body = out_json(mover("stats", "--repo", repo, "--json"))
    assert set(body) == {"snapshots", "logical_bytes", "stored_bytes", "packs", "chunks", "ratio"}
    packs = pack_files(repo)
    stored = sum(p.stat().st_size for p in packs)
    assert body["snapshots"] == 2
    assert body["logical_bytes"] == 2 * IMAGE_SIZE
    assert body["packs"] == len(packs) >= 1
    assert body["stored_bytes"] == stored
    assert body["chunks"] > 0
    assert body["ratio"] == round(2 * IMAGE_SIZE / stored, 3)
    assert body["ratio"] > 2  # two identical images, compressible


def test_forget_then_prune_frees_packs(image: Path, tmp_path: Path) -> None:
    repo = init_repo(tmp_path / "repo")
    other = write_image(tmp_path / "other.img", seed=4, size=IMAGE_SIZE)
    # Half of each: after forgetting the two sources, their packs are about half live, so prune
    # has to copy live blobs into new packs, not only delete whole packs.
    spliced = tmp_path / "spliced.img"
    spliced.write_bytes(
        image.read_bytes()[: IMAGE_SIZE // 2] + other.read_bytes()[IMAGE_SIZE // 2 :]
    )
    a, b, keep = backup(repo, image), backup(repo, other), backup(repo, spliced)
    assert keep["stats"]["reused_bytes"] > IMAGE_SIZE // 4  # shares chunks with both
    packs_before, bytes_before = pack_files(repo), tree_bytes(repo / "data")

    removed = out_json(mover("forget", "--repo", repo, a["id"], b["short_id"], "--json"))
    assert sorted(removed["removed"]) == sorted([a["id"], b["id"]])
    assert [s["id"] for s in snapshot_list(repo)] == [keep["id"]]
    assert pack_files(repo) == packs_before, "forget must not touch data"

    pruned = out_json(mover("prune", "--repo", repo, "--json"))
    assert pruned["packs_deleted"] >= 1, pruned
    assert pruned["bytes_freed"] > 0, pruned
    assert pruned["chunks_dropped"] > 0, pruned
    bytes_after = tree_bytes(repo / "data")
    assert bytes_after < bytes_before
    assert len(packs_before - pack_files(repo)) == pruned["packs_deleted"]
    assert len(pack_files(repo) - packs_before) == pruned["packs_written"]

    out = tmp_path / "kept.out"
    restore(repo, "latest", out)
    assert_same_file(spliced, out)
    ok(mover("check", "--repo", repo, "--read-data"))
    body = out_json(mover("stats", "--repo", repo, "--json"))
    assert body["snapshots"] == 1
    assert body["stored_bytes"] == bytes_after
    # Nothing left to prune: a second prune deletes nothing.
    again = out_json(mover("prune", "--repo", repo, "--json"))
    assert again["packs_deleted"] == 0 and again["bytes_freed"] == 0, again
