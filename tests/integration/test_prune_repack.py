"""prune --repack-below: partly used packs are repacked below the threshold, kept whole above."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from mover.content.index import unpack_records
from mover.maintenance.reachable import Blobs
from mover.objects.repository import Repository
from mover.objects.tree import leaf_chunks, nodes
from mover.storage.stack import open_backend
from tests.integration.conftest import (
    PASSWORD,
    assert_one_error_line,
    assert_same_file,
    mover,
    ok,
    out_json,
    restore,
)

KiB = 1 << 10


def init_small(path: Path) -> Path:
    ok(
        mover(
            "init",
            "--repo",
            path,
            "--kdf-memory",
            "8MiB",
            "--chunk-min",
            "16KiB",
            "--chunk-avg",
            "32KiB",
            "--chunk-max",
            "64KiB",
            "--pack-size",
            "512KiB",
        )
    )
    return path


def stored(repo: Path) -> int:
    return sum(p.stat().st_size for p in (repo / "data").rglob("*") if p.is_file())


def live_shares(repo_path: Path, tree: str) -> dict[str, float]:
    """Each pack file (by name) -> the share of its blob bytes that the tree `tree` uses (its
    nodes and the chunks they name), as prune accounts it. Cut points depend on the
    repository's key, so which packs a test's data leaves half used differs from run to run:
    the expectations are computed from the packs as they are."""
    repo = Repository.open(open_backend(str(repo_path)), PASSWORD.encode())
    try:
        blobs = Blobs(repo)
        live: set[bytes] = set()
        for node_id, node in nodes(blobs.read, bytes.fromhex(tree)):
            live.add(node_id)
            live.update(leaf_chunks(node))
        index = repo.index
        pack_ids = index.pack_ids()
        total = [0] * len(pack_ids)
        used = [0] * len(pack_ids)
        for records in index.record_batches():
            for chunk_id, number, _, length, _ in unpack_records(records):
                total[number] += length
                used[number] += length if chunk_id in live else 0
        return {pack_ids[n].hex(): used[n] / total[n] for n in range(len(pack_ids))}
    finally:
        repo.close()


def pack_files(repo: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in (repo / "data").rglob("*") if p.is_file()}


@pytest.mark.parametrize(("percent", "repacks"), [(80, True), (1, False)])
def test_repack_threshold(tmp_path: Path, percent: int, repacks: bool) -> None:
    # Version 1 interleaves segments kept in version 2 with segments dropped from it, so that
    # after version 1 is forgotten its packs are about half used.
    rng = random.Random(4)
    kept = [rng.randbytes(150 * KiB) for _ in range(24)]
    dropped = [rng.randbytes(150 * KiB) for _ in range(24)]
    v1, v2 = tmp_path / "v1.img", tmp_path / "v2.img"
    v1.write_bytes(b"".join(k + d for k, d in zip(kept, dropped, strict=True)))
    v2.write_bytes(b"".join(kept))
    repo = init_small(tmp_path / "repo")
    first = out_json(mover("backup", "--repo", repo, v1, "--json"))
    second = out_json(mover("backup", "--repo", repo, v2, "--json"))
    ok(mover("forget", "--repo", repo, first["id"]))
    shares = live_shares(repo, second["tree"])
    before = pack_files(repo)
    assert set(shares) <= set(before)
    stats = out_json(mover("prune", "--repack-below", str(percent), "--repo", repo, "--json"))
    after = pack_files(repo)
    # Packs used at least `percent` are kept whole, byte for byte, dead blobs and all; packs
    # used less are gone (deleted, or repacked into new packs with their live blobs).
    kept = {name for name, share in shares.items() if share >= percent / 100}
    gone = set(shares) - kept
    assert all(after.get(name) == before[name] for name in kept), stats
    assert not gone & set(after), stats
    assert stats["packs_deleted"] == len(gone), stats
    half_used = [name for name, share in shares.items() if 0.01 <= share < 0.8]
    assert half_used, shares  # the data leaves packs about half used: the two settings differ
    if repacks:  # the dropped half goes
        assert stats["packs_written"] > 0, stats
        assert stored(repo) < sum(map(len, before.values())) - 0.4 * len(b"".join(dropped))
    else:
        assert set(half_used) <= kept
    assert out_json(mover("check", "--repo", repo, "--read-data", "--json"))["ok"]
    target = tmp_path / "restored.img"
    restore(repo, second["id"], target)
    assert_same_file(v2, target)


@pytest.mark.parametrize("value", ["0", "101", "half"])
def test_bad_repack_threshold_is_refused(tmp_path: Path, value: str) -> None:
    repo = init_small(tmp_path / "repo")
    before = sorted(p.name for p in repo.rglob("*"))
    line = assert_one_error_line(mover("prune", "--repo", repo, "--repack-below", value), 2)
    assert "--repack-below" in line
    assert sorted(p.name for p in repo.rglob("*")) == before
