"""Integration tests: the real `mover` command line in subprocesses, real repositories on disk.

Helpers are plain functions (import them from here); fixtures build repositories and images.
Every repository is created with `--kdf-memory 8MiB` so that opening one costs milliseconds.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from mover.tools.sampledata import SampleData

PASSWORD = "integration-test password"
MOVER = [sys.executable, "-m", "mover"]
MiB = 1 << 20
IMAGE_SIZE = 24 * MiB
IMAGE_SEED = 1  # SampleData(1)'s first 24 blocks hold text, binary, compressed and zero blocks
_MOVER_VARS = ("MOVER_PASSWORD", "MOVER_PASSWORD_FILE", "MOVER_REPOSITORY")


def mover_env(env: Mapping[str, str | None] | None = None) -> dict[str, str]:
    """The environment of a mover run: ours without any MOVER_* setting, plus MOVER_PASSWORD,
    then `env` on top (a value of None removes that variable)."""
    result = {k: v for k, v in os.environ.items() if k not in _MOVER_VARS}
    result["MOVER_PASSWORD"] = PASSWORD
    for key, value in (env or {}).items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = value
    return result


def mover(
    *args: str | os.PathLike[str],
    env: Mapping[str, str | None] | None = None,
    input: bytes | None = None,
    stdin: Any = None,
    timeout: float = 300,
) -> subprocess.CompletedProcess[bytes]:
    """Run `python -m mover ARGS`; stdout and stderr are captured as bytes. Without `input` or
    `stdin`, stdin is /dev/null (never a terminal)."""
    if input is None and stdin is None:
        stdin = subprocess.DEVNULL
    return subprocess.run(
        [*MOVER, *map(str, args)],
        env=mover_env(env),
        input=input,
        stdin=stdin,
        capture_output=True,
        timeout=timeout,
    )


def ok(proc: subprocess.CompletedProcess[bytes]) -> subprocess.CompletedProcess[bytes]:
    """Assert a run succeeded (showing its stderr if not) and return it."""
    assert proc.returncode == 0, (
        f"{proc.args[3:]} exited {proc.returncode}: {proc.stderr.decode(errors='replace')}"
    )
    return proc


def out_json(proc: subprocess.CompletedProcess[bytes]) -> Any:
    return json.loads(ok(proc).stdout)


def stderr_lines(proc: subprocess.CompletedProcess[bytes]) -> list[str]:
    return proc.stderr.decode(errors="replace").splitlines()


def assert_one_error_line(
    proc: subprocess.CompletedProcess[bytes], exit_code: int | None = None, starts: str = ""
) -> str:
    """A failed run that said exactly one line, `mover: error: ...`; returns that line."""
    lines = stderr_lines(proc)
    assert proc.returncode != 0, f"expected a failure, got exit 0; stdout {proc.stdout!r}"
    if exit_code is not None:
        assert proc.returncode == exit_code, (proc.returncode, lines)
    assert len(lines) == 1, f"expected one stderr line, got {lines}"
    assert lines[0].startswith("mover: error: " + starts), lines[0]
    assert proc.stdout == b"", f"a failed run printed to stdout: {proc.stdout!r}"
    return lines[0]


def init_repo(path: Path, *extra: str) -> Path:
    ok(mover("init", "--repo", path, "--kdf-memory", "8MiB", *extra))
    return path


def backup(repo: Path, source: str | os.PathLike[str], **kwargs: Any) -> dict[str, Any]:
    """`backup --json`: the new snapshot's public fields (id, tree, size, stats...)."""
    result: dict[str, Any] = out_json(mover("backup", "--repo", repo, source, "--json", **kwargs))
    return result


def restore(repo: Path, ref: str, target: Path, *extra: str) -> dict[str, Any]:
    result: dict[str, Any] = out_json(
        mover("restore", "--repo", repo, ref, target, "--json", *extra)
    )
    return result


def snapshot_list(repo: Path) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = out_json(mover("snapshots", "--repo", repo, "--json"))
    return result


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            h.update(block)
    return h.hexdigest()


def tree_state(root: Path) -> dict[str, str]:
    """Every entry under root (temp files and empty directories included): relative path ->
    sha256 of a file's bytes, or "<dir>". Equal states mean byte-identical trees."""
    state: dict[str, str] = {}
    for dirpath, dirs, files in os.walk(root):
        for d in dirs:
            state[os.path.relpath(os.path.join(dirpath, d), root)] = "<dir>"
        for name in files:
            path = Path(dirpath, name)
            state[os.path.relpath(path, root)] = file_digest(path)
    return state


def tree_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def pack_files(repo: Path) -> set[Path]:
    """Pack objects (not writers' temp files) under data/."""
    return {p for p in (repo / "data").rglob("*") if p.is_file() and not p.name.startswith(".")}


def assert_same_file(a: Path, b: Path) -> None:
    sa, sb = a.stat().st_size, b.stat().st_size
    assert sa == sb, f"{b} has {sb} bytes, {a} has {sa}"
    with open(a, "rb") as fa, open(b, "rb") as fb:
        offset = 0
        while True:
            x, y = fa.read(1 << 22), fb.read(1 << 22)
            if x != y:
                at = next(i for i in range(min(len(x), len(y))) if x[i] != y[i])
                raise AssertionError(f"{b} differs from {a} at byte {offset + at}")
            if not x:
                return
            offset += len(x)


class FailingFile:
    """A real file whose reads fail with EIO from the `fail_at`-th on, as a dying disk does;
    each read gives at most `read_size` bytes, so that the failure falls where a test wants."""

    def __init__(self, path: Path, fail_at: int, read_size: int) -> None:
        self.file = open(path, "rb", buffering=0)  # noqa: SIM115 -- closed by close()
        self.fail_at = fail_at
        self.read_size = read_size
        self.reads = 0

    def fileno(self) -> int:
        return self.file.fileno()

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self.file.seek(offset, whence)

    def readinto(self, buffer: Any) -> int | None:
        self.reads += 1
        if self.reads >= self.fail_at:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        return self.file.readinto(memoryview(buffer)[: self.read_size])

    def close(self) -> None:
        self.file.close()


def write_image(path: Path, seed: int, size: int) -> Path:
    with open(path, "wb") as f:
        for block in SampleData(seed).blocks(size):
            f.write(block)
    return path


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A fresh, empty repository with default chunking and pack size."""
    return init_repo(tmp_path / "repo")


@pytest.fixture(scope="session")
def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 MiB of SampleData with its realistic mix (text, binary, compressed, zeros). Shared by
    the whole session: tests must not modify it (copy it first)."""
    path = write_image(tmp_path_factory.mktemp("images") / "image-a.img", IMAGE_SEED, IMAGE_SIZE)
    path.chmod(0o444)
    return path
