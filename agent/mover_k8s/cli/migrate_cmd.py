"""`mover app migrate`: move apps (namespaces) to another cluster, each on its own."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from mover.api import emit_json
from mover.errors import MoverError, UsageError
from mover_k8s.cli.options import connect, listing, parse_labels, parse_mapping, with_kube
from mover_k8s.cli.render import show_migration
from mover_k8s.k8s.types import Obj

if TYPE_CHECKING:
    from mover_k8s.k8s.client import Kube


@click.command("migrate")
@click.argument("name")
@click.option(
    "--to-context", required=True, help="kubeconfig context of the target cluster (mover there)."
)
@click.option("--to-kubeconfig", help="kubeconfig of the target [default: --kubeconfig's].")
@click.option("--to-namespace", help="mover's namespace on the target [default: --namespace].")
@click.option(
    "--include-namespace", "namespaces", multiple=True, help="An app (namespace) to move."
)
@click.option("--namespace-selector", help="The apps: namespaces with these labels (KEY=VALUE).")
@click.option(
    "--exclude-namespace", "excluded_namespaces", multiple=True, help="Never this namespace."
)
@click.option("--repository", default="default", show_default=True, help="Source Repository.")
@click.option(
    "--target-repository",
    help="The target's Repository: the same repository, or a replica [default: --repository].",
)
@click.option("--namespace-mapping", multiple=True, help="OLD=NEW: an app's target namespace.")
@click.option("--storage-class-mapping", multiple=True, help="OLD=NEW.")
@click.option(
    "--seed-rounds",
    default=1,
    show_default=True,
    type=click.IntRange(0, 100),
    help="Incremental backups restored into the target's volumes while the app runs.",
)
@click.option(
    "--phase",
    type=click.Choice(["all", "seed", "cutover"]),
    default="all",
    show_default=True,
    help="seed: only seed (again: more rounds); cutover: the last backup and the full restore.",
)
@click.option(
    "--parallel",
    default=20,
    show_default=True,
    type=click.IntRange(1, 10000),
    help="Apps in flight at once.",
)
@click.option("--external-wait", metavar="DURATION", help="The target Restores' externalWait.")
@click.option(
    "--desired",
    type=click.Path(path_type=Path),
    help="Git checkout: drift of each app (DIR/NAMESPACE when there, else DIR) against git.",
)
@click.option("--poll", default=1.0, show_default=True, help="Seconds between status reads.")
@click.option(
    "--timeout", default=86400.0, show_default=True, help="Seconds; apps not done then fail."
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@with_kube
def migrate_cmd(
    name: str,
    to_context: str,
    to_kubeconfig: str | None,
    to_namespace: str | None,
    namespaces: tuple[str, ...],
    namespace_selector: str | None,
    excluded_namespaces: tuple[str, ...],
    repository: str,
    target_repository: str | None,
    namespace_mapping: tuple[str, ...],
    storage_class_mapping: tuple[str, ...],
    seed_rounds: int,
    phase: str,
    parallel: int,
    external_wait: str | None,
    desired: Path | None,
    poll: float,
    timeout: float,
    as_json: bool,
    kubeconfig: str | None,
    kube_context: str | None,
    namespace: str,
) -> None:
    """Move apps (namespaces) to the cluster of --to-context, each on its own: seed its volumes
    there by incremental backups while it runs, then cut over (a last backup, a full restore
    by difference). Both clusters run mover and share the repository (or a replica). Exit 1
    when an app failed (the others still move)."""
    from mover_k8s import migrate

    included = listing(namespaces)
    ns_labels = parse_labels(namespace_selector)
    if not included and not ns_labels:
        raise UsageError("say which apps: --include-namespace NS and/or --namespace-selector K=V")
    mapping = parse_mapping(namespace_mapping, "--namespace-mapping")
    classes = parse_mapping(storage_class_mapping, "--storage-class-mapping")
    if desired is not None:
        from mover_k8s.diff import desired_source

        desired_source(desired)  # a directory, buildable: checked before anything is made
    if seed_rounds == 0 and phase == "seed":
        raise UsageError("--phase seed with --seed-rounds 0 has nothing to do")
    source = connect(kubeconfig, kube_context)
    target = connect(to_kubeconfig or kubeconfig, to_context)
    chosen = _apps_on_source(source, ns_labels, included, listing(excluded_namespaces), namespace)
    plan = migrate.Plan(
        name,
        chosen,
        mapping,
        classes,
        seed_rounds,
        phase,
        parallel,
        external_wait,
        desired,
        poll,
        timeout,
    )
    notify = (lambda line: click.echo(line, err=True)) if sys.stderr.isatty() else None
    migration = migrate.Migration(
        migrate.Side(source, namespace, repository),
        migrate.Side(target, to_namespace or namespace, target_repository or repository),
        plan,
        notify,
    )
    migration.check()
    reports = migration.run()
    _report(name, reports, as_json)


def _apps_on_source(
    source: Kube,
    selector: Obj | None,
    included: list[str],
    excluded: list[str],
    namespace: str,
) -> list[str]:
    """The apps (namespaces) to move, as apps.select_namespaces() chooses them on the source;
    one named with --include-namespace must be there."""
    from mover_k8s import apps

    missing = apps.missing_namespaces(source, included)
    if missing:
        raise UsageError(f"--include-namespace: no namespace {', '.join(missing)} on the source")
    return apps.select_namespaces(source, selector, included, excluded, namespace)


def _report(name: str, reports: list[Obj], as_json: bool) -> None:
    """Each app's report and the totals; exit 1 naming the apps that did not move."""
    from mover_k8s import migrate

    totals = migrate.summary(reports)
    if as_json:
        emit_json({"migration": name, "summary": totals, "apps": reports})
    else:
        show_migration(name, reports, totals)
    failed = [r for r in reports if r["state"] != "completed"]
    if failed:
        raise MoverError(
            f"{len(failed)} of {len(reports)} apps did not move: "
            + "; ".join(f"{r['app']} ({r['failedStep']}): {r['error']}" for r in failed)
        )
