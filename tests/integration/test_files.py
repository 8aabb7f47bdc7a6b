"""`mover files`: single files out of a backed-up ext4 volume, without restoring it, run as a
user runs it (the command in a subprocess, a real repository on disk). The image is built by
e2fsprogs' mke2fs from a directory; what is listed and copied is compared with that directory,
and every bad input is one line with nothing written."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.integration.conftest import (
    assert_one_error_line,
    backup,
    init_repo,
    mover,
    ok,
    out_json,
)

MKE2FS = shutil.which("mke2fs") or next(
    (p for p in ("/usr/sbin/mke2fs", "/sbin/mke2fs") if os.path.exists(p)), None
)
pytestmark = pytest.mark.skipif(
    MKE2FS is None and not os.environ.get("CI"), reason="mke2fs (e2fsprogs) is not installed"
)


@pytest.fixture
def stored(tmp_path: Path) -> tuple[Path, Path, str]:
    """(the repository, the source directory, the snapshot id) of an ext4 volume image."""
    src = tmp_path / "src"
    (src / "etc" / "app").mkdir(parents=True)
    (src / "etc" / "app" / "app.conf").write_text("listen = 8080\n")
    (src / "var" / "lib").mkdir(parents=True)
    (src / "var" / "lib" / "db.bin").write_bytes(random.Random(4).randbytes(300_000))
    os.symlink("../etc/app/app.conf", src / "var" / "conf-link")
    image = tmp_path / "volume.img"
    assert MKE2FS is not None
    subprocess.run(
        [MKE2FS, "-q", "-t", "ext4", "-d", str(src), str(image), "16M"],
        check=True,
        capture_output=True,
    )
    repo = init_repo(tmp_path / "repo")
    return repo, src, backup(repo, image)["id"]


def test_list_and_copy_files_of_a_snapshot(stored: tuple[Path, Path, str], tmp_path: Path) -> None:
    repo, src, snapshot = stored
    listed = ok(mover("files", "--repo", repo, snapshot[:8], "/etc/app")).stdout.decode()
    (line,) = listed.splitlines()
    assert line.startswith("-rw-r--r--") and line.split()[1] == "14"
    assert line.endswith(" /etc/app/app.conf")
    found = out_json(mover("files", "--repo", repo, "latest", "-R", "--json"))
    paths = {f["path"]: f for f in found["files"]}
    assert paths["/var/lib/db.bin"]["size"] == 300_000
    assert paths["/var/conf-link"]["kind"] == "symlink"
    assert paths["/etc"]["kind"] == "dir"
    assert found["snapshot"] == snapshot

    out = tmp_path / "out"
    out.mkdir()
    copied = out_json(
        mover("files", "--repo", repo, "latest", "/etc/app/app.conf", "/var", "--to", out, "--json")
    )
    assert copied["copied"] == [
        {"path": "/etc/app/app.conf", "files": 1, "bytes": 14},
        {"path": "/var", "files": 1, "bytes": 300_000},
    ]
    assert (out / "app.conf").read_text() == "listen = 8080\n"
    assert (out / "var" / "lib" / "db.bin").read_bytes() == (src / "var/lib/db.bin").read_bytes()
    assert os.readlink(out / "var" / "conf-link") == "../etc/app/app.conf"


def test_bad_input_is_one_line_and_writes_nothing(
    stored: tuple[Path, Path, str], tmp_path: Path
) -> None:
    repo, _, _ = stored
    line = assert_one_error_line(mover("files", "--repo", repo, "latest", "/etc/nope"))
    assert "/etc/nope: no such file or directory" in line
    out = tmp_path / "out"
    out.mkdir()
    (out / "app.conf").write_text("mine")
    line = assert_one_error_line(
        mover("files", "--repo", repo, "latest", "/etc/app/app.conf", "--to", out)
    )
    assert "exists already" in line
    assert (out / "app.conf").read_text() == "mine"
    line = assert_one_error_line(
        mover("files", "--repo", repo, "latest", "/etc", "--to", tmp_path / "missing")
    )
    assert "not a directory" in line
    # A snapshot whose volume holds no ext file system.
    noise = tmp_path / "noise"
    noise.write_bytes(random.Random(2).randbytes(1 << 20))
    other = backup(repo, noise)["id"]
    line = assert_one_error_line(mover("files", "--repo", repo, other[:8]))
    assert "not an ext2/3/4 file system" in line
    line = assert_one_error_line(mover("files", "--repo", repo, "ffff0000"))
    assert "ffff0000" in line
