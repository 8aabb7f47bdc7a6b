"""`mover app restore`: a Restore of a Backup, full, data-only or resources-only."""

from __future__ import annotations

from typing import Any

import click

from mover.errors import UsageError
from mover_k8s import api
from mover_k8s.cli.options import connect, listing, parse_labels, parse_mapping, with_kube
from mover_k8s.cli.submit import submit
from mover_k8s.k8s.types import Obj


@click.command("restore")
@click.argument("name")
@click.option("--from-backup", "backup", required=True, help="The Backup (NAME or NAMESPACE/NAME).")
@click.option(
    "--mode",
    type=click.Choice(api.MODES),
    default="full",
    show_default=True,
    help="full: objects and volume data; data-only: only the volumes' data, into the claims "
    "that exist (a GitOps redeploy); resources-only: only the objects.",
)
@click.option("--namespace-mapping", multiple=True, help="OLD=NEW (repeat, or comma-separate).")
@click.option("--storage-class-mapping", multiple=True, help="OLD=NEW.")
@click.option("--include-kinds", multiple=True, help="Only these kinds (Kind or Kind.group).")
@click.option("--exclude-kinds", multiple=True, help="Not these kinds (Kind or Kind.group).")
@click.option("--include-names", multiple=True, help="NAME or Kind/NAME.")
@click.option("--exclude-names", multiple=True, help="Not these objects (NAME, or NAMESPACE/NAME).")
@click.option("--volume", "volumes", multiple=True, help="Only this volume (NAMESPACE/PVC or PVC).")
@click.option("--selector", "-l", help="Only objects with these labels.")
@click.option(
    "--existing",
    type=click.Choice(["skip", "update"]),
    default="skip",
    show_default=True,
    help="Objects that exist already.",
)
@click.option(
    "--repository", help="Read the backup from this Repository (e.g. on another cluster)."
)
@click.option(
    "--external-wait",
    metavar="DURATION",
    help="How long after the restore ends new external names (a load balancer's hostname) "
    "are looked for (e.g. 30m)  [default: 10m]",
)
@click.option(
    "--preserve-node-ports",
    is_flag=True,
    help="Keep the Services' captured nodePorts (by default the cluster gives new ones).",
)
@click.option(
    "--rewrite-namespace-references",
    is_flag=True,
    help="Rewrite NAME.OLD.svc[.cluster.local] names in the objects' data to the mapped "
    "namespace (by default they are only reported).",
)
@click.option(
    "--transform",
    "transform_file",
    metavar="FILE",
    help="Transform rules (YAML or JSON): JSON Patches for the objects restored, by kind, "
    "namespace, name and labels (see docs/kubernetes.md, Transforms).",
)
@click.option("--wait", is_flag=True, help="Follow the restore until it ends.")
@click.option("--timeout", default=3600.0, show_default=True, help="Seconds --wait waits.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@with_kube
def restore_cmd(
    name: str,
    backup: str,
    mode: str,
    namespace_mapping: tuple[str, ...],
    storage_class_mapping: tuple[str, ...],
    include_kinds: tuple[str, ...],
    exclude_kinds: tuple[str, ...],
    include_names: tuple[str, ...],
    exclude_names: tuple[str, ...],
    volumes: tuple[str, ...],
    selector: str | None,
    existing: str,
    repository: str | None,
    external_wait: str | None,
    preserve_node_ports: bool,
    rewrite_namespace_references: bool,
    transform_file: str | None,
    wait: bool,
    timeout: float,
    as_json: bool,
    kubeconfig: str | None,
    kube_context: str | None,
    namespace: str,
) -> None:
    """Create a Restore NAME of a backup: full, data-only or resources-only."""
    spec: Obj = {
        "backup": backup,
        "mode": mode,
        "namespaceMapping": parse_mapping(namespace_mapping, "--namespace-mapping"),
        "storageClassMapping": parse_mapping(storage_class_mapping, "--storage-class-mapping"),
        "includedKinds": listing(include_kinds),
        "excludedKinds": listing(exclude_kinds),
        "includedNames": listing(include_names),
        "excludedNames": listing(exclude_names),
        "volumes": listing(volumes),
        "existingResourcePolicy": existing,
    }
    labels = parse_labels(selector)
    if labels:
        spec["labelSelector"] = labels
    if repository:
        spec["repository"] = repository
    if external_wait:
        spec["externalWait"] = external_wait
    if preserve_node_ports:
        spec["preserveNodePorts"] = True
    if rewrite_namespace_references:
        spec["rewriteNamespaceReferences"] = True
    if transform_file:
        spec["transforms"] = _transform_rules(transform_file)
    kube = connect(kubeconfig, kube_context)
    submit(kube, api.RESTORE, namespace, name, spec, wait, timeout, as_json)


def _transform_rules(path: str) -> list[Any]:
    """The rules of a --transform file as written, checked here so that a bad file changes
    nothing (the controller checks them again)."""
    from mover_k8s import transforms
    from mover_k8s.errors import SpecError

    try:
        rules = transforms.read_file(path)
        transforms.parse_rules(rules, "transforms")
    except SpecError as exc:
        raise UsageError(f"--transform {path}: {exc}") from None
    return rules
