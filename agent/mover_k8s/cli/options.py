"""The options every `mover app` and `mover agent` command shares (the kubeconfig, its context,
mover's namespace), the connection they make, and the parsing of the values people write."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from mover.errors import UsageError
from mover_k8s.k8s.types import Obj

if TYPE_CHECKING:  # the client is imported when a command runs: `mover` starts fast without it
    from mover_k8s.k8s.client import Kube


DEFAULT_NAMESPACE = "mover-system"

kube_options = [
    click.option(
        "--kubeconfig", envvar="KUBECONFIG", help="kubeconfig file [default: ~/.kube/config]."
    ),
    click.option(
        "--context", "kube_context", help="kubeconfig context [default: the current one]."
    ),
    click.option(
        "--namespace",
        "-n",
        "--mover-namespace",
        "namespace",
        default=DEFAULT_NAMESPACE,
        show_default=True,
        envvar="MOVER_NAMESPACE",
        help="mover's own namespace, where its Backups, Restores, Schedules and Repositories "
        "are (as Velero's -n); not the app's: that is --include-namespace.",
    ),
]


def with_kube(f: Any) -> Any:
    """--kubeconfig, --context and -n/--namespace (mover's), as every command takes them."""
    for option in reversed(kube_options):
        f = option(f)
    return f


def per_namespace_options(what: str) -> Callable[[Any], Any]:
    """--per-namespace (its help: `what`), --namespace-selector and --exclude-namespace, as
    `app backup` and `app schedule` take them."""
    options = [
        click.option("--per-namespace", is_flag=True, help=what),
        click.option(
            "--namespace-selector",
            help="With --per-namespace: the namespaces with these labels (KEY=VALUE,...).",
        ),
        click.option(
            "--exclude-namespace",
            "excluded_namespaces",
            multiple=True,
            help="With --per-namespace: never this namespace (repeat, or comma-separate).",
        ),
    ]

    def decorate(f: Any) -> Any:
        for option in reversed(options):
            f = option(f)
        return f

    return decorate


def connect(kubeconfig: str | None, kube_context: str | None) -> Kube:
    """The cluster of the kubeconfig's context (the current one by default)."""
    from mover_k8s.k8s.client import Kube

    if kubeconfig and ":" in kubeconfig:
        kubeconfig = kubeconfig.split(":", 1)[0]  # KUBECONFIG may list several; the first wins
    return Kube.connect(kubeconfig, kube_context)


def parse_mapping(values: tuple[str, ...], option: str) -> dict[str, str]:
    """OLD=NEW pairs (repeated, or comma-separated) of `option`, as a dict; one OLD mapped to two
    NEWs is a usage error."""
    result: dict[str, str] = {}
    for value in values:
        for pair in value.split(","):
            source, sep, target = pair.partition("=")
            if not sep or not source or not target:
                raise UsageError(f"{option} {pair!r}: write OLD=NEW (e.g. {option} app=app-copy)")
            if source in result and result[source] != target:
                raise UsageError(f"{option}: {source!r} is mapped twice")
            result[source] = target
    return result


def parse_labels(value: str | None) -> Obj | None:
    """KEY=VALUE[,KEY=VALUE...] as a label selector ({"matchLabels": ...}); None without one."""
    if not value:
        return None
    labels: dict[str, str] = {}
    for pair in value.split(","):
        key, sep, val = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--selector {pair!r}: write KEY=VALUE[,KEY=VALUE...]")
        labels[key] = val
    return {"matchLabels": labels}


def listing(values: tuple[str, ...]) -> list[str]:
    """A repeated option's values, each of which may be comma-separated, as one list."""
    return [v for value in values for v in value.split(",") if v]
