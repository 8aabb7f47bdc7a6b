"""`mover repair`: index, snapshots, data (from a replica), config (from a replica).

Each repair says what it found and what it changed; `--json` gives the same for scripts. A
repair that leaves damage it could not fix exits 1 and says what is left."""

from __future__ import annotations

import click

from mover import api
from mover.api import Backend, KdfParams, Repository, plural
from mover.cli.context import (
    backend_for,
    json_option,
    open_repo,
    password,
    password_or,
    repo_option,
)
from mover.cli.output import emit_json, status
from mover.cli.sizes import mib, parse_size
from mover.errors import IntegrityError, RepositoryError, WrongPassword

FROM_PASSWORD = "MOVER_FROM_PASSWORD"


from_option = click.option(
    "--from",
    "from_url",
    required=True,
    metavar="URL",
    help=f"A replica made by `mover replicate` (password: {FROM_PASSWORD} or "
    f"{FROM_PASSWORD}_FILE, else this repository's).",
)


@click.group()
def repair() -> None:
    """Repair a damaged repository: rebuild the index, remove unreadable snapshots, heal
    lost data or a lost config and keys from a replica. Run `mover check` first to see what
    is damaged; every repair writes before it deletes, and may be run again if interrupted."""


@repair.command("index")
@repo_option
@click.option(
    "--read-data",
    is_flag=True,
    help="Also read every blob and index only those that verify (slower: reads everything).",
)
@json_option
def index_cmd(repo: str | None, read_data: bool, as_json: bool) -> None:
    """Rebuild the index from the packs' headers, replacing every index file (damaged ones
    included). Safe beside running backups; takes the exclusive lock, as prune does."""
    repository = open_repo(repo, warn_damage=False)
    stats = api.repair_index(repository, read_data=read_data, progress=status)
    if as_json:
        emit_json(stats.as_dict())
    else:
        click.echo(
            f"rebuilt the index: {plural(stats.chunks, 'blob')} in {plural(stats.packs, 'pack')}, "
            f"{plural(stats.index_files_written, 'index file')} written, "
            f"{stats.index_files_deleted} replaced"
        )
        for name, why in sorted(stats.damaged_packs.items()):
            click.echo(f"damaged: {name}: {why}", err=True)
    if stats.damaged_packs:
        raise IntegrityError(
            f"{plural(len(stats.damaged_packs), 'pack')} damaged "
            f"({plural(stats.bad_blobs, 'blob')} lost); "
            "their readable blobs are indexed: `mover repair data --from REPLICA` heals the rest"
        )


@repair.command("snapshots")
@repo_option
@click.option("--dry-run", is_flag=True, help="List what would be removed; change nothing.")
@json_option
def snapshots_cmd(repo: str | None, dry_run: bool, as_json: bool) -> None:
    """Remove snapshot objects that cannot be read, and list the snapshots whose data is
    partly lost with the byte ranges they cannot restore (those are kept: `mover repair data
    --from REPLICA` may bring their data back; `mover restore --partial` restores the rest)."""
    repository = open_repo(repo, warn_damage=False)
    report = api.repair_snapshots(repository, dry_run=dry_run, progress=status)
    if as_json:
        emit_json(report.as_dict(dry_run))
    else:
        verb = "would remove" if dry_run else "removed"
        for snapshot_id, why in sorted(report.removed.items()):
            click.echo(f"{verb} snapshot {snapshot_id[:8]}: {why}")
        for damaged in report.partial:
            click.echo(
                f"kept snapshot {damaged.snapshot.id[:8]}: {mib(damaged.bad_bytes)} in "
                f"{len(damaged.bad_ranges)} ranges cannot be restored"
            )
            for offset, length, why in damaged.bad_ranges[:10]:
                click.echo(f"  bytes {offset}-{offset + length - 1}: {why}")
            if len(damaged.bad_ranges) > 10:
                click.echo(f"  ... and {len(damaged.bad_ranges) - 10} more (--json lists all)")
        if not report.removed and not report.partial:
            click.echo(
                "the snapshot can be read and restored"
                if report.checked == 1
                else f"all {report.checked} snapshots can be read and restored"
            )
    if report.partial:
        raise IntegrityError(
            f"{plural(len(report.partial), 'snapshot')} with data that cannot be restored; "
            "`mover repair data --from REPLICA` heals it if a replica has it"
        )


def _replica(url: str, own_password: bytes) -> Repository:
    """The replica at url, opened with MOVER_FROM_PASSWORD(_FILE), else this repository's
    password."""
    secret = password_or(FROM_PASSWORD, "replica password", own_password)
    backend = backend_for(url)
    try:
        return api.open_repository_in(backend, secret)
    except WrongPassword:
        raise WrongPassword(
            f"wrong password for the replica {backend.location} (set {FROM_PASSWORD} or "
            f"{FROM_PASSWORD}_FILE when it differs from this repository's)"
        ) from None


@repair.command("data")
@repo_option
@from_option
@json_option
def data_cmd(repo: str | None, from_url: str, as_json: bool) -> None:
    """Heal lost or damaged data from a replica: every pack is read and verified, the good
    blobs of damaged packs are moved to new packs, everything a snapshot needs that is not
    stored intact here is fetched from the replica, verified and stored again, the index is
    rebuilt and the damaged packs are deleted."""
    secret = password()
    repository = open_repo(repo, secret, warn_damage=False)
    replica = _replica(from_url, secret)
    stats = api.repair_data(repository, replica, progress=status)
    if as_json:
        emit_json(stats.as_dict())
    else:
        for name, why in sorted(stats.damaged_packs.items()):
            click.echo(f"damaged: {name}: {why}")
        click.echo(
            f"healed {plural(stats.healed, 'blob')} ({mib(stats.healed_bytes)}) from the "
            f"replica, moved {plural(stats.blobs_copied, 'good blob')} out of "
            f"{plural(len(stats.damaged_packs), 'damaged pack')}, "
            f"deleted {stats.damaged_packs_deleted} of them"
        )
        if stats.damaged_packs_kept:
            click.echo(
                f"{plural(stats.damaged_packs_kept, 'damaged pack')} kept while backups run; "
                "they are no longer indexed: run repair data again (or prune) to delete them"
            )
    if stats.unhealed:
        snapshots = ", ".join(s[:8] for s in stats.unhealed_snapshots) or "none"
        raise IntegrityError(
            f"{plural(len(stats.unhealed), 'blob')} lost here and on the replica; snapshots still "
            f"damaged: {snapshots} (`mover restore --partial` restores what is left)"
        )


@repair.command("config")
@repo_option
@from_option
@click.option(
    "--kdf-memory",
    default="64MiB",
    show_default=True,
    help="Argon2id memory for the new key file, when one is written.",
)
@json_option
def config_cmd(repo: str | None, from_url: str, kdf_memory: str, as_json: bool) -> None:
    """Restore a damaged config or unreadable key files from a replica (they share the master
    key): the config is sealed again, and a new key file wraps the key with this repository's
    password. What can still be read is left as it is."""
    memory_kib = parse_size(kdf_memory, "--kdf-memory", minimum=8 << 10) // 1024
    secret = password()
    backend: Backend = backend_for(repo)
    if not any(True for _ in backend.list("")):
        raise RepositoryError(f"{backend.location} is empty: nothing to repair")
    replica = _replica(from_url, secret)
    report = api.repair_config(backend, replica, secret, kdf=KdfParams(memory_kib=memory_kib))
    api.open_repository_in(backend, secret)  # proves the repair: it opens now
    if as_json:
        emit_json(report.as_dict())
        return
    if report.config_restored:
        click.echo("restored the config from the replica")
    if report.key_written:
        click.echo(f"wrote a new key file {report.key_written} for this password")
    if not report.config_restored and not report.key_written:
        click.echo("config and keys can be read: nothing to repair")
