"""`mover app diff`: what ran (the objects a Backup captured) against what git declared."""

from __future__ import annotations

from pathlib import Path

import click

from mover.api import emit_json
from mover.errors import MoverError, UsageError
from mover_k8s.cli.captured import captured_objects
from mover_k8s.cli.options import connect, with_kube
from mover_k8s.cli.render import show_diff


@click.command("diff")
@click.argument("name")
@click.option(
    "--desired",
    required=True,
    type=click.Path(path_type=Path),
    help="Directory of manifests (a git checkout): *.yaml, *.yml, *.json; or a kustomization "
    "(built with `kubectl kustomize`); or a Helm chart (rendered with `helm template`).",
)
@click.option(
    "--helm-values",
    multiple=True,
    # Checked in the command, not by click: the docs' example commands parse without the files.
    type=click.Path(dir_okay=False, path_type=Path),
    help="Values file for the chart --desired names (repeatable; later files win).",
)
@click.option(
    "--helm-release",
    help="Release name the chart is rendered with [default: the chart's name].",
)
@click.option(
    "--default-namespace",
    help="Namespace of desired objects that name none [default: the Backup's one namespace].",
)
@click.option("--exit-code", is_flag=True, help="Exit 1 when there is drift (as git diff does).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@with_kube
def diff_cmd(
    name: str,
    desired: Path,
    helm_values: tuple[Path, ...],
    helm_release: str | None,
    default_namespace: str | None,
    exit_code: bool,
    as_json: bool,
    kubeconfig: str | None,
    kube_context: str | None,
    namespace: str,
) -> None:
    """What ran vs. what git declared: the objects a Backup captured live against a directory of
    manifests, a kustomization or a Helm chart. Exit 0 (with --exit-code: 1 when they differ)."""
    from mover_k8s.diff import desired_source, diff, load_desired

    # Bad input (and a missing kubectl or helm) fails before the cluster is asked. A chart is
    # rendered once the namespace is known: templates may name .Release.Namespace.
    for values in helm_values:
        if not values.is_file():
            raise UsageError(f"Invalid value for '--helm-values': {values} is not a file")
    source = desired_source(desired, helm_values, helm_release)
    wanted = None if source.form == "chart" else load_desired(source)
    kube = connect(kubeconfig, kube_context)
    backup, capture = captured_objects(kube, namespace, name)
    if default_namespace is None:
        scope = (capture.get("scope") or {}).get("namespaces") or []
        default_namespace = scope[0] if len(scope) == 1 else ""
    if wanted is None:
        wanted = load_desired(source, default_namespace)
    report = diff(capture.get("objects") or [], wanted, default_namespace)
    if as_json:
        emit_json(
            {
                "backup": name,
                "rootHash": (backup.get("status") or {}).get("rootHash"),
                "desired": str(desired),
                "desiredForm": source.form,
                **report.as_dict(),
            }
        )
    else:
        show_diff(report)
    if exit_code and report.drift:
        raise MoverError(
            f"drift: {len(report.only_in_cluster)} only in the cluster, "
            f"{len(report.only_in_git)} only in git, {len(report.changed)} changed"
        )
