"""Resume from every kind of interruption point, in process: a backup whose source fails
(EIO, as a dying disk) after k reads leaves its checkpoints; the next backup of the same file
resumes from the furthest one and makes the snapshot an uninterrupted backup makes.

Tiny chunks (64 B min, 256 B average) make tens of thousands of chunks, so checkpoints fall
with the tree builder in every state: a partial leaf of any fill, full leaves, and (beyond 8192
chunks) interior levels."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mover.chunking import ChunkerParams
from mover.crypto import KdfParams
from mover.errors import SourceError
from mover.objects.repository import RepoConfig, Repository
from mover.objects.tree import walk
from mover.pipeline.backup import run_backup
from mover.storage.local import LocalBackend
from tests.integration.conftest import FailingFile
from tests.native.data import random_bytes, structured

PASSWORD = b"resume points"
SIZE = 3 << 20
READ = 8 << 20  # mover.pipeline.backup.READ_SIZE: one readinto per 8 MiB (or per data extent)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str, int]:
    """An empty repository with tiny chunks, a 3 MiB source, and its uninterrupted snapshot's
    tree root and chunk count."""
    base = tmp_path_factory.mktemp("points")
    source = base / "source.img"
    source.write_bytes(structured(SIZE // 2, seed=1) + random_bytes(SIZE // 2, seed=2))
    empty = base / "empty"
    config = RepoConfig(ChunkerParams(64, 256, 1024, b"points"), pack_size=1 << 16)
    Repository.init(LocalBackend(empty), PASSWORD, config, KdfParams(memory_kib=8192))
    full = base / "full"
    shutil.copytree(empty, full)
    repo = Repository.open(LocalBackend(full), PASSWORD)
    with open(source, "rb", buffering=0) as f:
        snapshot = run_backup(repo, f, str(source), threads=2, checkpoint_interval=0)
    chunks = sum(1 for _ in walk(repo.read_blob, bytes.fromhex(snapshot.tree)))
    assert chunks > 8192, "not enough chunks for an interior tree level"
    return empty, source, snapshot.tree, chunks


@pytest.mark.slow  # several seconds: runs in CI (CI=true) and with -m slow
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=15)
@given(fail_at=st.integers(2, SIZE // 65536), interval=st.integers(30_000, 800_000))
def test_resume_after_a_failure_anywhere(
    setup: tuple[Path, Path, str, int], tmp_path_factory: pytest.TempPathFactory,
    fail_at: int, interval: int,
) -> None:  # fmt: skip
    empty, source, tree, _ = setup
    path = tmp_path_factory.mktemp("run") / "repo"
    shutil.copytree(empty, path)
    repo = Repository.open(LocalBackend(path), PASSWORD)
    # Small reads, so that a failure can fall between any two checkpoints.
    failing = FailingFile(source, fail_at, read_size=65536)
    try:
        with pytest.raises(SourceError, match="Input/output error"):
            run_backup(repo, failing, str(source), threads=2, checkpoint_interval=interval)  # type: ignore[arg-type]
    finally:
        failing.close()
    reached = (fail_at - 1) * 65536  # bytes read before the failure
    notices: list[str] = []
    repo = Repository.open(LocalBackend(path), PASSWORD)
    with open(source, "rb", buffering=0) as f:
        snapshot = run_backup(
            repo, f, str(source), threads=2, checkpoint_interval=interval, notify=notices.append
        )
    start = snapshot.stats["resumed_from"]
    # The furthest checkpoint: the last multiple of the interval crossed before the failure,
    # give or take the chunk it fell in (a checkpoint is at a cut, at or after its mark).
    if reached >= interval + 1024:
        assert start > 0, notices
        assert reached - interval - 1024 <= start <= reached
    assert snapshot.stats["bytes_read"] == SIZE - start
    assert snapshot.tree == tree
    assert not [n for n in repo.backend.list("checkpoints/")]
    shutil.rmtree(path)
