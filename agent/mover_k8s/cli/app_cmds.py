"""`mover app`: the group of the commands for people, each in the module of its job."""

from __future__ import annotations

import click

from mover_k8s.cli.backup_cmds import backup_cmd, schedule_cmd
from mover_k8s.cli.diff_cmd import diff_cmd
from mover_k8s.cli.files_cmd import files_cmd
from mover_k8s.cli.migrate_cmd import migrate_cmd
from mover_k8s.cli.restore_cmd import restore_cmd
from mover_k8s.cli.status_cmds import cancel_cmd, describe_cmd, list_cmd, verify_cmd


@click.group("app")
def app() -> None:
    """Back up and restore whole applications on Kubernetes (objects and volumes)."""


for command in (
    backup_cmd,
    schedule_cmd,
    restore_cmd,
    list_cmd,
    describe_cmd,
    cancel_cmd,
    verify_cmd,
    diff_cmd,
    migrate_cmd,
    files_cmd,
):
    app.add_command(command)
