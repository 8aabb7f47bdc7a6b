"""`mover app files`: single files out of a volume a Backup stored, without restoring it and
without making anything in the cluster, run as a user runs it (the command in a subprocess,
the cluster named by a kubeconfig, the repository read with the Repository's Secret)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from mover_k8s import api

from .conftest import Env, deploy_app, volume_path, write_app_data
from .test_cli import as_json, mover

MKE2FS = shutil.which("mke2fs") or next(
    (p for p in ("/usr/sbin/mke2fs", "/sbin/mke2fs") if os.path.exists(p)), None
)
pytestmark = pytest.mark.skipif(
    MKE2FS is None and not os.environ.get("CI"), reason="mke2fs (e2fsprogs) is not installed"
)


def test_files_of_a_backed_up_volume_are_listed_and_copied(env: Env, tmp_path: Path) -> None:
    deploy_app(env.kube, "shop")
    write_app_data(env.kube, "shop")
    src = tmp_path / "src"
    (src / "orders").mkdir(parents=True)
    (src / "orders" / "2026-12.csv").write_text("id,total\n1,20\n")
    assert MKE2FS is not None
    subprocess.run(
        [
            MKE2FS,
            "-q",
            "-F",
            "-t",
            "ext4",
            "-d",
            str(src),
            str(volume_path(env.kube, "shop", "data-a")),
        ],
        check=True,
        capture_output=True,
    )
    with env.running():
        done = as_json(
            mover(
                env,
                tmp_path,
                "app",
                "backup",
                "nightly",
                "--include-namespace",
                "shop",
                "--wait",
                "--json",
            )
        )
    assert done["phase"] == "Completed"
    pods_before = env.kube.list(api.POD)
    listed = as_json(
        mover(
            env, tmp_path, "app", "files", "nightly", "--volume", "shop/data-a", "/orders", "--json"
        )
    )
    assert [(f["path"], f["size"]) for f in listed["files"]] == [("/orders/2026-12.csv", 14)]
    out = tmp_path / "out"
    out.mkdir()
    copied = mover(
        env,
        tmp_path,
        "app",
        "files",
        "nightly",
        "--volume",
        "shop/data-a",
        "/orders",
        "--to",
        str(out),
    )
    assert copied.returncode == 0, copied.stderr
    assert "1 file" in copied.stdout
    assert (out / "orders" / "2026-12.csv").read_text() == "id,total\n1,20\n"
    assert env.kube.list(api.POD) == pods_before  # nothing was made in the cluster

    # Bad input: one line each, nothing written.
    wrong = mover(env, tmp_path, "app", "files", "nightly", "--volume", "shop/nope")
    assert wrong.returncode != 0 and wrong.stdout == ""
    assert wrong.stderr.strip().splitlines() == [
        "mover: error: Backup nightly has no such volume (shop/nope); its volumes: "
        "shop/data-a, shop/data-b"
    ]
    missing = mover(env, tmp_path, "app", "files", "weekly", "--volume", "shop/data-a")
    assert missing.returncode != 0
    assert "no Backup mover-system/weekly" in missing.stderr
    not_ext = mover(env, tmp_path, "app", "files", "nightly", "--volume", "shop/data-b")
    assert not_ext.returncode != 0
    assert "not an ext2/3/4 file system" in not_ext.stderr
