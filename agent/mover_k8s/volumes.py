"""Which volumes a Backup moves, from which node, read how.

A PVC's data is read on a node whose agent can reach it: through a CSI VolumeSnapshot when a
VolumeSnapshotClass serves the volume's driver (crash-consistent, and the app keeps running),
else, for `local` and `hostPath` volumes, from the path on their node (the path exposer; what
tests and single machines use). A PVC that is not bound, or that neither way reaches, is a
problem reported before anything is stored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mover_k8s import api
from mover_k8s.errors import NotFound
from mover_k8s.k8s.client import Kube, Obj
from mover_k8s.views import ClaimView, VolumeView

SELECTED_NODE = "volume.kubernetes.io/selected-node"
HOSTNAME_KEYS = ("kubernetes.io/hostname",)


@dataclass
class Volume:
    namespace: str
    pvc: str
    pv: str = ""
    storage_class: str = ""
    size: int = 0
    node: str = ""
    source: dict[str, str] = field(default_factory=dict)  # {"path": ...} or {"volumeSnapshot": ...}
    problem: tuple[str, str] | None = None  # (reason, message)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.pvc}"

    def status(self) -> Obj:
        entry: Obj = {
            "namespace": self.namespace,
            "pvc": self.pvc,
            "pv": self.pv,
            "storageClass": self.storage_class,
            "node": self.node,
            "size": self.size,
        }
        if "volumeSnapshot" in self.source:
            entry["volumeSnapshot"] = self.source["volumeSnapshot"]
        return entry


def local_path(pv: Obj) -> str:
    spec = pv.get("spec") or {}
    for kind in ("local", "hostPath"):
        path = (spec.get(kind) or {}).get("path")
        if path:
            return str(path)
    return ""


def pv_node(pv: Obj) -> str:
    required = VolumeView.of(pv).node_affinity.get("required") or {}
    terms = required.get("nodeSelectorTerms") or []
    for term in terms:
        for expr in term.get("matchExpressions") or []:
            if expr.get("key") in HOSTNAME_KEYS and expr.get("operator") == "In":
                values = expr.get("values") or []
                if len(values) == 1:
                    return str(values[0])
    return ""


_UNITS = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40, "Pi": 1 << 50}
_UNITS.update({"k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15})


def quantity(text: Any) -> int:
    value = str(text or "0")
    for suffix, factor in sorted(_UNITS.items(), key=lambda kv: -len(kv[0])):
        if value.endswith(suffix):
            return int(float(value[: -len(suffix)]) * factor)
    try:
        return int(float(value))
    except ValueError:
        return 0


def _node_of_pods(pods: list[Obj], namespace: str, claim: str) -> str:
    for pod in pods:
        if pod["metadata"].get("namespace") != namespace:
            continue
        for volume in (pod.get("spec") or {}).get("volumes") or []:
            if (volume.get("persistentVolumeClaim") or {}).get("claimName") == claim:
                node = (pod.get("spec") or {}).get("nodeName")
                if node:
                    return str(node)
    return ""


def snapshot_class_for(kube: Kube, driver: str) -> str:
    """The VolumeSnapshotClass for `driver` (the default one if several), or ""."""
    if not driver:
        return ""
    try:
        classes = kube.list(api.VOLUME_SNAPSHOT_CLASS)
    except NotFound:  # the snapshot CRDs are not installed: no snapshots here
        return ""
    matching = [c for c in classes if c.get("driver") == driver]
    matching.sort(
        key=lambda c: (
            (c["metadata"].get("annotations") or {}).get(
                "snapshot.storage.kubernetes.io/is-default-class"
            )
            != "true"
        )
    )
    return str(matching[0]["metadata"]["name"]) if matching else ""


def plan(kube: Kube, objects: list[Obj], agent_nodes: set[str]) -> list[Volume]:
    pods = [o for o in objects if o.get("kind") == "Pod"]
    volumes = []
    for pvc in (o for o in objects if o.get("kind") == "PersistentVolumeClaim"):
        claim = ClaimView.of(pvc)
        volume = Volume(claim.meta.namespace, claim.meta.name, storage_class=claim.storage_class)
        volumes.append(volume)
        pv_name = claim.volume_name
        pv = kube.find(api.PV, None, pv_name) if pv_name else None
        if pv is None:
            volume.problem = (
                "VolumeNotBound",
                f"PVC {volume.key} is not bound to a PersistentVolume; nothing to read",
            )
            continue
        volume.pv = pv_name
        pv_view = VolumeView.of(pv)
        volume.size = quantity(pv_view.capacity or None)
        volume.node = (
            pv_node(pv)
            or claim.meta.annotations.get(SELECTED_NODE, "")
            or _node_of_pods(pods, volume.namespace, volume.pvc)
        )
        driver = pv_view.csi_driver
        if not driver and volume.storage_class:
            sc = kube.find(api.STORAGE_CLASS, None, volume.storage_class)
            driver = str((sc or {}).get("provisioner") or "")
        snapshot_class = snapshot_class_for(kube, driver) if pv_view.csi else ""
        path = local_path(pv)
        if snapshot_class:
            volume.source = {"volumeSnapshotClass": snapshot_class}
            # A snapshot can be read from any node (the agent attaches a volume made from it).
            if not volume.node or volume.node not in agent_nodes:
                volume.node = sorted(agent_nodes)[0] if agent_nodes else volume.node
        elif path:
            volume.source = {"path": path}
        else:
            volume.problem = (
                "NoVolumeSource",
                f"PVC {volume.key}: its volume has no VolumeSnapshotClass for driver "
                f"{driver or '(none)'} and is not a local or hostPath volume; mover cannot read it",
            )
            continue
        if not volume.node:
            volume.problem = ("NoNode", f"PVC {volume.key}: no node can reach its volume")
        elif volume.node not in agent_nodes:
            volume.problem = (
                "NoAgent",
                f"PVC {volume.key} is on node {volume.node}, where no mover node agent runs; "
                "start the agent there (DaemonSet mover-node) and back up again",
            )
    return volumes
