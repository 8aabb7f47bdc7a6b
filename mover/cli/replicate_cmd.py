"""`mover replicate`: copy snapshots to another repository (another backend, region or cloud).

The target has its own storage settings (--target-s3-*; unset ones default to the source's)
and credentials (MOVER_TARGET_AWS_ACCESS_KEY_ID / MOVER_TARGET_AWS_SECRET_ACCESS_KEY /
MOVER_TARGET_AWS_SESSION_TOKEN, else the standard AWS chain), and its own password
(MOVER_TARGET_PASSWORD or MOVER_TARGET_PASSWORD_FILE, else the source's).
"""

from __future__ import annotations

import dataclasses
import os

import click

from mover import api
from mover.api import DEFAULT_REPLICATE_CHECKPOINT, KdfParams, StorageOptions, plural
from mover.cli.context import (
    backend_for,
    json_option,
    open_repo,
    password,
    password_or,
    repo_option,
    storage_options,
)
from mover.cli.output import emit_json
from mover.cli.progress import byte_progress
from mover.cli.sizes import mib, parse_duration, parse_size
from mover.errors import WrongPassword


def _target_options(
    endpoint: str | None, region: str | None, path_style: bool | None, profile: str | None
) -> StorageOptions:
    base = storage_options()
    env = os.environ
    return dataclasses.replace(
        base,
        s3_endpoint=endpoint or base.s3_endpoint,
        s3_region=region or base.s3_region,
        s3_path_style=base.s3_path_style if path_style is None else path_style,
        s3_profile=profile or base.s3_profile,
        s3_access_key=env.get("MOVER_TARGET_AWS_ACCESS_KEY_ID"),
        s3_secret_key=env.get("MOVER_TARGET_AWS_SECRET_ACCESS_KEY"),
        s3_session_token=env.get("MOVER_TARGET_AWS_SESSION_TOKEN"),
    )


@click.command("replicate")
@repo_option
@click.option("--to", "to", required=True, metavar="URL", help="The target repository.")
@click.argument("snapshot_refs", nargs=-1)
@click.option(
    "--init-target",
    is_flag=True,
    help="Create the target, if it is not a repository yet, as a replica of the source "
    "(same key and chunker parameters, so blobs travel sealed and deduplicate across both).",
)
@click.option("--target-s3-endpoint", metavar="URL", help="The target's S3 endpoint.")
@click.option("--target-s3-region", metavar="REGION", help="The target's S3 region.")
@click.option(
    "--target-s3-path-style/--target-s3-virtual-hosts",
    default=None,
    help="The target's S3 addressing [default: as the source].",
)
@click.option("--target-s3-profile", metavar="NAME", help="AWS profile for the target.")
@click.option(
    "--kdf-memory",
    default="64MiB",
    show_default=True,
    help="Argon2id memory for the target's password key (with --init-target).",
)
@click.option(
    "--checkpoint-interval",
    default=f"{DEFAULT_REPLICATE_CHECKPOINT:g}s",
    show_default=True,
    help="How often what was sent is made durable (its index written): an interrupted run "
    "re-sends at most about this much.",
)
@click.option(
    "--threads",
    type=click.IntRange(1, 1024),
    default=None,
    help="Threads fetching from the source [default: 2 per CPU, at least 8].",
)
@json_option
def replicate_cmd(
    repo: str | None,
    to: str,
    snapshot_refs: tuple[str, ...],
    init_target: bool,
    target_s3_endpoint: str | None,
    target_s3_region: str | None,
    target_s3_path_style: bool | None,
    target_s3_profile: str | None,
    kdf_memory: str,
    checkpoint_interval: str,
    threads: int | None,
    as_json: bool,
) -> None:
    """Copy SNAPSHOTs (default: every one the target lacks) to the repository --to URL,
    sending only the data it lacks. Re-running resumes an interrupted copy."""
    every = parse_duration(checkpoint_interval, "--checkpoint-interval")
    memory_kib = parse_size(kdf_memory, "--kdf-memory", minimum=8 << 10) // 1024
    source_password = password()
    source = open_repo(repo, source_password)
    options = _target_options(
        target_s3_endpoint, target_s3_region, target_s3_path_style, target_s3_profile
    )
    target_backend = backend_for(to, options)
    try:
        replica = api.open_replica(
            source,
            target_backend,
            password_or("MOVER_TARGET_PASSWORD", "target password", source_password),
            create=init_target,
            kdf=KdfParams(memory_kib=memory_kib),
        )
    except WrongPassword:
        raise WrongPassword(
            f"wrong password for the target {target_backend.location} (set "
            "MOVER_TARGET_PASSWORD or MOVER_TARGET_PASSWORD_FILE when it differs from the "
            "source's)"
        ) from None
    with byte_progress("replicate", None, not as_json) as bar:

        def on_progress(snapshot_id: str, done: int, total: int) -> None:
            if bar is not None:
                bar.update(
                    bar.task_ids[0],
                    completed=done,
                    total=total,
                    description=f"snapshot {snapshot_id[:8]}",
                )

        stats = api.replicate(
            source,
            replica.repository,
            list(snapshot_refs) or None,
            threads=threads,
            progress=on_progress,
            checkpoint_interval=every,
        )
    if as_json:
        emit_json(
            {
                "target": target_backend.location,
                "target_created": replica.created,
                **stats.as_dict(),
            }
        )
        return
    if replica.created:
        click.echo(f"created replica {replica.repository.id} at {target_backend.location}")
    for snapshot_id in stats.snapshots_copied:
        click.echo(f"copied snapshot {snapshot_id[:8]}")
    click.echo(
        f"replicated {plural(len(stats.snapshots_copied), 'snapshot')} "
        f"({len(stats.snapshots_present)} already there): "
        f"{plural(stats.chunks_sent, 'chunk')} sent, "
        f"{stats.chunks_skipped} already on the target, {mib(stats.bytes_sent)} written"
    )
