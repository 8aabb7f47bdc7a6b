"""What every repository command needs: where the repository is, and its password."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from mover.errors import UsageError
from mover.repository import Repository
from mover.storage.local import LocalBackend

repo_option = click.option(
    "--repo",
    "-r",
    envvar="MOVER_REPOSITORY",
    help="Repository location (a directory) [env: MOVER_REPOSITORY].",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")


def backend_for(repo: str | None) -> LocalBackend:
    if not repo:
        raise UsageError("no repository given: pass --repo PATH or set MOVER_REPOSITORY")
    if "://" in repo:
        raise UsageError(f"repository {repo!r}: only local directories are supported so far")
    return LocalBackend(Path(repo))


def password(confirm: bool = False) -> bytes:
    """From MOVER_PASSWORD, else MOVER_PASSWORD_FILE, else a prompt on a terminal."""
    if "MOVER_PASSWORD" in os.environ:
        value = os.environ["MOVER_PASSWORD"]
    elif "MOVER_PASSWORD_FILE" in os.environ:
        path = os.environ["MOVER_PASSWORD_FILE"]
        try:
            value = Path(path).read_text().rstrip("\r\n")
        except OSError as exc:
            raise UsageError(f"cannot read MOVER_PASSWORD_FILE {path}: {exc.strerror}") from None
    elif sys.stdin.isatty():
        value = click.prompt("repository password", hide_input=True, confirmation_prompt=confirm)
    else:
        raise UsageError("no password: set MOVER_PASSWORD or MOVER_PASSWORD_FILE")
    if not value:
        raise UsageError("the password is empty; choose a non-empty one")
    return value.encode()


def open_repo(repo: str | None) -> Repository:
    backend = backend_for(repo)
    if not backend.root.is_dir():
        raise UsageError(f"repository {repo} does not exist; create it with `mover init`")
    return Repository.open(backend, password())
