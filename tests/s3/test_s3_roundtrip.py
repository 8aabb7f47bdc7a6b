"""Backup and restore on S3 through the command line, bit for bit, multipart included."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.integration.conftest import (
    assert_same_file,
    init_repo,
    mover,
    ok,
    out_json,
)
from tests.s3.conftest import INIT_SMALL, MULTIPART, MiB
from tests.s3.server import MotoServer


@pytest.mark.slow  # several seconds: runs in CI (CI=true) and with -m slow
def test_round_trip_bit_exact_with_multipart(
    moto_server: MotoServer, bucket: str, small_image: Path, tmp_path: Path
) -> None:
    url = f"s3://{bucket}/backups/app"
    image = tmp_path / "image.img"
    with open(image, "wb") as f:  # incompressible, so that packs fill up, and a hole
        f.write(small_image.read_bytes() + os.urandom(6 * MiB) + bytes(MiB))
    # Packs of 7 MiB over a 6 MiB threshold in 5 MiB parts: full packs go in 2 parts.
    ok(mover("init", "--repo", url, *INIT_SMALL[:-2], "--pack-size", "7MiB"))
    keys = moto_server.keys(bucket)
    assert sorted(k.split("/")[2] for k in keys) == ["config", "keys"], keys
    first = out_json(mover("backup", "--repo", url, *MULTIPART, image, "--json"))
    client = moto_server.client()
    etags = [
        client.head_object(Bucket=bucket, Key=k)["ETag"]
        for k in moto_server.keys(bucket, "backups/app/data/")
    ]
    assert any("-" in e for e in etags), f"no multipart pack among {etags}"
    assert all(k.startswith("backups/app/") for k in moto_server.keys(bucket))

    restored = tmp_path / "restored.img"
    out_json(mover("restore", "--repo", url, "latest", restored, "--json"))
    assert_same_file(image, restored)
    check = out_json(mover("check", "--repo", url, "--read-data", "--json"))
    assert check["ok"] and check["snapshots"] == 1

    # The same data again: nothing new is stored; MOVER_REPOSITORY works as --repo does.
    second = out_json(mover("backup", image, "--json", env={"MOVER_REPOSITORY": url}))
    assert second["stats"]["new_bytes"] == 0
    assert second["tree"] == first["tree"]
    listed = out_json(mover("snapshots", "--json", env={"MOVER_REPOSITORY": url}))
    assert [s["id"] for s in listed] == [first["id"], second["id"]]
    stats = out_json(mover("stats", "--repo", url, "--json"))
    assert stats["snapshots"] == 2


@pytest.mark.slow  # several seconds: runs in CI (CI=true) and with -m slow
def test_forget_and_prune_on_s3(bucket: str, small_image: Path, tmp_path: Path) -> None:
    url = f"s3://{bucket}/p"
    init_repo(url, *INIT_SMALL[2:])  # type: ignore[arg-type]
    snap = out_json(mover("backup", "--repo", url, small_image, "--json"))
    ok(mover("forget", "--repo", url, snap["id"]))
    pruned = out_json(mover("prune", "--repo", url, "--unindexed-grace", "0", "--json"))
    assert pruned["packs_deleted"] > 0 and pruned["locked"] == 0
    assert out_json(mover("stats", "--repo", url, "--json"))["packs"] == 0


def test_init_refuses_an_existing_repository(bucket: str) -> None:
    url = f"s3://{bucket}/twice"
    ok(mover("init", "--repo", url, "--kdf-memory", "8MiB"))
    again = mover("init", "--repo", url, "--kdf-memory", "8MiB")
    assert again.returncode == 1
    assert b"already holds a repository" in again.stderr
