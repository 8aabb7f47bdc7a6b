"""Random access and `mover mount` on an S3 repository (moto's server on loopback): the same
bytes as the source, fetched chunk by chunk with ranged GETs."""

from __future__ import annotations

from pathlib import Path

import pytest

from mover.cli.context import backend_for
from mover.objects.repository import Repository
from mover.pipeline.reader import open_snapshot
from tests.integration.conftest import PASSWORD, assert_same_file, mover, ok, out_json
from tests.integration.fusemount import mounted, needs_fuse
from tests.s3.conftest import INIT_SMALL

KiB = 1 << 10


def test_reader_on_s3(bucket: str, small_image: Path) -> None:
    url = f"s3://{bucket}/reader"
    ok(mover("init", "--repo", url, *INIT_SMALL))
    snapshot_id = out_json(mover("backup", "--repo", url, small_image, "--json"))["id"]
    data = small_image.read_bytes()
    backend = backend_for(url)
    try:
        repo = Repository.open(backend, PASSWORD.encode())
        snapshot = repo.find_snapshot(snapshot_id)
        with open_snapshot(repo, snapshot, readahead=0) as reader:
            for offset, length in [(0, 10), (1_000_000, 300 * KiB), (len(data) - 5, 50)]:
                assert reader.read(offset, length) == data[offset : offset + length]
            # 64 KiB average chunks: a 300 KiB read fetched a handful, not the volume.
            assert 2 <= reader.chunks.stats.loads <= 16
    finally:
        backend.close()


@pytest.mark.slow  # a backup to S3 and a mount reading it all through ranged GETs
def test_mount_on_s3(bucket: str, small_image: Path, tmp_path: Path) -> None:
    needs_fuse()
    url = f"s3://{bucket}/mounted"
    ok(mover("init", "--repo", url, *INIT_SMALL))
    snapshot_id = out_json(mover("backup", "--repo", url, small_image, "--json"))["id"]
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    with mounted(url, mnt) as mount:
        assert mount.info["files"]["/latest.img"] == snapshot_id
        assert_same_file(small_image, mnt / "latest.img")
        code, stderr = mount.stop()
    assert code == 0, stderr
