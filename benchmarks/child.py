"""Measuring a command in a child process: wall, user+sys CPU and peak RSS (os.wait4, which
reports the child's own figures, not the parent's), and the bytes a directory holds."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any


@dataclass(frozen=True)
class ChildRun:
    returncode: int
    wall_s: float
    user_s: float
    sys_s: float
    max_rss_kib: int  # KiB on Linux


def run_child(
    argv: list[str],
    stdout: IO[Any],
    stderr: IO[Any],
    env: dict[str, str] | None = None,
    stdin: IO[Any] | int = subprocess.DEVNULL,
    cwd: Path | None = None,
) -> ChildRun:
    start = time.perf_counter()
    child = subprocess.Popen(argv, stdin=stdin, stdout=stdout, stderr=stderr, env=env, cwd=cwd)
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)  # wait4 reaped it
    return ChildRun(child.returncode, wall, usage.ru_utime, usage.ru_stime, usage.ru_maxrss)


def tree_bytes(root: Path) -> int:
    """Apparent size of every file under root (0 if it does not exist)."""
    total = 0
    for directory, _, names in os.walk(root):
        for name in names:
            with contextlib.suppress(FileNotFoundError):
                total += os.lstat(os.path.join(directory, name)).st_size
    return total
