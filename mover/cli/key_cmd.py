"""`mover key list|add|passwd|remove`: who can open the repository (restic's `key` verbs)."""

from __future__ import annotations

import click

from mover import api
from mover.api import KdfParams
from mover.cli.context import json_option, open_repo, password, repo_option
from mover.cli.output import emit_json, emit_table
from mover.cli.sizes import parse_size
from mover.errors import UsageError

NEW_PASSWORD = "MOVER_NEW_PASSWORD"

kdf_option = click.option(
    "--kdf-memory",
    default="64MiB",
    show_default=True,
    metavar="SIZE",
    help="Argon2id memory for the new key (lower only for tests or tiny nodes).",
)


def _new_password(current: bytes) -> bytes:
    """From MOVER_NEW_PASSWORD(_FILE/_COMMAND), else a prompt (twice) on a terminal."""
    secret = password(confirm=True, variable=NEW_PASSWORD, what="new password")
    if secret == current:
        raise UsageError("the new password is the current one; choose another")
    return secret


def _kdf(kdf_memory: str) -> KdfParams:
    return KdfParams(memory_kib=parse_size(kdf_memory, "--kdf-memory", minimum=8 << 10) // 1024)


@click.group()
def key() -> None:
    """Manage the repository's keys: each key file lets one password open the repository.

    The new password of `add` and `passwd` comes from MOVER_NEW_PASSWORD (or
    MOVER_NEW_PASSWORD_FILE, MOVER_NEW_PASSWORD_COMMAND), else a prompt on a terminal."""


@key.command("list")
@repo_option
@json_option
def list_cmd(repo: str | None, as_json: bool) -> None:
    """List the key files; `*` marks the one this password opens."""
    secret = password()
    keys = api.list_keys(open_repo(repo, secret), secret)
    if as_json:
        emit_json([k.as_dict() for k in keys])
        return
    emit_table(
        "keys",
        ["", "id", "created (UTC)", "host", "kdf memory"],
        [
            [
                "*" if k.current else "",
                k.id[:8],
                k.created.replace("T", " ").removesuffix("+00:00") or "-",
                k.hostname or "-",
                f"{k.memory_kib // 1024} MiB" if k.memory_kib else "damaged",
            ]
            for k in keys
        ],
    )


@key.command("add")
@repo_option
@kdf_option
@json_option
def add_cmd(repo: str | None, kdf_memory: str, as_json: bool) -> None:
    """Add a key for another password (both open the repository afterwards)."""
    kdf = _kdf(kdf_memory)
    secret = password()
    repository = open_repo(repo, secret)
    key_id = api.add_key(repository, _new_password(secret), kdf=kdf)
    if as_json:
        emit_json({"added": key_id})
    else:
        click.echo(f"added key {key_id[:8]}")


@key.command("passwd")
@repo_option
@kdf_option
@json_option
def passwd_cmd(repo: str | None, kdf_memory: str, as_json: bool) -> None:
    """Change the password: a key for the new one is written, then the key the current
    password opens is removed (other keys stay)."""
    kdf = _kdf(kdf_memory)
    secret = password()
    repository = open_repo(repo, secret)
    change = api.change_password(repository, secret, _new_password(secret), kdf=kdf)
    if as_json:
        emit_json({"added": change.added, "removed": change.removed})
    else:
        click.echo(
            f"password changed: added key {change.added[:8]}, removed key {change.removed[:8]}"
        )


@key.command("remove")
@repo_option
@click.argument("key_id", metavar="ID")
@json_option
def remove_cmd(repo: str | None, key_id: str, as_json: bool) -> None:
    """Remove the key ID (an id or unique prefix); not the one this password opens."""
    secret = password()
    repository = open_repo(repo, secret)
    full = api.remove_key(repository, key_id, secret)
    if as_json:
        emit_json({"removed": full})
    else:
        click.echo(f"removed key {full[:8]}")
