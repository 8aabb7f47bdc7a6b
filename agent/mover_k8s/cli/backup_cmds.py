"""`mover app backup` and `mover app schedule`: a Backup now, or a Schedule of them."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING

import click

from mover.api import emit_json
from mover.errors import MoverError, UsageError
from mover_k8s import api
from mover_k8s.cli.options import connect, listing, parse_labels, per_namespace_options, with_kube
from mover_k8s.cli.render import show_backup_set, state_of, summary
from mover_k8s.cli.submit import create_or_explain, submit
from mover_k8s.k8s.types import Obj

if TYPE_CHECKING:
    from mover_k8s.k8s.client import Kube


@click.command("backup")
@click.argument("name")
@click.option(
    "--include-namespace",
    "namespaces",
    multiple=True,
    help="Namespace to capture (repeat, or comma-separate).",
)
@click.option("--selector", "-l", help="Capture the objects with these labels (KEY=VALUE,...).")
@click.option(
    "--repository",
    "repository",
    default="default",
    show_default=True,
    help="Repository (a mover.dev Repository in --namespace).",
)
@click.option("--include-kinds", multiple=True, help="Only these kinds (Kind or Kind.group).")
@click.option("--exclude-kinds", multiple=True, help="Not these kinds.")
@click.option("--no-volumes", is_flag=True, help="Capture objects only.")
@click.option("--ttl", default="", help="Keep the backup this long (e.g. 720h).")
@per_namespace_options(
    "One Backup per namespace (NAME-NAMESPACE), so each app restores on its own."
)
@click.option("--wait", is_flag=True, help="Follow the backup until it ends.")
@click.option("--timeout", default=3600.0, show_default=True, help="Seconds --wait waits.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@with_kube
def backup_cmd(
    name: str,
    namespaces: tuple[str, ...],
    selector: str | None,
    repository: str,
    include_kinds: tuple[str, ...],
    exclude_kinds: tuple[str, ...],
    no_volumes: bool,
    ttl: str,
    per_namespace: bool,
    namespace_selector: str | None,
    excluded_namespaces: tuple[str, ...],
    wait: bool,
    timeout: float,
    as_json: bool,
    kubeconfig: str | None,
    kube_context: str | None,
    namespace: str,
) -> None:
    """Create a Backup NAME of the given namespaces and/or labelled objects; with
    --per-namespace, one Backup per namespace."""
    included = listing(namespaces)
    labels = parse_labels(selector)
    ns_labels = parse_labels(namespace_selector)
    _check_scope(included, labels, per_namespace, ns_labels, excluded_namespaces)
    kube = connect(kubeconfig, kube_context)
    spec: Obj = {
        "repository": repository,
        "includedNamespaces": included,
        "includedKinds": listing(include_kinds),
        "excludedKinds": listing(exclude_kinds),
        "snapshotVolumes": not no_volumes,
    }
    if labels:
        spec["labelSelector"] = labels
    if ttl:
        spec["ttl"] = ttl
    if per_namespace:
        which = (ns_labels, included, listing(excluded_namespaces))
        _backup_per_namespace(kube, namespace, name, spec, which, wait, timeout, as_json)
        return
    submit(kube, api.BACKUP, namespace, name, spec, wait, timeout, as_json)


def _check_scope(
    included: list[str],
    labels: Obj | None,
    per_namespace: bool,
    namespace_labels: Obj | None,
    excluded_namespaces: tuple[str, ...],
) -> None:
    """What `app backup` and `app schedule` capture is said: namespaces and/or labels, or with
    --per-namespace, the namespaces to choose from (a selector and exclusions only go there)."""
    if (namespace_labels or excluded_namespaces) and not per_namespace:
        raise UsageError("--namespace-selector and --exclude-namespace go with --per-namespace")
    if per_namespace and not included and not namespace_labels:
        raise UsageError(
            "say which namespaces: --namespace-selector KEY=VALUE and/or --include-namespace NS"
        )
    if not included and not labels and not per_namespace:
        raise UsageError("say what to back up: --include-namespace NS and/or --selector KEY=VALUE")


def _backup_per_namespace(
    kube: Kube,
    namespace: str,
    name: str,
    spec: Obj,
    which: tuple[Obj | None, list[str], list[str]],
    wait: bool,
    timeout: float,
    as_json: bool,
) -> None:
    """`app backup NAME --per-namespace`: a Backup NAME-NAMESPACE of each namespace selected,
    labelled mover.dev/backup-set=NAME and mover.dev/app=NAMESPACE; every name is checked
    before any is created. With wait, follows them all (one list per poll) and exits 1 when
    one did not complete, naming each."""
    names = _create_backup_set(kube, namespace, name, spec, which)
    objs = _follow_backup_set(kube, namespace, name, names, wait, timeout)
    if as_json:
        emit_json({"name": name, "backups": [summary(b) for b in objs]})
    else:
        show_backup_set(name, objs)
    failed = [b for b in objs if (b.get("status") or {}).get("phase") != api.COMPLETED]
    if wait and failed:
        raise MoverError(
            f"{len(failed)} of {len(objs)} backups did not complete: "
            + "; ".join(f"{b['metadata']['name']}: {state_of(b)}" for b in failed)
        )


def _create_backup_set(
    kube: Kube,
    namespace: str,
    name: str,
    spec: Obj,
    which: tuple[Obj | None, list[str], list[str]],
) -> dict[str, str]:
    """The Backups of `app backup NAME --per-namespace`, created once every name is known to be
    free; their names by the namespace each captures."""
    from mover_k8s import apps

    selector, included, excluded = which
    missing = apps.missing_namespaces(kube, included)
    if missing:
        raise UsageError(f"--include-namespace: no namespace {', '.join(missing)} in the cluster")
    chosen = apps.select_namespaces(kube, selector, included, excluded, namespace)
    if not chosen:
        raise UsageError("no namespace matches --namespace-selector / --include-namespace")
    names = {ns: apps.object_name(name, ns) for ns in chosen}
    taken = [n for n in names.values() if kube.find(api.BACKUP, namespace, n) is not None]
    if taken:
        raise UsageError(
            f"Backup(s) {', '.join(sorted(taken))} exist already in {namespace}; "
            "choose another name"
        )
    for ns, backup_name in names.items():
        body = {
            "apiVersion": api.API_VERSION,
            "kind": "Backup",
            "metadata": {
                "name": backup_name,
                "namespace": namespace,
                "labels": {apps.SET_LABEL: name, apps.APP_LABEL: ns},
            },
            "spec": apps.app_backup_spec(spec, ns),
        }
        create_or_explain(kube, api.BACKUP, body)
    return names


def _follow_backup_set(
    kube: Kube, namespace: str, name: str, names: dict[str, str], wait: bool, timeout: float
) -> list[Obj]:
    """The Backups of the set NAME as they are now, or with wait, once they all ended (one list
    per poll; how many ended shown on a terminal)."""
    from mover_k8s import apps

    query = f"{apps.SET_LABEL}={name}"
    deadline = time.monotonic() + timeout
    while True:
        found = {b["metadata"]["name"]: b for b in kube.list(api.BACKUP, namespace, query)}
        objs = [found[n] for n in names.values() if n in found]
        ended = [b for b in objs if (b.get("status") or {}).get("phase") in api.DONE_PHASES]
        if not wait or len(ended) == len(names):
            return objs
        if time.monotonic() > deadline:
            raise MoverError(
                f"{len(names) - len(ended)} of {len(names)} backups are still running after "
                f"{timeout:.0f}s"
            )
        if sys.stderr.isatty():
            click.echo(f"Backups {name}: {len(ended)} of {len(names)} ended", err=True)
        time.sleep(0.5)


@click.command("schedule")
@click.argument("name")
@click.option("--cron", required=True, help="When, in UTC: a cron expression, e.g. '0 2 * * *'.")
@click.option(
    "--keep-last",
    type=click.IntRange(0, 10000),
    help="Keep the N newest Backups the Schedule made [default: 7 when no --keep-* is given].",
)
@click.option(
    "--keep-hourly", type=click.IntRange(0, 10000), help="Keep the newest Backup of N hours."
)
@click.option("--keep-daily", type=click.IntRange(0, 10000), help="Keep the newest of N days.")
@click.option("--keep-weekly", type=click.IntRange(0, 10000), help="Keep the newest of N weeks.")
@click.option("--keep-monthly", type=click.IntRange(0, 10000), help="Keep the newest of N months.")
@click.option("--keep-yearly", type=click.IntRange(0, 10000), help="Keep the newest of N years.")
@click.option("--include-namespace", "namespaces", multiple=True, help="Namespace to capture.")
@click.option("--selector", "-l", help="Capture the objects with these labels (KEY=VALUE,...).")
@click.option(
    "--repository", default="default", show_default=True, help="The Repository to back up into."
)
@click.option("--no-volumes", is_flag=True, help="Capture objects only.")
@per_namespace_options("Each run: one Backup per namespace; the --keep-* counts are per namespace.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@with_kube
def schedule_cmd(
    name: str,
    cron: str,
    keep_last: int | None,
    keep_hourly: int | None,
    keep_daily: int | None,
    keep_weekly: int | None,
    keep_monthly: int | None,
    keep_yearly: int | None,
    namespaces: tuple[str, ...],
    selector: str | None,
    repository: str,
    no_volumes: bool,
    per_namespace: bool,
    namespace_selector: str | None,
    excluded_namespaces: tuple[str, ...],
    as_json: bool,
    kubeconfig: str | None,
    kube_context: str | None,
    namespace: str,
) -> None:
    """Create a Schedule NAME: a Backup at every CRON time; with --per-namespace, a Backup per
    namespace at every CRON time. Older Backups (and their data) go as the --keep-* rules say,
    with restic's semantics in UTC: e.g. --keep-daily 7 --keep-weekly 4 --keep-monthly 12.
    Without any, the last 7 are kept."""
    from croniter import croniter

    if not croniter.is_valid(cron):
        raise UsageError(f"--cron {cron!r} is not a cron expression (e.g. '0 2 * * *')")
    included = listing(namespaces)
    labels = parse_labels(selector)
    ns_labels = parse_labels(namespace_selector)
    _check_scope(included, labels, per_namespace, ns_labels, excluded_namespaces)
    template: Obj = {
        "repository": repository,
        "includedNamespaces": included,
        "snapshotVolumes": not no_volumes,
    }
    if labels:
        template["labelSelector"] = labels
    tiers = {
        "last": keep_last,
        "hourly": keep_hourly,
        "daily": keep_daily,
        "weekly": keep_weekly,
        "monthly": keep_monthly,
        "yearly": keep_yearly,
    }
    retention = {rule: n for rule, n in tiers.items() if n is not None}
    if retention and not any(retention.values()):
        raise UsageError("the --keep-* rules keep nothing (every count is 0); keep at least one")
    kube = connect(kubeconfig, kube_context)
    spec: Obj = {"schedule": cron, "template": template}
    if set(retention) <= {"last"}:
        spec["keepLast"] = retention.get("last", 7)
    else:
        spec["retention"] = retention
    if per_namespace:
        spec["perNamespace"] = True
        if ns_labels:
            spec["namespaceSelector"] = ns_labels
        if excluded_namespaces:
            spec["excludedNamespaces"] = listing(excluded_namespaces)
    submit(kube, api.SCHEDULE, namespace, name, spec, False, 0, as_json)
