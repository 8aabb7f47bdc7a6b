"""`mover init`: create a repository."""

from __future__ import annotations

import click

from mover import api
from mover.api import (
    DEFAULT_CHUNKER,
    DEFAULT_PACK_SIZE,
    DEFAULT_ZSTD_LEVEL,
    InitOptions,
    KdfParams,
    ObjectLock,
)
from mover.cli.context import (
    backend_for_init,
    check_object_lock,
    json_option,
    password,
    repo_option,
)
from mover.cli.output import emit_json
from mover.cli.sizes import parse_size
from mover.errors import UsageError


@click.command()
@repo_option
@click.option(
    "--chunk-min",
    default=f"{DEFAULT_CHUNKER.min_size >> 10}KiB",
    show_default=True,
    metavar="SIZE",
    help="Smallest chunk (content-defined chunking; fixed for the repository's life).",
)
@click.option(
    "--chunk-avg",
    default=f"{DEFAULT_CHUNKER.avg_size >> 10}KiB",
    show_default=True,
    metavar="SIZE",
    help="Average chunk, a power of two: smaller dedups finer, costs more index.",
)
@click.option(
    "--chunk-max",
    default=f"{DEFAULT_CHUNKER.max_size >> 10}KiB",
    show_default=True,
    metavar="SIZE",
    help="Largest chunk.",
)
@click.option(
    "--pack-size",
    default=f"{DEFAULT_PACK_SIZE >> 20}MiB",
    show_default=True,
    metavar="SIZE",
    help="Chunks are stored in packs of about this size (object stores charge per request).",
)
@click.option(
    "--compression",
    default="auto",
    show_default=True,
    metavar="auto|LEVEL",
    help=f"auto: each backup picks the zstd level, 1 to {DEFAULT_ZSTD_LEVEL}, by what bounds it "
    "(CPU-bound: 1); LEVEL: always this zstd level, 0 to 22 (0 stores chunks uncompressed).",
)
@click.option(
    "--kdf-memory",
    default="64MiB",
    show_default=True,
    help="Argon2id memory for the password key (lower only for tests or tiny nodes).",
)
@click.option(
    "--s3-object-lock-days",
    type=click.IntRange(1, 36500),
    default=None,
    help="S3 Object Lock: keep every object the repository writes undeletable this many days "
    "(the bucket must have Object Lock enabled).",
)
@click.option(
    "--s3-object-lock-mode",
    type=click.Choice(["compliance", "governance"], case_sensitive=False),
    default="compliance",
    show_default=True,
    help="compliance: no one can delete early; governance: only with the bypass permission.",
)
@json_option
def init(
    repo: str | None,
    chunk_min: str,
    chunk_avg: str,
    chunk_max: str,
    pack_size: str,
    compression: str,
    kdf_memory: str,
    s3_object_lock_days: int | None,
    s3_object_lock_mode: str,
    as_json: bool,
) -> None:
    """Create an encrypted repository in an empty or new directory, or an S3 bucket/prefix."""
    level = _compression_level(compression)
    backend = backend_for_init(repo)
    sizes = (
        parse_size(chunk_min, "--chunk-min"),
        parse_size(chunk_avg, "--chunk-avg"),
        parse_size(chunk_max, "--chunk-max"),
    )
    api.check_chunk_sizes(*sizes)
    pack = parse_size(pack_size, "--pack-size", minimum=1 << 16)
    if pack > 1 << 31:
        raise UsageError(f"--pack-size {pack_size} is above 2 GiB; packs are read in ranges")
    memory_kib = parse_size(kdf_memory, "--kdf-memory", minimum=8 << 10) // 1024
    lock = None
    if s3_object_lock_days is not None:
        lock = ObjectLock(s3_object_lock_mode.upper(), s3_object_lock_days)
        check_object_lock(backend)
    secret = password(confirm=True)
    options = InitOptions(
        chunk_min=sizes[0],
        chunk_avg=sizes[1],
        chunk_max=sizes[2],
        pack_size=pack,
        zstd_level=level,  # None: auto (InitOptions' default)
        kdf=KdfParams(memory_kib=memory_kib),
        object_lock=lock,
    )
    repository = api.init_repository_in(backend, secret, options=options)
    if as_json:
        emit_json({"id": repository.id, "location": backend.location})
    else:
        click.echo(f"created repository {repository.id} at {backend.location}")


def _compression_level(value: str) -> int | None:
    """--compression: None for auto, else the fixed level."""
    if value.strip().lower() == "auto":
        return None
    try:
        level = int(value)
    except ValueError:
        level = -1
    if not 0 <= level <= 22:
        raise UsageError(f"--compression {value!r}: use auto or a zstd level from 0 to 22")
    return level
