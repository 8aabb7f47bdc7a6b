"""`mover ui`: the web dashboard, on this machine with your kubeconfig, or in the cluster."""

from __future__ import annotations

import secrets
import socket
from pathlib import Path

import click

from mover.errors import UsageError

DEFAULT_NAMESPACE = "mover-system"
LOOPBACK = "127.0.0.1"


@click.command("ui")
@click.option(
    "--kubeconfig", envvar="KUBECONFIG", help="kubeconfig file [default: ~/.kube/config]."
)
@click.option("--context", "kube_context", help="kubeconfig context [default: the current one].")
@click.option(
    "--namespace",
    "-n",
    "--mover-namespace",
    "namespace",
    default=DEFAULT_NAMESPACE,
    show_default=True,
    envvar="MOVER_NAMESPACE",
    help="mover's own namespace (its Backups, Restores, Schedules, Repositories).",
)
@click.option("--port", default=8765, show_default=True, help="Port (0: any free one).")
@click.option(
    "--in-cluster",
    is_flag=True,
    help="Run as the chart's component: every request carries the user's bearer token, "
    "checked with TokenReview and SubjectAccessReview; listens on --listen.",
)
@click.option(
    "--listen",
    default="0.0.0.0",
    show_default=True,
    help="With --in-cluster: the address to listen on (behind the Service).",
)
@click.option(
    "--secure-cookies/--no-secure-cookies",
    default=True,
    show_default=True,
    help="With --in-cluster: cookies only over HTTPS (turn off only behind a proxy that "
    "terminates TLS on the same host).",
)
@click.option(
    "--audience",
    "audiences",
    multiple=True,
    help="With --in-cluster: an audience the users' tokens must carry (TokenReview).",
)
@click.option(
    "--desired-root",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Drift against git reads directories under this one only (in the cluster: a git "
    "checkout mounted into the pod; without it, drift is off there). Locally: any "
    "directory of yours by default.",
)
def ui(
    kubeconfig: str | None,
    kube_context: str | None,
    namespace: str,
    port: int,
    in_cluster: bool,
    listen: str,
    secure_cookies: bool,
    audiences: tuple[str, ...],
    desired_root: Path | None,
) -> None:
    """A web dashboard: applications and their protection, restore points, running backups and
    restores, a restore wizard, repositories and node agents. Locally it acts with your
    kubeconfig and listens on 127.0.0.1 only; open the URL it prints (it holds a secret for
    this run)."""
    import uvicorn

    from mover_k8s.k8s.client import Kube
    from mover_k8s.ui.access import Access, ClusterAccess, LocalAccess
    from mover_k8s.ui.web import Dashboard, build

    if not 0 <= port <= 65535:
        raise UsageError(f"--port {port}: not a port number")
    access: Access
    if in_cluster:
        if kubeconfig or kube_context:
            raise UsageError("--in-cluster uses the pod's ServiceAccount, not a kubeconfig")
        kube = Kube.connect()
        access = ClusterAccess(kube, audiences)
        host = listen
    else:
        kube = Kube.from_kubeconfig(kubeconfig, kube_context)
        access = LocalAccess(kube)
        host = LOOPBACK  # never another address: the dashboard acts with your credentials
    secret = secrets.token_urlsafe(24)
    dashboard = Dashboard(
        access,
        namespace,
        secret,
        secure_cookies=in_cluster and secure_cookies,
        desired_root=desired_root,
    )
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(128)  # connections wait from now on: the URL printed below works at once
    except OSError as exc:
        sock.close()
        kube.close()
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    bound = sock.getsockname()[1]
    if in_cluster:
        click.echo(f"mover ui: listening on {host}:{bound}", err=True)
    else:
        click.echo(f"mover ui: http://{LOOPBACK}:{bound}/?secret={secret}", err=True)
    config = uvicorn.Config(build(dashboard), log_level="warning", access_log=False)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()
        kube.close()
