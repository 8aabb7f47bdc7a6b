"""Options every verb shares that must be cheap to import: `mover --help` and the group's own
options load this, not the verbs' modules (start-up is a fixed cost of every command)."""

from __future__ import annotations

import os

import click

__all__ = ["GLOBAL_JSON", "json_option", "password_options"]


def _global_json() -> bool:
    """`mover --json VERB`: the flag given before the verb (restic's habit) is each verb's
    default."""
    ctx = click.get_current_context(silent=True)
    root = ctx.find_root() if ctx is not None else None
    return bool(root is not None and root.meta.get(GLOBAL_JSON))


GLOBAL_JSON = "mover.json"
json_option = click.option(
    "--json", "as_json", is_flag=True, default=_global_json, help="Print JSON for scripts."
)


def _password_file(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    """--password-file F: as MOVER_PASSWORD_FILE=F, and it wins over MOVER_PASSWORD."""
    if value is not None:
        os.environ.pop("MOVER_PASSWORD", None)
        os.environ["MOVER_PASSWORD_FILE"] = value


def _password_command(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    """--password-command CMD: as MOVER_PASSWORD_COMMAND=CMD, and it wins over the others."""
    if value is not None:
        os.environ.pop("MOVER_PASSWORD", None)
        os.environ.pop("MOVER_PASSWORD_FILE", None)
        os.environ["MOVER_PASSWORD_COMMAND"] = value


password_options = [
    click.option(
        "--password-file",
        metavar="FILE",
        expose_value=False,
        callback=_password_file,
        help="Read the repository password from FILE [env: MOVER_PASSWORD_FILE].",
    ),
    click.option(
        "--password-command",
        metavar="CMD",
        expose_value=False,
        callback=_password_command,
        help="Run CMD (a shell command) and use its output as the password "
        "[env: MOVER_PASSWORD_COMMAND].",
    ),
]
