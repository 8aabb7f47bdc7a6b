"""The `mover` command's verbs, loaded when named, and its plugin command groups."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import click

from mover.cli.main import BUILTIN, cli

MOVER = [sys.executable, "-m", "mover"]
VERBS = {"init", "backup", "restore", "snapshots", "check", "forget", "prune", "stats"}
VERBS |= {"benchmark", "replicate", "locks", "unlock", "repair", "key", "mount", "files"}


def test_every_verb_loads_under_its_name() -> None:
    assert set(BUILTIN) == VERBS
    ctx = click.Context(cli, info_name="mover")
    for name in VERBS:
        command = cli.get_command(ctx, name)
        assert isinstance(command, click.Command), name
        assert command.name in (name, f"{name}_cmd", name.replace("_", "-")), name
    assert cli.get_command(ctx, "no-such-verb") is None


def test_help_lists_the_verbs_and_the_kubernetes_groups() -> None:
    proc = subprocess.run([*MOVER, "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    listed = {line.split()[0] for line in proc.stdout.split("Commands:")[1].splitlines() if line}
    assert VERBS | {"app", "agent"} <= listed


def test_a_broken_plugin_is_named_and_the_verbs_still_work(tmp_path: Path) -> None:
    """A distribution whose `mover.commands` entry point cannot be imported."""
    info = tmp_path / "broken_plugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[mover.commands]\nbroken = no_such_module_xyz:cli\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}

    proc = subprocess.run([*MOVER, "broken"], capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 2
    assert "cannot load command group 'broken' (no_such_module_xyz:cli)" in proc.stderr

    proc = subprocess.run(
        [*MOVER, "backup", "--help"], capture_output=True, text=True, timeout=60, env=env
    )
    assert proc.returncode == 0, proc.stderr
    assert "broken" not in proc.stderr  # a verb of mover's own never looks at plugins
