"""prune --repack-below: partly used packs are repacked below the threshold, kept whole above."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from tests.integration.conftest import (
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
    before = stored(repo)
    stats = out_json(mover("prune", "--repo", repo, "--repack-below", str(percent), "--json"))
    freed = before - stored(repo)
    if repacks:  # the dropped half (~3.6 MB) goes
        assert stats["packs_written"] > 0, stats
        assert freed > 0.4 * len(b"".join(dropped)), stats
    else:  # partly used packs are kept whole, dead blobs and all (a pack with almost nothing
        # live, e.g. holding one small tree node, may still be repacked)
        assert freed < 0.4 * len(b"".join(dropped)), stats
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
