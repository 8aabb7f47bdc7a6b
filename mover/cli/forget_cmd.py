"""`mover forget` and `mover prune`: remove snapshots (by id or by a retention policy), then
the data that no snapshot references any more."""

from __future__ import annotations

from dataclasses import dataclass, field

import click

from mover import api
from mover.api import (
    DEFAULT_REPACK_BELOW,
    Decision,
    Group,
    Policy,
    PruneOptions,
    PruneStats,
    Repository,
    plural,
    snapshot_time,
)
from mover.cli.context import json_option, open_repo, repo_option
from mover.cli.output import emit_json, emit_table, status
from mover.cli.sizes import mib, parse_duration
from mover.errors import UsageError


def _policy(snapshot_ids: tuple[str, ...], counts: dict[str, int | None]) -> Policy | None:
    """The retention policy the --keep-* options give; None when snapshots are named by id."""
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
    return policy if by_policy else None


@dataclass
class _Forgotten:
    """What a forget decided and did."""

    policy: Policy | None  # None: snapshots named by id
    groups: list[Group] = field(default_factory=list)  # the policy's decisions
    remove: list[str] = field(default_factory=list)  # full ids to remove
    removed: list[str] = field(default_factory=list)  # full ids removed (none on a dry run)


def _forget(
    repository: Repository, snapshot_ids: tuple[str, ...], policy: Policy | None, dry_run: bool
) -> _Forgotten:
    done = _Forgotten(policy)
    if policy is not None:
        done.groups = api.forget_by_policy(repository, policy, dry_run=dry_run)
        done.remove = [d.snapshot.id for g in done.groups for d in g.remove]
        done.removed = [] if dry_run else list(done.remove)
    else:  # every id resolved (and checked) before anything is deleted
        done.remove = api.resolve_snapshot_ids(repository, snapshot_ids)
        done.removed = [] if dry_run else api.forget(repository, done.remove)
    return done


def _entry(d: Decision) -> dict[str, object]:
    s = d.snapshot
    body: dict[str, object] = {"id": s.id, "short_id": s.id[:8], "time": s.time}
    if d.keep:
        body["reasons"] = [r.rule for r in d.reasons]
    return body


def _as_json(done: _Forgotten, dry_run: bool, pruned: PruneStats | None) -> dict[str, object]:
    by_policy = done.policy is not None
    return {
        "dry_run": dry_run,
        "policy": done.policy.counts() if done.policy is not None else None,
        "groups": [
            {
                "hostname": g.hostname,
                "source": g.source,
                "keep": [_entry(d) for d in g.keep],
                "remove": [_entry(d) for d in g.remove],
            }
            for g in done.groups
        ],
        "keep": [d.snapshot.id for g in done.groups for d in g.keep] if by_policy else None,
        "remove": done.remove,
        "removed": done.removed,
        "prune": pruned.as_dict() if pruned is not None else None,
    }


def _say_groups(done: _Forgotten, dry_run: bool) -> None:
    if done.policy is not None:
        click.echo(f"policy: keep {done.policy.describe()} snapshots of each (hostname, source)")
    would = "would " if dry_run else ""
    for g in done.groups:
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


def _say(done: _Forgotten, dry_run: bool, then_prune: bool, pruned: PruneStats | None) -> None:
    _say_groups(done, dry_run)
    if done.policy is None:
        for snapshot_id in done.remove:
            click.echo(f"{'would remove' if dry_run else 'removed'} snapshot {snapshot_id[:8]}")
    if dry_run:
        click.echo(
            f"dry run: would remove {plural(len(done.remove), 'snapshot')}; nothing was changed"
        )
    elif done.policy is not None:
        click.echo(f"removed {plural(len(done.removed), 'snapshot')}")
    if pruned is not None:
        click.echo(
            f"pruned: {plural(pruned.packs_deleted, 'pack')} deleted, "
            f"{pruned.packs_written} written, {mib(pruned.bytes_freed)} freed"
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
    policy = _policy(snapshot_ids, counts)
    if unindexed_grace is not None and not then_prune:
        raise UsageError("--unindexed-grace applies only with --prune")
    grace = parse_duration(
        "1h" if unindexed_grace is None else unindexed_grace, "--unindexed-grace"
    )
    repository = open_repo(repo)
    done = _forget(repository, snapshot_ids, policy, dry_run)
    pruned = None
    if then_prune and done.removed:
        options = PruneOptions(unindexed_grace=grace, progress=status)
        pruned = api.prune(repository, options=options)
    if as_json:
        emit_json(_as_json(done, dry_run, pruned))
    else:
        _say(done, dry_run, then_prune, pruned)


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
    default=int(DEFAULT_REPACK_BELOW * 100),
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
    options = PruneOptions(
        unindexed_grace=parse_duration(unindexed_grace, "--unindexed-grace"),
        grace=parse_duration(grace, "--grace"),
        repack_below=repack_below / 100,
        checkpoint_max_age=parse_duration(checkpoint_max_age, "--checkpoint-max-age"),
        progress=status,
    )
    stats = api.prune(open_repo(repo), options=options)
    if as_json:
        emit_json(stats.as_dict())
        return
    click.echo(
        f"pruned: {plural(stats.packs_deleted, 'pack')} deleted, {stats.packs_written} written, "
        f"{plural(stats.unindexed_deleted, 'unindexed pack')} deleted, "
        f"{mib(stats.bytes_freed)} freed"
        + (f"; {stats.locked} objects kept: still under Object Lock" if stats.locked else "")
    )
    if stats.packs_waiting:
        owners = ", ".join(sorted(set(stats.waiting_for))) or "the grace period"
        click.echo(
            f"{stats.packs_waiting} condemned packs wait for {owners}; a later prune deletes them"
        )
    if stats.packs_resurrected:
        click.echo(f"{stats.packs_resurrected} condemned packs kept: a newer snapshot uses them")
