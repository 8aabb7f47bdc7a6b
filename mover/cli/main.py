"""The `mover` command: verbs, and the one place errors become exit codes.

Exit codes: 0 success; 1 a mover error (repository, data, I/O); 2 bad usage or input;
3 the native core is missing or unsupported; 130 interrupted.
"""

from __future__ import annotations

import sys
from importlib.metadata import entry_points

import click

from mover import __version__
from mover.cli.benchmark import benchmark
from mover.cli.locks_cmd import locks
from mover.cli.output import error_line
from mover.cli.replicate_cmd import replicate_cmd
from mover.cli.repo_cmds import backup, check, forget, init, prune, restore, snapshots, stats
from mover.errors import MoverError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mover")
def cli() -> None:
    """mover: fast, deduplicating, encrypted backup of volumes."""


for command in (init, backup, restore, snapshots, check, forget, prune, stats, benchmark):
    cli.add_command(command)
cli.add_command(replicate_cmd)
cli.add_command(locks)


def _add_plugin_commands() -> None:
    """Command groups registered under the `mover.commands` entry point (e.g. `mover app` and
    `mover agent` from the Kubernetes side): mover never imports them by name, so it does not
    depend on what they depend on. A plugin that fails to load is named, not fatal: the data
    path's commands must keep working."""
    for entry in entry_points(group="mover.commands"):
        if entry.name in cli.commands:
            continue
        try:
            command = entry.load()
        except Exception as exc:  # any import failure of a plugin; mover itself must still run
            error_line(f"cannot load command group {entry.name!r} ({entry.value}): {exc}")
            continue
        if isinstance(command, click.Command):
            cli.add_command(command, entry.name)


_add_plugin_commands()


def main(argv: list[str] | None = None) -> int:
    try:
        cli.main(args=argv, prog_name="mover", standalone_mode=False)
    except MoverError as exc:
        error_line(str(exc))
        return exc.exit_code
    except click.exceptions.Abort:
        error_line("interrupted")
        return 130
    except click.ClickException as exc:
        error_line(exc.format_message())
        return 2
    except KeyboardInterrupt:
        error_line("interrupted")
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
