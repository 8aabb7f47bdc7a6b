"""`mover replicate`: local -> S3 -> S3, interrupted by SIGKILL and resumed, verified bit for
bit by restoring from the last replica."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.integration.conftest import (
    MOVER,
    assert_one_error_line,
    assert_same_file,
    init_repo,
    mover,
    mover_env,
    ok,
    out_json,
    write_image,
)
from tests.s3.conftest import INIT_SMALL, MiB
from tests.s3.server import MotoServer

TARGET_PASSWORD = {"MOVER_TARGET_PASSWORD": "the second region's password"}


@pytest.mark.slow  # several seconds: runs in CI (CI=true) and with -m slow
def test_local_to_s3_to_s3_interrupted_and_resumed(
    moto_server: MotoServer, aws: dict[str, str], tmp_path: Path
) -> None:
    local = init_repo(tmp_path / "local", *INIT_SMALL[2:])
    image = write_image(tmp_path / "v1.img", 11, 8 * MiB)
    first = out_json(mover("backup", "--repo", local, image, "--json"))
    region_a, region_b = moto_server.make_bucket(), moto_server.make_bucket()
    url_a, url_b = f"s3://{region_a}/replica", f"s3://{region_b}/dr"

    # Slowed down to 2 MB/s and a checkpoint after every pack, then killed once two index
    # files (two checkpoints) have arrived.
    args = ["replicate", "--repo", str(local), "--to", url_a, "--init-target"]
    args += ["--kdf-memory", "8MiB", "--limit-upload", "2MB", "--checkpoint-interval", "0"]
    proc = subprocess.Popen(
        [*MOVER, *args],
        env=mover_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    try:
        while len(moto_server.keys(region_a, "replica/index/")) < 2:
            assert proc.poll() is None, f"replicate ended early: {proc.stderr.read()!r}"  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "no checkpoint in 60 s"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert proc.stderr is not None
        proc.stderr.close()
    assert not moto_server.keys(region_a, "replica/snapshots/")

    resumed = out_json(mover("replicate", "--repo", local, "--to", url_a, "--json"))
    assert resumed["snapshots_copied"] == [first["id"]]
    assert resumed["chunks_skipped"] > 0, resumed  # what arrived before the kill is not resent
    again = out_json(mover("replicate", "--repo", local, "--to", url_a, "--json"))
    assert again["snapshots_copied"] == [] and again["snapshots_present"] == [first["id"]]
    assert again["bytes_sent"] == 0

    # An incremental snapshot: only its new chunks travel.
    changed = tmp_path / "v2.img"
    shutil.copyfile(image, changed)
    with open(changed, "r+b") as f:
        f.seek(3 * MiB)
        f.write(os.urandom(256 << 10))
    second = out_json(mover("backup", "--repo", local, changed, "--json"))
    incremental = out_json(mover("replicate", "--repo", local, "--to", url_a, "--json"))
    assert incremental["snapshots_copied"] == [second["id"]]
    assert incremental["blob_bytes_sent"] <= 2 * second["stats"]["stored_bytes"] + 64 * 1024

    # S3 -> S3, another password; then restore from the last replica, bit for bit.
    ok(
        mover(
            "replicate",
            "--repo",
            url_a,
            "--to",
            url_b,
            "--init-target",
            "--kdf-memory",
            "8MiB",
            env=TARGET_PASSWORD,
        )
    )
    target_env = {"MOVER_PASSWORD": TARGET_PASSWORD["MOVER_TARGET_PASSWORD"]}
    listed = out_json(mover("snapshots", "--repo", url_b, "--json", env=target_env))
    assert [(s["id"], s["tree"]) for s in listed] == [
        (first["id"], first["tree"]),
        (second["id"], second["tree"]),
    ]
    for snapshot, source in ((first, image), (second, changed)):
        restored = tmp_path / f"restored-{snapshot['id'][:8]}.img"
        out_json(
            mover("restore", "--repo", url_b, snapshot["id"], restored, "--json", env=target_env)
        )
        assert_same_file(source, restored)
    check = out_json(mover("check", "--repo", url_b, "--read-data", "--json", env=target_env))
    assert check["ok"]

    # A backup made directly into the replica deduplicates against what was replicated.
    direct = out_json(mover("backup", "--repo", url_b, changed, "--json", env=target_env))
    assert direct["stats"]["new_bytes"] == 0


@pytest.mark.slow  # several seconds: runs in CI (CI=true) and with -m slow
def test_replicate_selected_snapshots_and_refusals(
    aws: dict[str, str], bucket: str, tmp_path: Path
) -> None:
    local = init_repo(tmp_path / "local", *INIT_SMALL[2:])
    a = out_json(mover("backup", "--repo", local, write_image(tmp_path / "a", 21, MiB), "--json"))
    b = out_json(mover("backup", "--repo", local, write_image(tmp_path / "b", 22, MiB), "--json"))
    url = f"s3://{bucket}/r"

    missing = assert_one_error_line(mover("replicate", "--repo", local, "--to", url), exit_code=1)
    assert "pass --init-target" in missing
    copied = out_json(
        mover(
            "replicate",
            "--repo",
            local,
            "--to",
            url,
            b["id"][:8],
            "--init-target",
            "--kdf-memory",
            "8MiB",
            "--json",
        )
    )
    assert copied["snapshots_copied"] == [b["id"]] and copied["target_created"]
    listed = out_json(mover("snapshots", "--repo", url, "--json"))
    assert [s["id"] for s in listed] == [b["id"]]
    rest = out_json(mover("replicate", "--repo", local, "--to", url, "--json"))
    assert rest["snapshots_copied"] == [a["id"]]

    other = init_repo(tmp_path / "other")
    line = assert_one_error_line(mover("replicate", "--repo", local, "--to", other), exit_code=1)
    assert "other keys" in line
    line = assert_one_error_line(
        mover("replicate", "--repo", local, "--to", url, env={"MOVER_TARGET_PASSWORD": "wrong"}),
        exit_code=1,
    )
    assert "wrong password for the target" in line
