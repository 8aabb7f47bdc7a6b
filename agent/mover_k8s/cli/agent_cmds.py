"""`mover agent ...`: mover's two Kubernetes components, each run in its pods (the controller's
Deployment, the node agents' DaemonSet), and the CRDs they serve."""

from __future__ import annotations

import click

from mover_k8s import api
from mover_k8s.cli.crds import crds_dir
from mover_k8s.cli.options import connect, with_kube
from mover_k8s.cli.serve import run_until_signal


@click.group("agent")
def agent() -> None:
    """Run mover's Kubernetes components (in their pods)."""


@agent.command("controller")
@click.option(
    "--watch-namespace", help="Only this namespace's Backups and Restores [default: all]."
)
@click.option("--interval", default=2.0, show_default=True, help="Seconds between passes.")
@click.option(
    "--agent-grace",
    default=60.0,
    show_default=True,
    help="Seconds a new Backup waits for a missing node agent before it fails.",
)
@click.option(
    "--bind-timeout",
    default=600.0,
    show_default=True,
    help="Seconds a restored claim may take to be bound before its volume fails.",
)
@click.option(
    "--lease-seconds",
    default=15.0,
    show_default=True,
    help="A standby replica takes over when the leader's Lease is this old.",
)
@click.option("--no-watch", is_flag=True, help="Poll only: no watches between passes.")
@click.option(
    "--metrics-port",
    default=9480,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="Serve Prometheus metrics on this port (/metrics); 0: off.",
)
@with_kube
def controller_cmd(
    watch_namespace: str | None,
    interval: float,
    agent_grace: float,
    bind_timeout: float,
    lease_seconds: float,
    no_watch: bool,
    metrics_port: int,
    kubeconfig: str | None,
    kube_context: str | None,
    namespace: str,
) -> None:
    """The controller: captures, hands out volume work, restores (one Deployment)."""
    from mover_k8s.controller.manager import Controller
    from mover_k8s.metrics import ControllerMetrics

    kube = connect(kubeconfig, kube_context)
    controller = Controller(
        kube,
        namespace,
        ControllerMetrics(),
        watch_namespace=watch_namespace,
        interval=interval,
        agent_grace=agent_grace,
        bind_timeout=bind_timeout,
        lease_seconds=lease_seconds,
        watch=not no_watch,
    )
    run_until_signal(controller.run, controller.metrics.registry, metrics_port)


@agent.command("node")
@click.option(
    "--node", "node", envvar="NODE_NAME", required=True, help="This node's name [env: NODE_NAME]."
)
@click.option(
    "--path-root", default="", help="Where the host's filesystem is mounted (e.g. /host)."
)
@click.option(
    "--kubelet-dir",
    default="/var/lib/kubelet",
    show_default=True,
    help="The kubelet's directory on this node (where volumes are mounted).",
)
@click.option("--no-snapshots", is_flag=True, help="Path exposer only (tests, single machines).")
@click.option(
    "--workers",
    default=1,
    show_default=True,
    type=click.IntRange(1, 64),
    help="Volume jobs this node runs at once.",
)
@click.option("--interval", default=2.0, show_default=True, help="Seconds between passes.")
@click.option(
    "--progress-interval",
    default=2.0,
    show_default=True,
    help="Seconds between progress updates in a work item's status.",
)
@click.option("--no-watch", is_flag=True, help="Poll only: no watches between passes.")
@click.option(
    "--metrics-port",
    default=9481,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="Serve Prometheus metrics on this port (/metrics); 0: off.",
)
@with_kube
def node_cmd(
    node: str,
    path_root: str,
    kubelet_dir: str,
    no_snapshots: bool,
    workers: int,
    interval: float,
    progress_interval: float,
    no_watch: bool,
    metrics_port: int,
    kubeconfig: str | None,
    kube_context: str | None,
    namespace: str,
) -> None:
    """The node agent: runs this node's VolumeBackups and VolumeRestores (the DaemonSet)."""
    from mover_k8s.node.agent import NodeAgent
    from mover_k8s.node.exposer import Exposer, PathExposer, SnapshotExposer

    kube = connect(kubeconfig, kube_context)
    exposers: dict[str, Exposer] = {"path": PathExposer(kube, path_root)}
    if not no_snapshots:
        exposers["snapshot"] = SnapshotExposer(kube, node, namespace, kubelet_dir)
    agent_ = NodeAgent(
        kube,
        node,
        namespace,
        exposers=exposers,
        workers=workers,
        interval=interval,
        progress_interval=progress_interval,
        watch=not no_watch,
    )
    run_until_signal(agent_.run, agent_.metrics.registry, metrics_port)


@agent.command("crds")
def crds_cmd() -> None:
    """Print mover's CRDs (for `kubectl apply -f -`)."""
    found = crds_dir()
    docs = [(found / f"{rt.plural}.yaml").read_text() for rt in api.OURS]
    click.echo("---\n".join(docs), nl=False)
