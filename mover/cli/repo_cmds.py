"""Repository verbs: init, backup, restore, snapshots, check, forget, prune, stats."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import BinaryIO

import click

from mover.chunking import DEFAULT_PARAMS, ChunkerParams
from mover.cli.context import (
    backend_for_init,
    check_object_lock,
    json_option,
    open_repo,
    password,
    repo_option,
)
from mover.cli.output import emit_json, emit_table, status
from mover.cli.progress import byte_progress
from mover.cli.sizes import format_size, parse_duration, parse_size
from mover.crypto import KdfParams
from mover.errors import (
    ObjectNotFound,
    RepositoryError,
    SourceError,
    StorageError,
    UsageError,
)
from mover.maintenance.check import CheckReport, run_check
from mover.maintenance.prune import REPACK_BELOW
from mover.maintenance.prune import forget as forget_snapshots
from mover.maintenance.prune import prune as prune_repo
from mover.maintenance.retention import Decision, Group, Policy, apply_policy, snapshot_time
from mover.objects.checkpoint import INTERVAL_ENV as CHECKPOINT_ENV
from mover.objects.repository import DEFAULT_PACK_SIZE, DEFAULT_ZSTD_LEVEL, RepoConfig, Repository
from mover.objects.snapshot import Snapshot
from mover.pipeline.backup import BackupStats, run_backup
from mover.pipeline.restore import RestoreStats, run_restore
from mover.pipeline.source import source_size
from mover.storage.s3config import ObjectLock
from mover.text import plural


def _mib(n: int) -> str:
    return f"{n / 2**20:,.1f} MiB"


@click.command()
@repo_option
@click.option(
    "--chunk-min",
    default=f"{DEFAULT_PARAMS.min_size >> 10}KiB",
    show_default=True,
    metavar="SIZE",
    help="Smallest chunk (content-defined chunking; fixed for the repository's life).",
)
@click.option(
    "--chunk-avg",
    default=f"{DEFAULT_PARAMS.avg_size >> 10}KiB",
    show_default=True,
    metavar="SIZE",
    help="Average chunk, a power of two: smaller dedups finer, costs more index.",
)
@click.option(
    "--chunk-max",
    default=f"{DEFAULT_PARAMS.max_size >> 10}KiB",
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
    type=click.IntRange(0, 22),
    default=DEFAULT_ZSTD_LEVEL,
    show_default=True,
    help="zstd level; 0 stores chunks uncompressed.",
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
    compression: int,
    kdf_memory: str,
    s3_object_lock_days: int | None,
    s3_object_lock_mode: str,
    as_json: bool,
) -> None:
    """Create an encrypted repository in an empty or new directory, or an S3 bucket/prefix."""
    backend = backend_for_init(repo)
    params = ChunkerParams(
        parse_size(chunk_min, "--chunk-min"),
        parse_size(chunk_avg, "--chunk-avg"),
        parse_size(chunk_max, "--chunk-max"),
        os.urandom(32),
    )
    pack = parse_size(pack_size, "--pack-size", minimum=1 << 16)
    if pack > 1 << 31:
        raise UsageError(f"--pack-size {pack_size} is above 2 GiB; packs are read in ranges")
    memory_kib = parse_size(kdf_memory, "--kdf-memory", minimum=8 << 10) // 1024
    lock = None
    if s3_object_lock_days is not None:
        lock = ObjectLock(s3_object_lock_mode.upper(), s3_object_lock_days)
        check_object_lock(backend)
    secret = password(confirm=True)
    repository = Repository.init(
        backend,
        secret,
        RepoConfig(params, pack, compression, lock),
        KdfParams(memory_kib=memory_kib),
    )
    if as_json:
        emit_json({"id": repository.id, "location": backend.location})
    else:
        click.echo(f"created repository {repository.id} at {backend.location}")


def _open_source(source: str) -> tuple[BinaryIO, str]:
    if source == "-":
        return sys.stdin.buffer, "-"
    path = Path(source)
    try:
        f: BinaryIO = open(path, "rb", buffering=0)  # noqa: SIM115 -- closed by the caller
    except FileNotFoundError:
        raise UsageError(f"source {source} does not exist") from None
    except IsADirectoryError:
        raise UsageError(f"source {source} is a directory; give a file or block device") from None
    except OSError as exc:
        raise SourceError(f"cannot open source {source}: {exc.strerror}") from None
    return f, str(path.resolve())


@click.command()
@repo_option
@click.argument("source")
@click.option(
    "--threads",
    type=click.IntRange(1, 1024),
    default=None,
    help="Worker threads [default: one per CPU].",
)
@click.option(
    "--streams",
    type=click.IntRange(1, 256),
    default=1,
    show_default=True,
    help="Read and chunk a file or block device in N parallel streams (same chunks as one).",
)
@click.option(
    "--checkpoint-every",
    "checkpoint_every",
    default="1GiB",
    show_default=True,
    envvar=CHECKPOINT_ENV,
    metavar="SIZE",
    help="Record progress in the repository every SIZE of a file or device, so that the next "
    f"backup of it resumes there if this one is interrupted; 0: never. Env: {CHECKPOINT_ENV}.",
)
@click.option(
    "--changed-ranges",
    "changed_ranges",
    metavar="FILE",
    default=None,
    help="Read only the byte ranges FILE lists as changed since the parent snapshot (one "
    "`OFFSET LENGTH` a line, decimal, ascending; - for stdin) and take the rest from the "
    "parent: the same snapshot as a full read (docs/changed-ranges.md).",
)
@click.option(
    "--parent",
    metavar="SNAPSHOT",
    default=None,
    help="The snapshot --changed-ranges is relative to [default: the newest of SOURCE].",
)
@click.option(
    "--verify-unchanged",
    "verify_unchanged",
    type=click.FloatRange(0, 100),
    metavar="PERCENT",
    default=None,
    help="With --changed-ranges: also read PERCENT of what it takes from the parent and fail, "
    "writing no snapshot, if any of it differs (a wrong change list).",
)
@click.option(
    "--allocated-ranges",
    "allocated_ranges",
    metavar="FILE",
    default=None,
    help="Read only the byte ranges FILE lists as allocated (same format); the rest is "
    "stored as zeros without reading it, as holes are.",
)
@json_option
def backup(
    repo: str | None,
    source: str,
    threads: int | None,
    streams: int,
    checkpoint_every: str,
    changed_ranges: str | None,
    parent: str | None,
    verify_unchanged: float | None,
    allocated_ranges: str | None,
    as_json: bool,
) -> None:
    """Back up SOURCE (an image file, a block device, or - for stdin) as a new snapshot."""
    from mover.pipeline.changed import ChangedRanges, check_size, find_parent
    from mover.pipeline.ranges import RangeList, read_ranges

    interval = parse_size(checkpoint_every, "--checkpoint-every")
    if changed_ranges is None:
        if parent is not None:
            raise UsageError("--parent applies only with --changed-ranges")
        if verify_unchanged is not None:
            raise UsageError("--verify-unchanged applies only with --changed-ranges")
    ranges_option, ranges_file = (
        ("--changed-ranges", changed_ranges)
        if changed_ranges is not None
        else ("--allocated-ranges", allocated_ranges)
    )
    if ranges_file is not None:
        if changed_ranges is not None and allocated_ranges is not None:
            raise UsageError("give --changed-ranges or --allocated-ranges, not both")
        if source == "-":
            raise UsageError(f"{ranges_option} needs a file or block device, not stdin")
        if streams > 1:
            raise UsageError(f"{ranges_option} reads as one stream; drop --streams {streams}")
    f, name = _open_source(source)
    ranges: RangeList | None = None
    try:
        total = source_size(f.fileno()) if source != "-" else None
        if streams > 1 and total is None:
            raise UsageError(
                f"--streams {streams} needs a file or block device; "
                f"{'stdin' if source == '-' else source} can only be read as one stream"
            )
        if ranges_file is not None:
            if total is None:
                raise UsageError(f"{ranges_option} needs a file or block device; {source} is not")
            ranges = read_ranges(ranges_file, total, ranges_option)
        repository = open_repo(repo)
        changed = None
        if changed_ranges is not None:
            assert ranges is not None and total is not None
            parent_snapshot = find_parent(repository, name, parent)
            check_size(parent_snapshot, total, name)
            changed = ChangedRanges(parent_snapshot, ranges, verify_unchanged or 0.0)
        allocated = ranges if allocated_ranges is not None else None
        with byte_progress("backup", total, not as_json) as bar:

            def on_progress(stats: BackupStats) -> None:
                if bar is not None:
                    done = stats.resumed_from + stats.bytes_read + stats.parent_bytes
                    bar.update(
                        bar.task_ids[0],
                        completed=min(done, total or done),
                        detail=f"new {_mib(stats.new_bytes)}, reused {_mib(stats.reused_bytes)}",
                    )

            def notify(message: str) -> None:
                click.echo(f"mover: {message}", err=True)

            snapshot = run_backup(
                repository,
                f,
                name,
                threads,
                on_progress,
                streams,
                interval,
                notify,
                changed=changed,
                allocated=allocated,
            )
    finally:
        if f is not sys.stdin.buffer:
            f.close()
        if ranges is not None:
            ranges.close()
    if as_json:
        public = snapshot.public()
        if changed is not None:
            public["parent"] = changed.parent.id
        emit_json(public)
        return
    s = snapshot.stats
    resumed = f" (resumed at {_mib(s['resumed_from'])})" if s.get("resumed_from") else ""
    read = _mib(snapshot.size)
    if changed is not None:
        read = f"{_mib(s['bytes_read'])} of {_mib(snapshot.size)}"
        resumed = f" (changes since {changed.parent.id[:8]})"
    click.echo(
        f"snapshot {snapshot.id[:8]} saved: {read} read{resumed}, "
        f"{_mib(s['new_bytes'])} new, {_mib(s['reused_bytes'])} reused, "
        f"{_mib(s['zero_bytes'])} zeros, {_mib(s['stored_bytes'])} stored"
    )


@click.command()
@repo_option
@click.argument("snapshot")
@click.argument("target", required=False)
@click.option(
    "--target",
    "target_option",
    metavar="TARGET",
    default=None,
    help="The target, as an option (restic's habit) instead of the second argument.",
)
@click.option("--force", is_flag=True, help="Overwrite an existing non-empty target file.")
@click.option(
    "--threads",
    type=click.IntRange(1, 1024),
    default=None,
    help="Worker threads [default: one per CPU].",
)
@click.option(
    "--partial",
    is_flag=True,
    help="Go on past damage in the repository: write everything readable, fill unreadable "
    "ranges with zeros, list them in a JSON file (see --bad-ranges) and exit 1.",
)
@click.option(
    "--bad-ranges",
    "bad_ranges",
    metavar="PATH",
    default=None,
    help="Where --partial lists the unreadable ranges [default: TARGET.badranges.json; "
    "required when TARGET is a block device].",
)
@json_option
def restore(
    repo: str | None,
    snapshot: str,
    target: str | None,
    target_option: str | None,
    force: bool,
    threads: int | None,
    partial: bool,
    bad_ranges: str | None,
    as_json: bool,
) -> None:
    """Restore SNAPSHOT (an id, a unique id prefix, or `latest`) to TARGET (a file or device),
    given as the second argument or with --target."""
    from mover.errors import IntegrityError, MoverError
    from mover.pipeline.restore import bad_ranges_json, write_bad_ranges

    if target is not None and target_option is not None:
        raise UsageError("give the target once: as the second argument or with --target")
    target = target if target is not None else target_option
    if target is None:
        raise UsageError("no restore target: give TARGET (a file or block device) or --target")

    # Where a partial restore lists what it could not read: settled before anything is written.
    if bad_ranges is not None and not partial:
        raise UsageError("--bad-ranges only applies with --partial")
    if partial and bad_ranges is None:
        if Path(target).is_block_device():
            raise UsageError(
                f"{target} is a block device: give --bad-ranges PATH for the list of "
                "unreadable ranges that --partial writes"
            )
        bad_ranges = f"{target}.badranges.json"
    if bad_ranges is not None:
        where = os.path.dirname(os.path.abspath(bad_ranges))
        if os.path.isdir(bad_ranges):
            raise UsageError(f"--bad-ranges {bad_ranges} is a directory; give a file's path")
        if not os.access(where, os.W_OK | os.X_OK):
            raise UsageError(
                f"cannot write the list of unreadable ranges to {bad_ranges}: {where} is not "
                "writable; give another path with --bad-ranges"
            )
    repository = open_repo(repo)
    found = repository.find_snapshot(snapshot)
    with byte_progress("restore", found.size, not as_json) as bar:

        def on_progress(stats: RestoreStats) -> None:
            if bar is not None:
                done = stats.bytes_written + stats.hole_bytes + stats.bad_bytes
                bar.update(bar.task_ids[0], completed=done)

        stats = run_restore(repository, found, target, force, threads, on_progress, partial=partial)
    failure = None
    if stats.bad_ranges:
        assert bad_ranges is not None
        n = len(stats.bad_ranges)
        failure = (
            f"restored snapshot {found.id[:8]} to {target} with {n} unreadable "
            f"range{'s' * (n > 1)} ({stats.bad_bytes} bytes, zero-filled)"
        )
        try:
            write_bad_ranges(bad_ranges, found.id, target, found.size, stats)
            failure += f"; see {bad_ranges}"
        except MoverError as exc:
            failure += f", but {exc}"
    if as_json:
        body: dict[str, object] = {
            "snapshot": found.id,
            "target": target,
            "size": found.size,
            "bytes_written": stats.bytes_written,
            "hole_bytes": stats.hole_bytes,
        }
        if partial:
            body["bad_bytes"] = stats.bad_bytes
            body["bad_ranges"] = bad_ranges_json(stats)
        emit_json(body)
    if failure is not None:
        raise IntegrityError(failure)
    if not as_json:
        click.echo(
            f"restored snapshot {found.id[:8]} to {target}: {_mib(found.size)} "
            f"({_mib(stats.hole_bytes)} of it holes)"
        )


@click.command()
@repo_option
@click.option("--long", "long_ids", is_flag=True, help="Show full snapshot ids and root hashes.")
@json_option
def snapshots(repo: str | None, long_ids: bool, as_json: bool) -> None:
    """List snapshots, oldest first, with the root hash that identifies each volume's content.

    A snapshot whose manifest cannot be read is listed as damaged (on stderr with --json) and
    the others are listed as usual; `mover repair snapshots` removes damaged ones."""
    repository = open_repo(repo, warn_damage=as_json)
    found = repository.snapshots()
    if as_json:
        emit_json([s.public() for s in found])
        return
    damaged = repository.damaged_snapshots()
    if not found and not damaged:
        click.echo("no snapshots")
        return
    width = 64 if long_ids else 8
    rows = [
        [
            s.id[:width],
            f"{snapshot_time(s):%Y-%m-%d %H:%M:%S} UTC",
            s.hostname,
            format_size(s.size),
            s.source,
            s.tree[: 64 if long_ids else 16],
        ]
        for s in found
    ]
    rows += [[i[:width], "DAMAGED", "", "", "cannot be read", ""] for i in sorted(damaged)]
    emit_table(
        plural(len(found), "snapshot"), ["id", "time", "host", "size", "source", "root"], rows
    )
    for snapshot_id, reason in sorted(damaged.items()):
        click.echo(
            f"mover: warning: snapshot {snapshot_id[:8]} is damaged ({reason}); "
            "`mover repair snapshots` removes it",
            err=True,
        )


@click.command()
@repo_option
@click.option("--read-data", is_flag=True, help="Also read and verify every stored byte.")
@json_option
def check(repo: str | None, read_data: bool, as_json: bool) -> None:
    """Verify the repository's structure (and with --read-data, every byte).

    Goes on past damage: every damaged snapshot, index file, pack and tree node is named, and
    the snapshots they hurt are listed. Exit code 1 when anything is damaged. With --json the
    report is printed in every case, also when the repository cannot be opened."""
    try:
        repository = open_repo(repo, warn_damage=False)
        report = run_check(repository, read_data)
    except (RepositoryError, StorageError) as exc:
        if as_json:
            emit_json(CheckReport(errors=[str(exc)]).as_dict())
        raise
    if as_json:
        emit_json(report.as_dict())
    else:
        for error in report.errors:
            click.echo(f"error: {error}", err=True)
        if report.ok:
            click.echo(
                f"no errors: {plural(report.snapshots, 'snapshot')}, "
                f"{plural(report.packs, 'pack')}, {plural(report.chunks, 'chunk')}"
                f"{' (all data read)' if read_data else ''}"
            )
        if report.unindexed_packs or report.temp_files:
            click.echo(
                f"note: {plural(report.unindexed_packs, 'pack')} that no index names and "
                f"{plural(report.temp_files, 'temporary file')} (left by killed or running "
                "backups); "
                "`mover prune` removes them once older than its --unindexed-grace"
            )
    if not report.ok:
        damaged = ", ".join(s[:8] for s in report.damaged_snapshots) or "none"
        raise RepositoryError(
            f"check found {plural(len(report.errors), 'error')}; damaged snapshots: {damaged}; "
            "see `mover repair` for what fixes them"
        )


@click.command()
@repo_option
@click.argument("snapshot_ids", nargs=-1, metavar="[SNAPSHOT]...")
@click.option("--keep-last", type=int, metavar="N", help="Keep the N newest snapshots.")
@click.option(
    "--keep-hourly",
    type=int,
    metavar="N",
    help="Keep the newest of each of the N latest hours (UTC) that have snapshots.",
)
@click.option(
    "--keep-daily",
    type=int,
    metavar="N",
    help="Keep the newest of each of the N latest days (UTC) that have snapshots.",
)
@click.option(
    "--keep-weekly",
    type=int,
    metavar="N",
    help="Keep the newest of each of the N latest ISO weeks (UTC) that have snapshots.",
)
@click.option(
    "--keep-monthly",
    type=int,
    metavar="N",
    help="Keep the newest of each of the N latest months (UTC) that have snapshots.",
)
@click.option(
    "--keep-yearly",
    type=int,
    metavar="N",
    help="Keep the newest of each of the N latest years (UTC) that have snapshots.",
)
@click.option(
    "--dry-run", is_flag=True, help="Show what would be removed and kept (and why); change nothing."
)
@click.option(
    "--prune", "then_prune", is_flag=True, help="Run prune afterwards if any snapshot was removed."
)
@click.option(
    "--unindexed-grace",
    default=None,
    metavar="DURATION",
    help="With --prune: as prune's --unindexed-grace [default: 1h].",
)
@json_option
def forget(
    repo: str | None,
    snapshot_ids: tuple[str, ...],
    keep_last: int | None,
    keep_hourly: int | None,
    keep_daily: int | None,
    keep_weekly: int | None,
    keep_monthly: int | None,
    keep_yearly: int | None,
    dry_run: bool,
    then_prune: bool,
    unindexed_grace: str | None,
    as_json: bool,
) -> None:
    """Remove snapshots: those named (ids, unique id prefixes, or `latest`), or those a
    retention policy (--keep-*) does not keep. Their data stays until `prune` (or --prune).

    The policy applies to each (hostname, source) on its own, like restic's default grouping
    by host and paths: one volume's snapshots never count for another's. Calendar buckets are
    in UTC; a snapshot kept by any rule is kept. Rules of 0 are off; at least one must be 1
    or more.
    """
    counts = {
        "last": keep_last,
        "hourly": keep_hourly,
        "daily": keep_daily,
        "weekly": keep_weekly,
        "monthly": keep_monthly,
        "yearly": keep_yearly,
    }
    for rule, n in counts.items():
        if n is not None and n < 0:
            raise UsageError(f"--keep-{rule} {n}: a count must be 0 or more")
    by_policy = any(n is not None for n in counts.values())
    if snapshot_ids and by_policy:
        raise UsageError("give snapshot ids or --keep-* options, not both")
    if not snapshot_ids and not by_policy:
        raise UsageError("nothing to forget: give snapshot ids, or a policy such as --keep-daily 7")
    policy = Policy(**{rule: n or 0 for rule, n in counts.items()})
    if by_policy and policy.empty():
        raise UsageError(
            "every --keep-* given is 0, which would remove every snapshot; keep at least 1, "
            "or forget snapshots by id"
        )
    if unindexed_grace is not None and not then_prune:
        raise UsageError("--unindexed-grace applies only with --prune")
    grace = parse_duration(
        "1h" if unindexed_grace is None else unindexed_grace, "--unindexed-grace"
    )

    repository = open_repo(repo)
    groups: list[Group] = []
    if by_policy:
        groups = apply_policy(repository.snapshots(), policy)
        remove = [d.snapshot for g in groups for d in g.remove]
    else:  # every id resolved (and checked) before anything is deleted
        listed = repository.snapshots()
        readable = {s.id: s for s in listed}

        def resolve(ref: str) -> str:
            if ref != "latest":
                return repository.resolve_snapshot_id(ref, list(readable))
            if not listed:
                raise UsageError("the repository has no snapshots yet")
            return listed[-1].id

        # A damaged snapshot can be forgotten too: it stands in with what is known, its id.
        remove = [
            readable.get(i) or Snapshot("", "", "DAMAGED", 0, "", id=i)
            for i in sorted(set(map(resolve, snapshot_ids)))
        ]
    removed: list[str] = []
    if not dry_run and by_policy:
        # By full id, straight from the one listing the policy saw: forget_snapshots would
        # list (and decrypt) every manifest again for each id it resolves.
        for snapshot in remove:
            with contextlib.suppress(ObjectNotFound):  # a concurrent forget was first
                repository.backend.delete(f"snapshots/{snapshot.id}")
            removed.append(snapshot.id)
    elif not dry_run:
        removed = forget_snapshots(repository, [s.id for s in remove])
    pruned = None
    if then_prune and removed:
        pruned = prune_repo(repository, unindexed_grace=grace, progress=status)

    if as_json:

        def entry(d: Decision) -> dict[str, object]:
            s = d.snapshot
            body: dict[str, object] = {"id": s.id, "short_id": s.id[:8], "time": s.time}
            if d.keep:
                body["reasons"] = [r.rule for r in d.reasons]
            return body

        emit_json(
            {
                "dry_run": dry_run,
                "policy": policy.counts() if by_policy else None,
                "groups": [
                    {
                        "hostname": g.hostname,
                        "source": g.source,
                        "keep": [entry(d) for d in g.keep],
                        "remove": [entry(d) for d in g.remove],
                    }
                    for g in groups
                ],
                "keep": [d.snapshot.id for g in groups for d in g.keep] if by_policy else None,
                "remove": [s.id for s in remove],
                "removed": removed,
                "prune": pruned.as_dict() if pruned is not None else None,
            }
        )
        return
    if by_policy:
        click.echo(f"policy: keep {policy.describe()} snapshots of each (hostname, source)")
    would = "would " if dry_run else ""
    for g in groups:
        click.echo(
            f"{g.hostname} {g.source}: {would}keep {len(g.keep)}, {would}remove {len(g.remove)}"
        )
        emit_table(
            "",
            ["id", "time (UTC)", "action", "reasons"],
            [
                [
                    d.snapshot.id[:8],
                    f"{snapshot_time(d.snapshot):%Y-%m-%d %H:%M:%S}",
                    "keep" if d.keep else "remove",
                    ", ".join(map(str, d.reasons)),
                ]
                for d in g.decisions
            ],
        )
    if not by_policy:
        for snapshot in remove:
            click.echo(f"{'would remove' if dry_run else 'removed'} snapshot {snapshot.id[:8]}")
    if dry_run:
        click.echo(f"dry run: would remove {plural(len(remove), 'snapshot')}; nothing was changed")
    elif by_policy:
        click.echo(f"removed {plural(len(removed), 'snapshot')}")
    if pruned is not None:
        click.echo(
            f"pruned: {plural(pruned.packs_deleted, 'pack')} deleted, "
            f"{pruned.packs_written} written, {_mib(pruned.bytes_freed)} freed"
        )
        if pruned.packs_waiting:
            click.echo(
                f"{plural(pruned.packs_waiting, 'condemned pack')} wait for running backups; "
                "a later prune deletes them"
            )
    elif then_prune and not dry_run:
        click.echo("no snapshot removed: prune not needed")


@click.command()
@repo_option
@click.option(
    "--unindexed-grace",
    default="1h",
    show_default=True,
    help="Delete packs that no index names (left by killed backups) only when older than this.",
)
@click.option(
    "--grace",
    default="0s",
    show_default=True,
    help="Delete condemned packs only when condemned at least this long ago (backups that were "
    "running when they were condemned are waited for in any case).",
)
@click.option(
    "--repack-below",
    type=click.IntRange(1, 100),
    default=int(REPACK_BELOW * 100),
    show_default=True,
    metavar="PERCENT",
    help="Repack a pack whose live share is below PERCENT (its live blobs are copied into new "
    "packs, the rest freed); packs used at least this much are kept whole.",
)
@click.option(
    "--checkpoint-max-age",
    default="7d",
    show_default=True,
    help="Keep the data of an interrupted backup's checkpoint (so that it resumes) this long.",
)
@json_option
def prune(
    repo: str | None,
    unindexed_grace: str,
    grace: str,
    repack_below: int,
    checkpoint_max_age: str,
    as_json: bool,
) -> None:
    """Delete data that no snapshot references; safe while backups run.

    Two phases: packs no snapshot needs are condemned (dropped from the index) and deleted
    once no backup that started before that is still running; a condemned pack that a backup
    used meanwhile is kept. Partly used packs are repacked; small index files are merged."""
    unindexed = parse_duration(unindexed_grace, "--unindexed-grace")
    condemned_grace = parse_duration(grace, "--grace")
    max_age = parse_duration(checkpoint_max_age, "--checkpoint-max-age")
    stats = prune_repo(
        open_repo(repo),
        unindexed,
        grace=condemned_grace,
        repack_below=repack_below / 100,
        progress=status,
        checkpoint_max_age=max_age,
    )
    if as_json:
        emit_json(stats.as_dict())
        return
    click.echo(
        f"pruned: {plural(stats.packs_deleted, 'pack')} deleted, {stats.packs_written} written, "
        f"{plural(stats.unindexed_deleted, 'unindexed pack')} deleted, "
        f"{_mib(stats.bytes_freed)} freed"
        + (f"; {stats.locked} objects kept: still under Object Lock" if stats.locked else "")
    )
    if stats.packs_waiting:
        owners = ", ".join(sorted(set(stats.waiting_for))) or "the grace period"
        click.echo(
            f"{stats.packs_waiting} condemned packs wait for {owners}; a later prune deletes them"
        )
    if stats.packs_resurrected:
        click.echo(f"{stats.packs_resurrected} condemned packs kept: a newer snapshot uses them")


@click.command()
@repo_option
@json_option
def stats(repo: str | None, as_json: bool) -> None:
    """Snapshots, logical and stored bytes, and the deduplication ratio."""
    repository = open_repo(repo)
    found = repository.snapshots()
    logical = sum(s.size for s in found)
    packs = list(repository.backend.list("data/"))
    stored = sum(repository.backend.size(p) for p in packs)
    body = {
        "snapshots": len(found),
        "logical_bytes": logical,
        "stored_bytes": stored,
        "packs": len(packs),
        "chunks": len(repository.index),
        "ratio": round(logical / stored, 3) if stored else None,
    }
    if as_json:
        emit_json(body)
        return
    ratio = f"{logical / stored:.2f} x" if stored else "- (nothing stored)"
    emit_table(
        f"repository {repository.id[:8]}",
        ["", "value"],
        [
            ["snapshots", str(len(found))],
            ["logical size (all snapshots)", format_size(logical)],
            ["stored size", format_size(stored)],
            ["deduplication and compression", ratio],
            ["packs", str(len(packs))],
            ["chunks", str(len(repository.index))],
        ],
    )
