"""Running `mover mount` in tests: whether FUSE mounts work on this machine (skip with the
reason when they cannot), and a context manager that mounts in a subprocess, waits for the
mount to be live, and unmounts it afterwards whatever happened."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import selectors
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import MOVER, mover_env

MOUNT_TIMEOUT = 60.0

# A file system of one directory, mounted by the binding mover uses: if this cannot mount, no
# `mover mount` can, and the tests say why instead of failing on the machine's limits.
_PROBE = """
import sys, mfusepy
from mover.mount import fuse_options
class Probe:
    use_ns = True
    def getattr(self, path, fh=None):
        if path != "/":
            raise OSError(2, "no such file")
        return {"st_mode": 0o40555, "st_nlink": 2}
    def readdir(self, path, fh):
        return [".", ".."]
mfusepy.FUSE(Probe(), sys.argv[1], **fuse_options(mfusepy, False))
"""


def fusermount() -> str | None:
    return shutil.which("fusermount3")


def binding_unavailable() -> str | None:
    """Why the FUSE binding cannot load (not installed, no libfuse), or None."""
    try:
        import mfusepy  # noqa: F401  # type: ignore[import-untyped, unused-ignore]
    except (ImportError, OSError, AttributeError) as exc:
        return f"the mfusepy binding with libfuse 3 ({exc})"
    return None


@functools.cache
def fuse_unavailable() -> str | None:
    """Why FUSE mounts cannot run here, or None when they can (probed once per process)."""
    if not os.path.exists("/dev/fuse"):
        return "no /dev/fuse on this machine (in a container: --device /dev/fuse)"
    if not os.access("/dev/fuse", os.R_OK | os.W_OK):
        return "/dev/fuse is not usable by this user"
    missing = []
    if fusermount() is None:
        missing.append("fusermount3 (Debian: fuse3)")
    binding = binding_unavailable()
    if binding is not None:
        missing.append(binding)
    if missing:
        reason = "not installed: " + ", ".join(missing)
        if os.environ.get("CI"):  # .ci/run installs them: a missing one is a broken CI setup
            pytest.fail(f"FUSE tests cannot run in CI: {reason}")
        return reason
    with tempfile.TemporaryDirectory(prefix="mover-fuse-probe-") as where:
        proc = subprocess.Popen(
            [sys.executable, "-c", _PROBE, where],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            deadline = time.monotonic() + MOUNT_TIMEOUT
            while not os.path.ismount(where):
                if proc.poll() is not None:
                    stderr = proc.stderr.read().decode(errors="replace").strip()  # type: ignore[union-attr]
                    return f"mounting FUSE is not permitted here: {stderr or proc.returncode}"
                if time.monotonic() > deadline:
                    return "a FUSE mount did not come up within a minute"
                time.sleep(0.02)
            return None
        finally:
            unmount(where)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=30)
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            assert proc.stderr is not None
            proc.stderr.close()


def needs_fuse() -> None:
    reason = fuse_unavailable()
    if reason is not None:
        pytest.skip(f"FUSE: {reason}")


def unmount(mountpoint: str | os.PathLike[str]) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [fusermount() or "fusermount3", "-u", str(mountpoint)], capture_output=True, timeout=60
    )


def is_mounted(path: Path) -> bool:
    """A live or dead (its process gone) mount at path."""
    try:
        return os.path.ismount(path)
    except OSError:
        return True


class Mount:
    """A running `mover mount --json`: its process, and the JSON line it printed once live."""

    def __init__(self, proc: subprocess.Popen[bytes], info: dict[str, Any], path: Path) -> None:
        self.proc = proc
        self.info = info
        self.path = path

    def stop(self) -> tuple[int, str]:
        """Unmount with fusermount3 -u; (exit code, stderr) of the mount process."""
        done = unmount(self.path)
        assert done.returncode == 0, done.stderr
        return self.wait()

    def wait(self) -> tuple[int, str]:
        _, err = self.proc.communicate(timeout=60)
        return self.proc.returncode, err.decode(errors="replace")


@contextlib.contextmanager
def mounted(
    repo: str | os.PathLike[str], mountpoint: Path, *extra: str, env: dict[str, str] | None = None
) -> Iterator[Mount]:
    """`mover mount --repo REPO MOUNTPOINT --json EXTRA` in a subprocess, yielded once the mount
    is live; unmounted and waited for afterwards (if the test did not already)."""
    proc = subprocess.Popen(
        [*MOVER, "mount", "--repo", str(repo), str(mountpoint), "--json", *extra],
        env=mover_env(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(proc.stdout, selectors.EVENT_READ)
            if not selector.select(MOUNT_TIMEOUT):
                raise AssertionError("mover mount printed nothing within a minute")
        line = proc.stdout.readline()
        if not line:
            _, err = proc.communicate(timeout=60)
            raise AssertionError(f"mover mount exited {proc.returncode}: {err.decode()}")
        info = json.loads(line)
        assert is_mounted(mountpoint)
        yield Mount(proc, info, mountpoint)
    finally:
        if is_mounted(mountpoint):
            unmount(mountpoint)
        if proc.poll() is None:
            try:
                proc.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None and not stream.closed:
                stream.close()
