"""`mover check`: verify the repository, going on past damage to name all of it."""

from __future__ import annotations

import click

from mover import api
from mover.api import CheckReport, plural
from mover.cli.context import json_option, open_repo, repo_option
from mover.cli.output import emit_json
from mover.errors import RepositoryError, StorageError


def _say(report: CheckReport, read_data: bool) -> None:
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
        report = api.check(repository, read_data=read_data)
    except (RepositoryError, StorageError) as exc:
        if as_json:
            emit_json(CheckReport(errors=[str(exc)]).as_dict())
        raise
    if as_json:
        emit_json(report.as_dict())
    else:
        _say(report, read_data)
    if not report.ok:
        damaged = ", ".join(s[:8] for s in report.damaged_snapshots) or "none"
        raise RepositoryError(
            f"check found {plural(len(report.errors), 'error')}; damaged snapshots: {damaged}; "
            "see `mover repair` for what fixes them"
        )
