"""The `mover` command: verbs, and the one place errors become exit codes.

Exit codes: 0 success; 1 a mover error (repository, data, I/O); 2 bad usage or input;
3 the native core is missing or unsupported; 130 interrupted.
"""

from __future__ import annotations

import importlib
import os
import sys

import click

from mover import __version__
from mover.cli.options import GLOBAL_JSON, password_options
from mover.cli.output import error_line
from mover.errors import MoverError

# Each verb's module is imported only when that verb runs (or for --help): start-up is a fixed
# cost of every command, and on a volume of data already stored it is a large share of a
# backup's time (measured: importing every verb's module took ~130 ms of a ~0.4 s run).
BUILTIN = {
    "init": ("mover.cli.init_cmd", "init"),
    "backup": ("mover.cli.backup_cmd", "backup"),
    "restore": ("mover.cli.restore_cmd", "restore"),
    "snapshots": ("mover.cli.snapshots_cmd", "snapshots"),
    "check": ("mover.cli.check_cmd", "check"),
    "forget": ("mover.cli.forget_cmd", "forget"),
    "prune": ("mover.cli.forget_cmd", "prune"),
    "stats": ("mover.cli.snapshots_cmd", "stats"),
    "benchmark": ("mover.cli.benchmark", "benchmark"),
    "replicate": ("mover.cli.replicate_cmd", "replicate_cmd"),
    "locks": ("mover.cli.locks_cmd", "locks"),
    "unlock": ("mover.cli.locks_cmd", "unlock"),
    "key": ("mover.cli.key_cmd", "key"),
    "repair": ("mover.cli.repair_cmd", "repair"),
    "mount": ("mover.cli.mount_cmd", "mount"),
    "files": ("mover.cli.files_cmd", "files"),
}
PLUGIN_GROUP = "mover.commands"


class _Verbs(click.Group):
    """mover's verbs, loaded when named, and the command groups registered under the
    `mover.commands` entry point (e.g. `mover app` and `mover agent` from the Kubernetes side):
    mover never imports those by name, so it does not depend on what they depend on. A plugin
    that fails to load is named, not fatal: the data path's commands must keep working."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*BUILTIN, *(entry.name for entry in _plugins())})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in BUILTIN:
            module, attribute = BUILTIN[cmd_name]
            command: click.Command = getattr(importlib.import_module(module), attribute)
            return command
        for entry in _plugins():
            if entry.name != cmd_name:
                continue
            try:
                loaded = entry.load()
            except Exception as exc:  # any import failure of a plugin; mover itself must run
                error_line(f"cannot load command group {entry.name!r} ({entry.value}): {exc}")
                return None
            return loaded if isinstance(loaded, click.Command) else None
        return None


def _plugins() -> list[importlib.metadata.EntryPoint]:
    import importlib.metadata  # ~15 ms: only when a name is not one of mover's own verbs

    return [e for e in importlib.metadata.entry_points(group=PLUGIN_GROUP) if e.name not in BUILTIN]


def _global_repo(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    if value is not None:  # each verb's --repo reads MOVER_REPOSITORY; its own --repo wins
        os.environ["MOVER_REPOSITORY"] = value


def _global_json(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    ctx.meta[GLOBAL_JSON] = value


@click.group(cls=_Verbs, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mover")
@click.option(
    "-r",
    "--repo",
    metavar="REPO",
    expose_value=False,
    callback=_global_repo,
    is_eager=True,
    help="Repository for the verb (as the verb's own --repo) [env: MOVER_REPOSITORY].",
)
@click.option(
    "--json",
    is_flag=True,
    expose_value=False,
    callback=_global_json,
    help="Print JSON for scripts (as the verb's own --json).",
)
@password_options[0]
@password_options[1]
def cli() -> None:
    """mover: fast, deduplicating, encrypted backup of volumes.

    The repository comes from --repo (before or after the verb) or MOVER_REPOSITORY; its
    password from MOVER_PASSWORD, --password-file / MOVER_PASSWORD_FILE, --password-command /
    MOVER_PASSWORD_COMMAND, or a prompt on a terminal."""


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
