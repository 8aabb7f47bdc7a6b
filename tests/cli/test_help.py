"""Every option of every verb says what it does in --help (the Kubernetes side's groups too)."""

from __future__ import annotations

import click

from mover.cli.main import cli


def _commands(
    group: click.Group, ctx: click.Context, prefix: str
) -> list[tuple[str, click.Command]]:
    found: list[tuple[str, click.Command]] = []
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        assert command is not None, f"{prefix} {name} does not load"
        path = f"{prefix} {name}"
        found.append((path, command))
        if isinstance(command, click.Group):
            found += _commands(command, click.Context(command, info_name=name, parent=ctx), path)
    return found


def test_every_option_has_help() -> None:
    ctx = click.Context(cli, info_name="mover")
    missing = []
    for path, command in [("mover", cli), *_commands(cli, ctx, "mover")]:
        if not (command.help or command.short_help):
            missing.append(f"{path}: the command has no help")
        for param in command.params:
            if isinstance(param, click.Option) and not param.hidden and not param.help:
                missing.append(f"{path} {'/'.join(param.opts)}")
    assert not missing, "options without help:\n" + "\n".join(missing)
