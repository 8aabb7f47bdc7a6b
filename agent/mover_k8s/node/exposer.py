"""How a volume becomes a path the data path can read or write on this node (Velero's exposer
seam). Two implementations:

- `PathExposer`: the volume is a file or block device named by path: a VolumeBackup's
  `spec.source.path`, or the `local`/`hostPath` path of the PV. Used by tests and single
  machines, and by clusters whose volumes are local disks. `root` prefixes every path (the
  agent's pod sees the host's filesystem under e.g. /host).
- `SnapshotExposer`: the real cluster's way. For a backup, a PVC is made from the CSI
  VolumeSnapshot in Block mode and attached to this node by a pod pinned here that only holds
  it; the kubelet publishes the block device under its pod directory, which the agent (with the
  kubelet directory mounted) reads. For a restore into a Block-mode PVC, the same pod attaches
  the target PVC itself; a Filesystem-mode PVC's CSI volume is seen in Block mode through a
  second, static PV of the same volume handle (reclaim policy Retain) and a claim of our own.
  Everything made is released (deleted) when the job ends.

Contract: `expose_*` return an `Exposed` whose `path` is ready to open, or raise SpecError
(reason for the work item's condition) or KubeError; `release()` is called exactly once after
the job, whatever its outcome, and must not raise for objects already gone.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from mover_k8s import api
from mover_k8s.errors import SpecError
from mover_k8s.k8s.client import Kube, Obj, ResourceType
from mover_k8s.volumes import local_path


def _nothing() -> None:
    return None


@dataclass
class Exposed:
    path: str
    release: Callable[[], None] = field(default=_nothing)


class Exposer(Protocol):
    def expose_source(self, item: Obj) -> Exposed:
        """The volume a VolumeBackup reads."""
        ...

    def expose_target(self, item: Obj) -> Exposed:
        """The volume a VolumeRestore writes."""
        ...


def target_pv(kube: Kube, item: Obj) -> Obj:
    pvc_ref = (item.get("spec") or {}).get("pvc") or {}
    namespace, name = pvc_ref.get("namespace", ""), pvc_ref.get("name", "")
    pvc = kube.find(api.PVC, namespace, name)
    if pvc is None:
        raise SpecError("PVCNotFound", f"target PVC {namespace}/{name} does not exist")
    volume_name = (pvc.get("spec") or {}).get("volumeName")
    pv = kube.find(api.PV, None, volume_name) if volume_name else None
    if pv is None:
        raise SpecError("VolumeNotBound", f"target PVC {namespace}/{name} is not bound yet")
    return pv


class PathExposer:
    def __init__(self, kube: Kube, root: str = "") -> None:
        self.kube = kube
        self.root = root.rstrip("/")

    def _on_node(self, path: str, what: str) -> str:
        full = f"{self.root}{path}" if self.root else path
        if not os.path.exists(full):
            raise SpecError("VolumeNotFound", f"{what}: {full} does not exist on this node")
        return full

    def expose_source(self, item: Obj) -> Exposed:
        spec = item.get("spec") or {}
        path = (spec.get("source") or {}).get("path")
        if not path:
            pv = self.kube.find(api.PV, None, spec.get("pv") or "")
            path = local_path(pv) if pv else ""
        if not path:
            raise SpecError(
                "NoVolumeSource", "the VolumeBackup names neither spec.source.path nor a local PV"
            )
        return Exposed(self._on_node(str(path), "volume"))

    def expose_target(self, item: Obj) -> Exposed:
        pv = target_pv(self.kube, item)
        path = local_path(pv)
        if not path:
            raise SpecError(
                "NoVolumeTarget",
                f"PV {pv['metadata']['name']} is not a local or hostPath volume",
            )
        return Exposed(self._on_node(path, f"PV {pv['metadata']['name']}"))


def _short(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=5).hexdigest()


@dataclass
class _Release:
    """Deletes what an exposer made: the holder pod, then its own claim and PV, if any."""

    kube: Kube
    namespace: str
    pod: str
    claim: str | None = None
    pv: str | None = None

    def __call__(self) -> None:
        self.kube.delete(api.POD, self.namespace, self.pod)
        if self.claim is not None:
            self.kube.delete(api.PVC, self.namespace, self.claim)
        if self.pv is not None:
            self.kube.delete(api.PV, None, self.pv)


class SnapshotExposer:
    """Attach a volume to this node through a holder pod (see the module docstring)."""

    def __init__(
        self,
        kube: Kube,
        node: str,
        kubelet_dir: str = "/var/lib/kubelet",
        image: str = "registry.k8s.io/pause:3.10",
        timeout: float = 600.0,
        poll: float = 2.0,
    ) -> None:
        self.kube = kube
        self.node = node
        self.kubelet_dir = kubelet_dir.rstrip("/")
        self.image = image
        self.timeout = timeout
        self.poll = poll

    def _holder(self, namespace: str, name: str, claim: str) -> Obj:
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": {"app.kubernetes.io/component": "mover-volume-holder"},
            },
            "spec": {
                "nodeName": self.node,
                "restartPolicy": "Never",
                "tolerations": [{"operator": "Exists"}],
                "containers": [
                    {
                        "name": "hold",
                        "image": self.image,
                        "volumeDevices": [{"name": "volume", "devicePath": "/dev/mover-volume"}],
                    }
                ],
                "volumes": [{"name": "volume", "persistentVolumeClaim": {"claimName": claim}}],
            },
        }

    def _wait_attached(self, namespace: str, pod_name: str, claim: str) -> str:
        """The device path once the pod runs and the claim is bound."""
        deadline = time.monotonic() + self.timeout
        while True:
            pod = self.kube.find(api.POD, namespace, pod_name)
            pvc = self.kube.find(api.PVC, namespace, claim)
            phase = ((pod or {}).get("status") or {}).get("phase")
            volume = ((pvc or {}).get("spec") or {}).get("volumeName")
            bound = ((pvc or {}).get("status") or {}).get("phase") == "Bound"
            if pod is not None and phase == "Running" and volume and bound:
                uid = pod["metadata"]["uid"]
                # Where the kubelet publishes a CSI block volume for a pod.
                return f"{self.kubelet_dir}/pods/{uid}/volumeDevices/kubernetes.io~csi/{volume}"
            if phase == "Failed":
                raise SpecError("AttachFailed", f"holder pod {namespace}/{pod_name} failed")
            if time.monotonic() > deadline:
                raise SpecError(
                    "AttachTimeout",
                    f"volume {namespace}/{claim} was not attached to {self.node} within "
                    f"{self.timeout:.0f}s (pod phase {phase}, claim bound: {bound})",
                )
            time.sleep(self.poll)

    def _release(
        self, namespace: str, pod_name: str, claim: str | None, pv: str | None = None
    ) -> _Release:
        return _Release(self.kube, namespace, pod_name, claim, pv)

    def expose_source(self, item: Obj) -> Exposed:
        spec = item.get("spec") or {}
        namespace = (spec.get("pvc") or {}).get("namespace", "")
        snapshot_name = (spec.get("source") or {}).get("volumeSnapshot", "")
        snapshot = self.kube.find(api.VOLUME_SNAPSHOT, namespace, snapshot_name)
        if snapshot is None:
            raise SpecError(
                "SnapshotNotFound", f"VolumeSnapshot {namespace}/{snapshot_name} does not exist"
            )
        deadline = time.monotonic() + self.timeout
        while not (snapshot.get("status") or {}).get("readyToUse"):
            error = ((snapshot.get("status") or {}).get("error") or {}).get("message")
            if error:
                raise SpecError("SnapshotFailed", f"VolumeSnapshot {snapshot_name}: {error}")
            if time.monotonic() > deadline:
                raise SpecError(
                    "SnapshotTimeout", f"VolumeSnapshot {snapshot_name} was not ready in time"
                )
            time.sleep(self.poll)
            snapshot = self.kube.get(api.VOLUME_SNAPSHOT, namespace, snapshot_name)
        size = (snapshot.get("status") or {}).get("restoreSize") or "1Gi"
        source_pvc = self.kube.find(api.PVC, namespace, (spec.get("pvc") or {}).get("name", ""))
        storage_class = ((source_pvc or {}).get("spec") or {}).get("storageClassName")
        name = f"mover-vb-{_short(item['metadata'].get('uid') or item['metadata']['name'])}"
        claim: Obj = {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "volumeMode": "Block",
                "resources": {"requests": {"storage": size}},
                "dataSource": {
                    "apiGroup": "snapshot.storage.k8s.io",
                    "kind": "VolumeSnapshot",
                    "name": snapshot_name,
                },
            },
        }
        if storage_class:
            claim["spec"]["storageClassName"] = storage_class
        self._create_or_keep(api.PVC, claim)
        self._create_or_keep(api.POD, self._holder(namespace, name, name))
        release = self._release(namespace, name, name)
        try:
            path = self._wait_attached(namespace, name, name)
        except BaseException:
            release()
            raise
        return Exposed(path, release)

    def expose_target(self, item: Obj) -> Exposed:
        spec = item.get("spec") or {}
        pvc_ref = spec.get("pvc") or {}
        namespace, claim = pvc_ref.get("namespace", ""), pvc_ref.get("name", "")
        pvc = self.kube.find(api.PVC, namespace, claim)
        if pvc is None:
            raise SpecError("PVCNotFound", f"target PVC {namespace}/{claim} does not exist")
        name = f"mover-vr-{_short(item['metadata'].get('uid') or item['metadata']['name'])}"
        if (pvc.get("spec") or {}).get("volumeMode", "Filesystem") == "Block":
            self._create_or_keep(api.POD, self._holder(namespace, name, claim))
            release = self._release(namespace, name, None)
        else:
            release = self._block_view(namespace, name, target_pv(self.kube, item))
        try:
            path = self._wait_attached(namespace, name, name if release.claim else claim)
        except BaseException:
            release()
            raise
        return Exposed(path, release)

    def _block_view(self, namespace: str, name: str, pv: Obj) -> _Release:
        """A Filesystem-mode claim's volume seen as a block device: a second, static PV for the
        same CSI volume in Block mode, bound to a claim of our own, attached by the holder pod.
        Its reclaim policy is Retain, so deleting it afterwards never deletes the disk."""
        csi = (pv.get("spec") or {}).get("csi")
        if not csi or not csi.get("driver") or not csi.get("volumeHandle"):
            raise SpecError(
                "CannotAttach",
                f"PV {pv['metadata']['name']} is not a CSI volume; mover cannot attach it as a "
                "block device to write the volume image",
            )
        capacity = ((pv.get("spec") or {}).get("capacity") or {}).get("storage", "1Gi")
        block_csi = {k: v for k, v in csi.items() if k != "fsType"}
        self._create_or_keep(
            api.PV,
            {
                "apiVersion": "v1",
                "kind": "PersistentVolume",
                "metadata": {"name": name, "namespace": namespace},
                "spec": {
                    "capacity": {"storage": capacity},
                    "accessModes": ["ReadWriteOnce"],
                    "volumeMode": "Block",
                    "persistentVolumeReclaimPolicy": "Retain",
                    "storageClassName": "",
                    "csi": block_csi,
                    "claimRef": {"namespace": namespace, "name": name},
                },
            },
            namespaced=False,
        )
        self._create_or_keep(
            api.PVC,
            {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {"name": name, "namespace": namespace},
                "spec": {
                    "accessModes": ["ReadWriteOnce"],
                    "volumeMode": "Block",
                    "storageClassName": "",
                    "volumeName": name,
                    "resources": {"requests": {"storage": capacity}},
                },
            },
        )
        self._create_or_keep(api.POD, self._holder(namespace, name, name))
        return self._release(namespace, name, name, pv=name)

    def _create_or_keep(self, rt: ResourceType, body: Obj, namespaced: bool = True) -> None:
        meta = body["metadata"]
        namespace = meta["namespace"] if namespaced else None
        if not namespaced:
            meta.pop("namespace", None)
        if self.kube.find(rt, namespace, meta["name"]) is None:
            self.kube.create(rt, body)
