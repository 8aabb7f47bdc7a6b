"""Run a step as child processes and measure it: wall, user+sys CPU and peak RSS (os.wait4), and
the bytes the repository grew by.

Linux carries a parent's peak RSS into its children's ru_maxrss (fork + exec keeps the high-water
mark), so this process stays small: datasets are built in a helper process and restores are
compared with `cmp`. Its own peak is reported as the floor under every RSS figure.
"""

from __future__ import annotations

import shlex
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.child import run_child, tree_bytes

STEPS = ("init", "backup day 1", "backup day 2", "restore day 2", "backup unchanged")
# mover only, on volume images (day 1 and day 2 of one size): day 2 again, from a copy of the
# repository as it was after day 1, reading only the 4 KiB blocks that differ from day 1 (what a
# CSI driver's changed block tracking would list), compared with each peer's full day 2.
CHANGED_STEP = "backup day 2, changed blocks"


@dataclass
class Command:
    """One child process. stdin/stdout name files (the shell's `< file` / `> file`)."""

    argv: list[str]
    env: dict[str, str]
    stdin: Path | None = None
    stdout: Path | None = None  # None: captured to the step's log (and parsed as its output)
    cwd: Path | None = None

    def shell(self) -> str:
        text = shlex.join(self.argv)
        if self.stdin is not None:
            text += f" < {shlex.quote(str(self.stdin))}"
        if self.stdout is not None:
            text += f" > {shlex.quote(str(self.stdout))}"
        return text


@dataclass
class Step:
    name: str
    source_bytes: int
    wall_s: float
    user_s: float
    sys_s: float
    max_rss_mib: float
    repo_added: int
    commands: list[str]
    output: Any = field(default=None, repr=False)  # the last command's parsed stdout

    @property
    def cpu_s(self) -> float:
        return self.user_s + self.sys_s

    @property
    def mb_per_s(self) -> float | None:
        return self.source_bytes / self.wall_s / 1e6 if self.source_bytes else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "source_bytes": self.source_bytes,
            "wall_s": self.wall_s,
            "mb_per_s": self.mb_per_s,
            "user_s": self.user_s,
            "sys_s": self.sys_s,
            "cpu_s": self.cpu_s,
            "max_rss_mib": self.max_rss_mib,
            "repo_added": self.repo_added,
            "commands": self.commands,
            "output": self.output,
        }


class StepFailed(Exception):
    """A command of a step exited non-zero; the message holds the command and its stderr."""


def run_step(
    name: str,
    commands: list[Command],
    repo: Path,
    source_bytes: int,
    logs: Path,
    parse: Any = None,
) -> Step:
    """Run `commands` one after the other; wall, CPU and bytes are summed, peak RSS is the max.

    `parse(text)` turns the last captured stdout into the step's output.
    """
    logs.mkdir(parents=True, exist_ok=True)
    slug = name.replace(" ", "_")
    before = tree_bytes(repo)
    wall = user = system = 0.0
    max_rss_kib = 0
    captured = ""
    for index, command in enumerate(commands):
        out_path = command.stdout or logs / f"{slug}.{index}.out"
        err_path = logs / f"{slug}.{index}.err"
        stdin = open(command.stdin, "rb") if command.stdin else subprocess.DEVNULL  # noqa: SIM115
        try:
            with open(out_path, "wb") as out, open(err_path, "wb") as err:
                child = run_child(command.argv, out, err, command.env, stdin, command.cwd)
        finally:
            if not isinstance(stdin, int):
                stdin.close()
        wall += child.wall_s
        user += child.user_s
        system += child.sys_s
        max_rss_kib = max(max_rss_kib, child.max_rss_kib)
        if child.returncode != 0:
            tail = err_path.read_text(errors="replace")[-4000:]
            raise StepFailed(
                f"step {name!r}: `{command.shell()}` exited {child.returncode}\n{tail}"
            )
        if command.stdout is None:
            captured = out_path.read_text(errors="replace")
    output = parse(captured) if parse is not None and captured.strip() else None
    return Step(
        name=name,
        source_bytes=source_bytes,
        wall_s=wall,
        user_s=user,
        sys_s=system,
        max_rss_mib=max_rss_kib / 1024,
        repo_added=tree_bytes(repo) - before,
        commands=[c.shell() for c in commands],
        output=output,
    )


def compare(expected: Path, actual: Path) -> str | None:
    """None if the files are identical, else what differs (cmp's own words)."""
    proc = subprocess.run(["cmp", str(expected), str(actual)], capture_output=True, text=True)
    if proc.returncode == 0:
        return None
    return (proc.stdout + proc.stderr).strip() or f"cmp exited {proc.returncode}"
