"""Holes of a sparse source skip the chunker, and change nothing: the snapshot of a sparse
file has the same chunks, tree and root as that of a dense file with the same bytes."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from mover.chunking import ChunkerParams
from mover.crypto import KdfParams
from mover.objects.repository import RepoConfig, Repository
from mover.pipeline import backup as backup_module
from mover.pipeline.backup import run_backup
from mover.pipeline.restore import run_restore
from mover.storage.local import LocalBackend
from tests.integration.conftest import PASSWORD, file_digest

KiB, MiB = 1 << 10, 1 << 20
PARAMS = ChunkerParams(16 * KiB, 64 * KiB, 256 * KiB)

# (offset, length) of data; everything else is a hole. Holes of every kind: at the start,
# shorter than a chunk, a few chunks, many read buffers, between odd offsets, at the end.
LAYOUT = [
    (3 * MiB, 100 * KiB),
    (3 * MiB + 104 * KiB, 7),
    (9 * MiB + 5, 300 * KiB),
    (40 * MiB, 4 * KiB),
    (40 * MiB + 20 * KiB, 2 * MiB),
    (64 * MiB - 1, 1),
    (80 * MiB, 17 * KiB),
]
SIZE = 100 * MiB + 3


def write_sources(tmp_path: Path) -> tuple[Path, Path]:
    rng = random.Random(3)
    sparse, dense = tmp_path / "sparse.img", tmp_path / "dense.img"
    with open(sparse, "wb") as s:
        s.truncate(SIZE)
        for offset, length in LAYOUT:
            s.seek(offset)
            s.write(rng.randbytes(length))
    with open(sparse, "rb") as s, open(dense, "wb") as d:  # every byte written: no holes
        while block := s.read(MiB):
            d.write(block)
    assert sparse.stat().st_blocks * 512 < SIZE // 4  # the file system kept the holes
    assert dense.stat().st_blocks * 512 >= SIZE
    return sparse, dense


@pytest.mark.parametrize("head", [None, 4 * MiB, 20 * KiB, 16 * KiB + 65, 8 * KiB])
def test_sparse_and_dense_sources_give_the_same_snapshot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, head: int | None
) -> None:
    monkeypatch.setattr(backup_module, "HOLE_HEAD", head)
    sparse, dense = write_sources(tmp_path)
    repos = []
    for name in ("a", "b"):
        backend = LocalBackend(tmp_path / name)
        repo = Repository.init(
            backend, PASSWORD.encode(), RepoConfig(PARAMS), KdfParams(8192, 1, 1)
        )
        repos.append(repo)
    # Same gear seed in both repositories, so the chunks can be compared across them.
    repos[1] = Repository(repos[1].backend, repos[0].master, repos[0].config, repos[1].id)
    with open(sparse, "rb") as f:
        from_sparse = run_backup(repos[0], f, "sparse", checkpoint_interval=None)
    with open(dense, "rb") as f:
        from_dense = run_backup(repos[1], f, "dense", checkpoint_interval=None)
    assert from_sparse.tree == from_dense.tree
    assert from_sparse.stats["zero_bytes"] == from_dense.stats["zero_bytes"] > SIZE // 2
    assert from_sparse.stats["new_chunks"] == from_dense.stats["new_chunks"]
    target = tmp_path / "restored.img"
    run_restore(repos[0], from_sparse, str(target))
    assert file_digest(target) == file_digest(dense)


def test_holes_are_skipped_the_same_with_python_optimizations(tmp_path: Path) -> None:
    """`python -O` strips asserts: nothing the backup needs may happen inside one (the hole
    skip once fed the chunker in an assert, and cut differently after a hole under -O)."""
    import json
    import subprocess
    import sys

    from tests.integration.conftest import init_repo, mover_env

    sparse, _ = write_sources(tmp_path)
    repo = init_repo(tmp_path / "repo")
    trees = []
    for flags in ([], ["-O"]):
        proc = subprocess.run(
            [sys.executable, *flags, "-m", "mover", "backup", "--repo", repo, sparse, "--json"],
            env=mover_env(),
            capture_output=True,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stderr.decode(errors="replace")
        trees.append(json.loads(proc.stdout)["tree"])
    assert trees[0] == trees[1]


def expected_root(repo: Repository, data: bytes) -> str:
    """The root a backup that chunks every byte would write: the native chunker fed the whole
    of `data` at once, each chunk added to a tree as a hole (all zeros) or by its id."""
    from mover.chunking import is_zero, make_chunker
    from mover.objects.tree import TreeBuilder

    chunker = make_chunker(repo.config.chunker)
    cuts = chunker.feed(data) + chunker.finish()
    tree = TreeBuilder(repo.master.chunk_id_of)
    begin = 0
    for cut in cuts:
        chunk = data[begin:cut]
        tree.add(len(chunk), None if is_zero(chunk) else repo.master.chunk_id_of(chunk))
        begin = cut
    return tree.finish().hex()


def zero_runs(rng: random.Random) -> bytes:
    """Data with zero runs written as data: read buffers (4 MiB) wholly zero, runs that start or
    end inside a buffer, ones shorter than a minimum chunk, and zeros at both ends."""
    out = bytearray(9 * MiB + 11)  # zeros first: a whole buffer, then some
    for length, zeros in [
        (300 * KiB, 3),
        (2 * MiB + 5, 12 * MiB + 7),
        (7, 5 * KiB),
        (1 * MiB, 4 * MiB),
        (64 * KiB, 8 * MiB - 1),
    ]:
        out += rng.randbytes(length)
        out += bytes(zeros)
    return bytes(out)


@pytest.mark.parametrize("source", ["file", "pipe"])
def test_zeros_read_as_data_cut_as_if_every_byte_was_chunked(tmp_path: Path, source: str) -> None:
    """A dense file's (or a stream's) zero runs are cut arithmetically, like holes; the tree
    must be the one the chunker makes when it sees every byte."""
    import subprocess

    data = zero_runs(random.Random(5))
    repo = Repository.init(
        LocalBackend(tmp_path / "repo"),
        PASSWORD.encode(),
        RepoConfig(PARAMS),
        KdfParams(8192, 1, 1),
    )
    path = tmp_path / "dense.img"
    path.write_bytes(data)
    if source == "file":
        with open(path, "rb") as f:
            snap = run_backup(repo, f, "dense", checkpoint_interval=None)
    else:
        with subprocess.Popen(["cat", str(path)], stdout=subprocess.PIPE) as cat:
            assert cat.stdout is not None
            snap = run_backup(repo, cat.stdout, "stream", checkpoint_interval=None)
    assert snap.tree == expected_root(repo, data)
    assert snap.stats["zero_bytes"] > len(data) // 2
    target = tmp_path / "restored.img"
    run_restore(repo, snap, str(target))
    assert target.read_bytes() == data
