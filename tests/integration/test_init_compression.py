"""`mover init --compression`: auto by default (each backup steers the level, see
mover.pipeline.level), or one fixed level; a repository keeps what it was created with."""

from __future__ import annotations

from pathlib import Path

import pytest

from mover import api
from tests.integration.conftest import PASSWORD, mover


@pytest.mark.parametrize(
    ("args", "level", "adaptive"),
    [((), 3, True), (("--compression", "auto"), 3, True), (("--compression", "5"), 5, False)],
)
def test_init_records_the_compression(
    tmp_path: Path, args: tuple[str, ...], level: int, adaptive: bool
) -> None:
    repo = tmp_path / "repo"
    proc = mover("init", "--repo", repo, "--kdf-memory", "8MiB", *args)
    assert proc.returncode == 0, proc.stderr
    opened = api.open_repository(str(repo), PASSWORD.encode())
    try:
        assert (opened.config.zstd_level, opened.config.adaptive_level) == (level, adaptive)
    finally:
        opened.close()
