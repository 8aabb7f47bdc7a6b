"""Backup from and restore to real block devices (loop devices over files)."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mover.tools.sampledata import SampleData

MIB = 1 << 20


def _loop_available() -> str | None:
    if os.geteuid() != 0 or shutil.which("losetup") is None:
        return "needs root and losetup"
    if not Path("/dev/loop-control").exists():
        return "no /dev/loop-control"
    return None


pytestmark = pytest.mark.skipif(_loop_available() is not None, reason=str(_loop_available()))


@pytest.fixture
def loop_device(tmp_path: Path) -> Iterator[object]:
    attached: list[str] = []

    def attach(backing: Path) -> str:
        dev = subprocess.run(
            ["losetup", "--find", "--show", str(backing)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        attached.append(dev)
        return dev

    yield attach
    for dev in attached:
        subprocess.run(["losetup", "--detach", dev], check=False)


def mover(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mover", *args], capture_output=True, text=True, env=env
    )


def sha(path: str | Path, size: int | None = None) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        left = size
        while left is None or left > 0:
            block = f.read(MIB if left is None else min(MIB, left))
            if not block:
                break
            digest.update(block)
            if left is not None:
                left -= len(block)
    return digest.hexdigest()


def test_device_backup_and_restores(tmp_path: Path, loop_device) -> None:  # type: ignore[no-untyped-def]
    env = {**os.environ, "MOVER_PASSWORD": "pw", "MOVER_REPOSITORY": str(tmp_path / "repo")}
    assert mover("init", "--kdf-memory", "8MiB", env=env).returncode == 0

    # Source device: sample data with a zero region in the middle.
    source_file = tmp_path / "source.img"
    data = SampleData(21).generate(12 * MIB)
    source_file.write_bytes(data[: 6 * MIB] + bytes(8 * MIB) + data[6 * MIB :])
    source = loop_device(source_file)
    size = source_file.stat().st_size

    backup = mover("backup", source, "--json", env=env)
    assert backup.returncode == 0, backup.stderr
    assert '"zero_bytes"' in backup.stdout

    # Restore to a regular file: bit-exact.
    out = tmp_path / "restored.img"
    assert mover("restore", "latest", str(out), env=env).returncode == 0
    assert sha(out) == sha(source_file)

    # Restore to a larger device full of old data: the volume's bytes, zeros included, are
    # written (holes cannot be left unwritten on a device); the rest is untouched.
    target_file = tmp_path / "target.img"
    target_file.write_bytes(b"\xa5" * (size + 2 * MIB))
    target = loop_device(target_file)
    proc = mover("restore", "latest", target, env=env)
    assert proc.returncode == 0, proc.stderr
    assert sha(target, size) == sha(source_file)
    with open(target, "rb") as f:
        f.seek(size)
        assert f.read() == b"\xa5" * (2 * MIB)

    # Restore to a device that is too small: one line, non-zero, device unchanged.
    small_file = tmp_path / "small.img"
    small_file.write_bytes(b"\x5a" * (size - MIB))
    small = loop_device(small_file)
    before = sha(small)
    proc = mover("restore", "latest", small, env=env)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "too small" in lines[0]
    assert sha(small) == before
