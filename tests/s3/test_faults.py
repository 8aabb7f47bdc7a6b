"""Through a proxy that fails 5% of requests (503 SlowDown, 500, connection resets before or
after the server acted, slow responses, bodies cut midway or damaged): backup, restore and
replicate still complete, bit for bit."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import assert_same_file, mover, ok, out_json, write_image
from tests.s3.conftest import INIT_SMALL, MULTIPART, MiB
from tests.s3.proxy import FaultProxy
from tests.s3.server import MotoServer

RATE = 0.05


@pytest.fixture
def proxy(moto_server: MotoServer) -> Iterator[FaultProxy]:
    # A new fault sequence each run (the seed is printed: a failure can be replayed with
    # MOVER_FAULT_SEED=seed).
    seed = int(os.environ.get("MOVER_FAULT_SEED") or int.from_bytes(os.urandom(4), "little"))
    print(f"fault proxy seed {seed}")
    p = FaultProxy(moto_server.port, rate=RATE, seed=seed)
    try:
        yield p
    finally:
        p.stop()


@pytest.mark.slow  # ~22 s on 2 cores: runs in CI (CI=true) and with -m slow
def test_backup_restore_replicate_at_5_percent_faults(
    moto_server: MotoServer, aws: dict[str, str], proxy: FaultProxy, tmp_path: Path
) -> None:
    via = ("--s3-endpoint", proxy.endpoint, *MULTIPART)
    source, target = moto_server.make_bucket(), moto_server.make_bucket()
    url, replica = f"s3://{source}/repo", f"s3://{target}/copy"
    image = write_image(tmp_path / "image.img", 31, 8 * MiB)
    with open(image, "ab") as f:  # incompressible data, so that some packs are multipart
        f.write(os.urandom(7 * MiB))
    ok(mover("init", "--repo", url, *via, *INIT_SMALL[:-2], "--pack-size", "7MiB"))
    snapshot = out_json(mover("backup", "--repo", url, *via, image, "--json"))

    restored = tmp_path / "restored.img"
    ok(mover("restore", "--repo", url, *via, "latest", restored))
    assert_same_file(image, restored)

    copied = out_json(
        mover(
            "replicate",
            "--repo",
            url,
            *via,
            "--to",
            replica,
            "--init-target",
            "--kdf-memory",
            "8MiB",
            "--checkpoint-interval",
            "0",
            "--json",
        )
    )
    assert copied["snapshots_copied"] == [snapshot["id"]]
    replica_restored = tmp_path / "replica.img"
    ok(mover("restore", "--repo", replica, *via, snapshot["id"], replica_restored))
    assert_same_file(image, replica_restored)
    assert out_json(mover("check", "--repo", replica, "--read-data", "--json"))["ok"]

    faults = {k: v for k, v in proxy.counts.items() if k != "requests"}
    assert sum(faults.values()) >= 5, proxy.counts  # the faults did happen
    # No multipart upload was left behind by the failed tries.
    for name in (source, target):
        assert not moto_server.client().list_multipart_uploads(Bucket=name).get("Uploads")
