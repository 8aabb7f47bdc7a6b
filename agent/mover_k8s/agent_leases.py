"""Which nodes run a node agent: each agent renews a Lease `mover-agent-NODE` in its namespace
(coordination.k8s.io, as kubelets do for their nodes); the controller reads them before it
assigns work, so a volume on a node without an agent fails at once with a clear reason instead
of waiting forever."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from mover_k8s import api, timestamps
from mover_k8s.errors import NotFound
from mover_k8s.k8s.client import Kube, Obj

LEASE_SECONDS = 30
PREFIX = "mover-agent-"


def lease_name(node: str) -> str:
    return f"{PREFIX}{node}"


def renew(
    kube: Kube, namespace: str, node: str, identity: str, seconds: int = LEASE_SECONDS
) -> None:
    name = lease_name(node)
    spec: Obj = {
        "holderIdentity": identity,
        "leaseDurationSeconds": seconds,
        "renewTime": timestamps.micro_now(),
    }
    try:
        kube.patch(api.LEASE, namespace, name, {"spec": spec})
    except NotFound:
        kube.create(
            api.LEASE,
            {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {
                    "name": name,
                    "namespace": namespace,
                    "labels": {"app.kubernetes.io/component": "mover-node-agent"},
                },
                "spec": spec,
            },
        )


def release(kube: Kube, namespace: str, node: str) -> None:
    kube.delete(api.LEASE, namespace, lease_name(node))


def live_nodes(kube: Kube, namespace: str) -> set[str]:
    now = datetime.now(UTC)
    nodes = set()
    for lease in kube.list(api.LEASE, namespace):
        name = lease["metadata"]["name"]
        if not name.startswith(PREFIX):
            continue
        spec = lease.get("spec") or {}
        renewed = timestamps.parse(str(spec.get("renewTime") or ""))
        seconds = int(spec.get("leaseDurationSeconds") or LEASE_SECONDS)
        if renewed is not None and renewed + timedelta(seconds=seconds) > now:
            nodes.add(name[len(PREFIX) :])
    return nodes
