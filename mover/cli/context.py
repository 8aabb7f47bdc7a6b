"""What every repository command needs: where the repository is, how to reach its storage, and
its password.

`repo_option` adds --repo and the shared storage options (S3 endpoint, region, addressing,
concurrency, bandwidth limits) to a command. The storage options are not passed to the command
function: they are kept in the click context, and backend_for() reads them there, so every verb
takes them without repeating them in its signature. Each backend opened is closed when the
command's context closes, whether the command succeeded or not.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from mover import api
from mover.api import (
    DEFAULT_MULTIPART_THRESHOLD,
    DEFAULT_PART_SIZE,
    DEFAULT_S3_CONCURRENCY,
    MIN_PART_SIZE,
    Backend,
    Repository,
    StorageOptions,
)
from mover.cli.options import json_option, password_options
from mover.errors import UsageError

# json_option is re-exported: the verbs take it from here with the other shared options.
__all__ = [
    "backend_for",
    "json_option",
    "open_repo",
    "password",
    "password_or",
    "repo_option",
]

F = TypeVar("F", bound=Callable[..., Any])
_META = "mover.storage_options"


def _remember(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    ctx.meta.setdefault(_META, {})[param.name] = value
    return value


def _storage_option(*decls: str, **kwargs: Any) -> Callable[[F], F]:
    return click.option(*decls, expose_value=False, callback=_remember, **kwargs)


_STORAGE_OPTIONS = [
    _storage_option(
        "--s3-endpoint",
        metavar="URL",
        help="S3 endpoint URL [env: AWS_ENDPOINT_URL_S3, then AWS_ENDPOINT_URL; default AWS].",
    ),
    _storage_option("--s3-region", metavar="REGION", help="S3 region [env: AWS_REGION]."),
    _storage_option(
        "--s3-path-style",
        is_flag=True,
        envvar="MOVER_S3_PATH_STYLE",
        help="Path-style S3 addressing (endpoint/bucket/key), for stores without virtual hosts.",
    ),
    _storage_option(
        "--s3-profile",
        metavar="NAME",
        help="AWS profile for credentials [default: the standard AWS chain].",
    ),
    _storage_option(
        "--s3-concurrency",
        type=click.IntRange(1, 1024),
        default=DEFAULT_S3_CONCURRENCY,
        show_default=True,
        envvar="MOVER_S3_CONCURRENCY",
        help="S3 requests in flight at most.",
    ),
    _storage_option(
        "--s3-multipart-threshold",
        metavar="SIZE",
        default=f"{DEFAULT_MULTIPART_THRESHOLD >> 20}MiB",
        show_default=True,
        envvar="MOVER_S3_MULTIPART_THRESHOLD",
        help="Objects larger than this are uploaded in parts.",
    ),
    _storage_option(
        "--s3-part-size",
        metavar="SIZE",
        default=f"{DEFAULT_PART_SIZE >> 20}MiB",
        show_default=True,
        envvar="MOVER_S3_PART_SIZE",
        help="Size of a multipart upload's parts (at least 5MiB).",
    ),
    _storage_option(
        "--limit-upload",
        metavar="SIZE",
        envvar="MOVER_LIMIT_UPLOAD",
        help="Upload bandwidth cap in bytes per second, e.g. 20MiB [default: none].",
    ),
    _storage_option(
        "--limit-download",
        metavar="SIZE",
        envvar="MOVER_LIMIT_DOWNLOAD",
        help="Download bandwidth cap in bytes per second [default: none].",
    ),
]


def repo_option(f: F) -> F:
    """--repo, the password options and the shared storage options."""
    for option in reversed([*_STORAGE_OPTIONS, *password_options]):
        f = option(f)
    wrapped: F = click.option(
        "--repo",
        "-r",
        envvar="MOVER_REPOSITORY",
        help="Repository: a directory, or s3://BUCKET/PREFIX [env: MOVER_REPOSITORY].",
    )(f)
    return wrapped


def _size(value: str | None, what: str, minimum: int = 1) -> int | None:
    from mover.cli.sizes import parse_size

    return None if value is None else parse_size(value, what, minimum=minimum)


def storage_options() -> StorageOptions:
    """The shared storage options of the running command (defaults outside a command)."""
    ctx = click.get_current_context(silent=True)
    given: dict[str, Any] = dict(ctx.meta.get(_META, {})) if ctx is not None else {}
    options = StorageOptions(
        s3_endpoint=given.get("s3_endpoint"),
        s3_region=given.get("s3_region"),
        s3_path_style=bool(given.get("s3_path_style")),
        s3_profile=given.get("s3_profile"),
        s3_concurrency=int(given.get("s3_concurrency") or DEFAULT_S3_CONCURRENCY),
        s3_multipart_threshold=_size(
            given.get("s3_multipart_threshold"), "--s3-multipart-threshold"
        )
        or DEFAULT_MULTIPART_THRESHOLD,
        s3_part_size=_size(given.get("s3_part_size"), "--s3-part-size", MIN_PART_SIZE)
        or DEFAULT_PART_SIZE,
        limit_upload=_size(given.get("limit_upload"), "--limit-upload"),
        limit_download=_size(given.get("limit_download"), "--limit-download"),
    )
    return options


def close_with_command(backend: Backend) -> Backend:
    """Close `backend` when the running command ends (success or error)."""
    ctx = click.get_current_context(silent=True)
    if ctx is not None:
        ctx.call_on_close(backend.close)
    return backend


def backend_for(repo: str | None, options: StorageOptions | None = None) -> Backend:
    if not repo:
        raise UsageError(
            "no repository given: pass --repo PATH or s3://BUCKET/PREFIX, or set MOVER_REPOSITORY"
        )
    return close_with_command(api.open_storage(repo, storage=options or storage_options()))


def backend_for_init(repo: str | None) -> Backend:
    """A backend for a new repository: a local directory may exist (empty) or not; an S3
    bucket must exist (mover creates nothing in it before the repository's own objects)."""
    if repo:
        path = api.local_directory(repo)
        if path is not None and path.exists() and not path.is_dir():
            raise UsageError(f"{path} exists and is not a directory")
    return backend_for(repo)


def check_object_lock(backend: Backend) -> None:
    """Object Lock retention needs S3 and a bucket created with Object Lock enabled."""
    enabled = api.object_lock_enabled(backend)
    if enabled is None:
        raise UsageError(f"{backend.location}: --s3-object-lock-days needs an s3:// repository")
    if not enabled:
        raise UsageError(
            f"bucket of {backend.location} does not have Object Lock enabled; create the bucket "
            "with Object Lock (e.g. aws s3api create-bucket --object-lock-enabled-for-bucket)"
        )


def password(
    confirm: bool = False, variable: str = "MOVER_PASSWORD", what: str = "repository password"
) -> bytes:
    """From $variable, else ${variable}_FILE, else the output of ${variable}_COMMAND, else a
    prompt on a terminal."""
    file_variable = f"{variable}_FILE"
    command_variable = f"{variable}_COMMAND"
    if variable in os.environ:
        value = os.environ[variable]
    elif command_variable in os.environ:
        value = _run_password_command(command_variable, os.environ[command_variable])
    elif file_variable in os.environ:
        path = os.environ[file_variable]
        try:
            value = Path(path).read_text().rstrip("\r\n")
        except OSError as exc:
            raise UsageError(f"cannot read {file_variable} {path}: {exc.strerror}") from None
    elif sys.stdin.isatty():
        value = click.prompt(what, hide_input=True, confirmation_prompt=confirm)
    else:
        raise UsageError(f"no password: set {variable} or {file_variable}")
    if not value:
        raise UsageError("the password is empty; choose a non-empty one")
    return value.encode()


_REPAIR_HINT = {
    "snapshots/": "`mover repair snapshots` removes it",
    "index/": "`mover repair index` rebuilds the index from the packs",
}


def report_damage(repository: Repository) -> None:
    """One warning line per damaged object the command skipped, with the verb that repairs it."""
    for name, reason in sorted(repository.damage.items()):
        hint = next((h for p, h in _REPAIR_HINT.items() if name.startswith(p)), "see `mover check`")
        click.echo(f"mover: warning: skipped: {reason}; {hint}", err=True)


def password_or(variable: str, what: str, fallback: bytes) -> bytes:
    """Another repository's password: from $variable (or its _FILE, _COMMAND) when one is set,
    else `fallback` (the password given for this repository)."""
    if any(f"{variable}{suffix}" in os.environ for suffix in ("", "_FILE", "_COMMAND")):
        return password(variable=variable, what=what)
    return fallback


def _run_password_command(variable: str, command: str) -> str:
    import subprocess

    try:
        proc = subprocess.run(
            command, shell=True, capture_output=True, text=True, timeout=60, check=False
        )
    except subprocess.TimeoutExpired:
        raise UsageError(f"{variable} {command!r} did not finish within 60 s") from None
    if proc.returncode != 0:
        raise UsageError(
            f"{variable} {command!r} failed (exit {proc.returncode}): "
            f"{(proc.stderr.strip().splitlines() or [''])[-1]}"
        )
    return proc.stdout.rstrip("\r\n")


def open_repo(
    repo: str | None, secret: bytes | None = None, warn_damage: bool = True
) -> Repository:
    """The repository, opened with the password. With warn_damage, the damaged objects the
    command skipped are named on stderr when it ends (check reports them itself)."""
    path = api.local_directory(repo) if repo else None
    if path is not None:
        if path.exists() and not path.is_dir():
            raise UsageError(f"repository {repo} is a file, not a repository directory")
        if not path.is_dir():
            raise UsageError(f"repository {repo} does not exist; create it with `mover init`")
    backend = backend_for(repo)
    repository = api.open_repository_in(backend, secret if secret is not None else password())
    ctx = click.get_current_context(silent=True)
    if ctx is not None and warn_damage:
        ctx.call_on_close(lambda: report_damage(repository))
    return repository
