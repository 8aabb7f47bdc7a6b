"""How a volume becomes a path the data path can read or write on this node (Velero's exposer
seam). Two implementations:

- `PathExposer`: the volume is a file or block device named by path: a VolumeBackup's
  `spec.source.path`, or the `local`/`hostPath` path of the PV. Used by tests and single
  machines, and by clusters whose volumes are local disks. `root` prefixes every path (the
  agent's pod sees the host's filesystem under e.g. /host).
- `SnapshotExposer`: the real cluster's way. Everything it makes lives in mover's own namespace
  (so the agent creates Pods and claims there only, under a namespaced Role) or is
  cluster-scoped, and is deleted when the job ends:
  - backup: the app's CSI VolumeSnapshot is copied into mover's namespace as Velero's exposer
    does: a VolumeSnapshotContent of the same snapshot handle (deletion policy Retain, so
    deleting the copy never deletes the snapshot; allowed to change volume mode) bound to a
    VolumeSnapshot of ours; a Block-mode claim made from it is attached to this node by a pod
    pinned here that only holds it, and the kubelet publishes the block device under its pod
    directory, which the agent (with the kubelet directory mounted) reads;
  - restore: the target claim's CSI volume is seen in Block mode through a second, static PV of
    the same volume handle (reclaim policy Retain) bound to a claim of ours, attached the same
    way.
Contract: `expose_*` return an `Exposed` whose `path` is ready to open, or raise SpecError
(reason for the work item's condition) or KubeError; `release()` is called exactly once after
the job, whatever its outcome, and must not raise for objects already gone.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from mover_k8s import api
from mover_k8s.errors import Conflict, SpecError
from mover_k8s.k8s.client import Kube, Obj, ResourceType
from mover_k8s.views import (
    ClaimView,
    ContentView,
    SnapshotView,
    VolumeView,
    WorkItem,
    status,
)
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
    work = WorkItem.of(item)
    namespace, name = work.pvc_namespace, work.pvc_name
    pvc = kube.find(api.PVC, namespace, name)
    if pvc is None:
        raise SpecError("PVCNotFound", f"target PVC {namespace}/{name} does not exist")
    volume_name = ClaimView.of(pvc).volume_name
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
        work = WorkItem.of(item)
        path = work.source_path
        if not path:
            pv = self.kube.find(api.PV, None, work.pv)
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


# Lets a claim in Block mode be made from a snapshot of a Filesystem-mode volume (the snapshot
# controller refuses the change of mode otherwise, since Kubernetes 1.30).
ALLOW_MODE_CHANGE = "snapshot.storage.kubernetes.io/allow-volume-mode-change"
HOLDER_LABELS = {"app.kubernetes.io/component": "mover-volume-holder"}


@dataclass
class _Release:
    """Deletes what an exposer made, the holder pod first, and whatever it made of these."""

    kube: Kube
    namespace: str
    pod: str
    claim: str | None = None
    pv: str | None = None
    snapshot: str | None = None  # our VolumeSnapshot and VolumeSnapshotContent, same name

    def __call__(self) -> None:
        self.kube.delete(api.POD, self.namespace, self.pod)
        if self.claim is not None:
            self.kube.delete(api.PVC, self.namespace, self.claim)
        if self.pv is not None:
            self.kube.delete(api.PV, None, self.pv)
        if self.snapshot is not None:
            self.kube.delete(api.VOLUME_SNAPSHOT, self.namespace, self.snapshot)
            self.kube.delete(api.VOLUME_SNAPSHOT_CONTENT, None, self.snapshot)


class SnapshotExposer:
    """Attach a volume to this node through a holder pod in mover's namespace (see the module
    docstring)."""

    def __init__(
        self,
        kube: Kube,
        node: str,
        namespace: str,
        kubelet_dir: str = "/var/lib/kubelet",
        image: str = "registry.k8s.io/pause:3.10",
        timeout: float = 600.0,
        poll: float = 2.0,
    ) -> None:
        self.kube = kube
        self.node = node
        self.namespace = namespace  # mover's: where every pod, claim and snapshot it makes is
        self.kubelet_dir = kubelet_dir.rstrip("/")
        self.image = image
        self.timeout = timeout
        self.poll = poll

    def _holder(self, name: str, claim: str) -> Obj:
        """A pod that only holds the claim attached; it passes Pod Security `restricted`."""
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": self.namespace, "labels": HOLDER_LABELS},
            "spec": {
                "nodeName": self.node,
                "restartPolicy": "Never",
                # Pinned by nodeName (no scheduler): only NoExecute taints could evict it.
                "tolerations": [{"operator": "Exists", "effect": "NoExecute"}],
                "automountServiceAccountToken": False,
                "securityContext": {
                    "runAsNonRoot": True,
                    "runAsUser": 65535,
                    "runAsGroup": 65535,
                    "seccompProfile": {"type": "RuntimeDefault"},
                },
                "containers": [
                    {
                        "name": "hold",
                        "image": self.image,
                        "volumeDevices": [{"name": "volume", "devicePath": "/dev/mover-volume"}],
                        "securityContext": {
                            "allowPrivilegeEscalation": False,
                            "readOnlyRootFilesystem": True,
                            "capabilities": {"drop": ["ALL"]},
                        },
                        "resources": {
                            "requests": {"cpu": "1m", "memory": "8Mi"},
                            "limits": {"memory": "16Mi"},
                        },
                    }
                ],
                "volumes": [{"name": "volume", "persistentVolumeClaim": {"claimName": claim}}],
            },
        }

    def _wait_attached(self, name: str) -> str:
        """The device path once the holder pod `name` runs and its claim `name` is bound."""
        namespace = self.namespace
        deadline = time.monotonic() + self.timeout
        while True:
            pod = self.kube.find(api.POD, namespace, name)
            claim = ClaimView.of(self.kube.find(api.PVC, namespace, name))
            phase = status(pod).get("phase")
            volume, bound = claim.volume_name, claim.bound
            if pod is not None and phase == "Running" and volume and bound:
                uid = pod["metadata"]["uid"]
                # Where the kubelet publishes a CSI block volume for a pod.
                return f"{self.kubelet_dir}/pods/{uid}/volumeDevices/kubernetes.io~csi/{volume}"
            if phase == "Failed":
                raise SpecError("AttachFailed", f"holder pod {namespace}/{name} failed")
            if time.monotonic() > deadline:
                raise SpecError(
                    "AttachTimeout",
                    f"volume {namespace}/{name} was not attached to {self.node} within "
                    f"{self.timeout:.0f}s (pod phase {phase}, claim bound: {bound})",
                )
            time.sleep(self.poll)

    def _ready(self, namespace: str, name: str) -> Obj:
        """The VolumeSnapshot once it is ready to use."""
        snapshot = self.kube.find(api.VOLUME_SNAPSHOT, namespace, name)
        if snapshot is None:
            raise SpecError("SnapshotNotFound", f"VolumeSnapshot {namespace}/{name} does not exist")
        deadline = time.monotonic() + self.timeout
        while not SnapshotView.of(snapshot).ready:
            error = SnapshotView.of(snapshot).error
            if error:
                raise SpecError("SnapshotFailed", f"VolumeSnapshot {namespace}/{name}: {error}")
            if time.monotonic() > deadline:
                raise SpecError(
                    "SnapshotTimeout", f"VolumeSnapshot {namespace}/{name} was not ready in time"
                )
            time.sleep(self.poll)
            snapshot = self.kube.get(api.VOLUME_SNAPSHOT, namespace, name)
        return snapshot

    def _copy_snapshot(self, snapshot: Obj, name: str) -> None:
        """The app's snapshot as a VolumeSnapshot `name` of mover's namespace: a second
        VolumeSnapshotContent of the same handle, pre-bound to it."""
        meta = snapshot["metadata"]
        where = f"VolumeSnapshot {meta['namespace']}/{meta['name']}"
        bound = SnapshotView.of(snapshot).bound_content
        found = self.kube.find(api.VOLUME_SNAPSHOT_CONTENT, None, bound) if bound else None
        if found is None:
            raise SpecError("SnapshotNotBound", f"{where} has no VolumeSnapshotContent")
        content = ContentView.of(found)
        handle, driver = content.handle, content.driver
        if not handle or not driver:
            raise SpecError(
                "SnapshotNotBound",
                f"VolumeSnapshotContent {bound} has no snapshot handle or driver yet",
            )
        spec: Obj = {
            "deletionPolicy": "Retain",  # deleting the copy leaves the snapshot to its owner
            "driver": driver,
            "source": {"snapshotHandle": handle},
            "volumeSnapshotRef": {
                "apiVersion": api.VOLUME_SNAPSHOT.api_version,
                "kind": "VolumeSnapshot",
                "namespace": self.namespace,
                "name": name,
            },
        }
        for key in ("sourceVolumeMode", "volumeSnapshotClassName"):
            if content.spec.get(key):
                spec[key] = content.spec[key]
        self._create_or_keep(
            api.VOLUME_SNAPSHOT_CONTENT,
            {
                "apiVersion": api.VOLUME_SNAPSHOT_CONTENT.api_version,
                "kind": "VolumeSnapshotContent",
                "metadata": {
                    "name": name,
                    "labels": HOLDER_LABELS,
                    "annotations": {ALLOW_MODE_CHANGE: "true"},
                },
                "spec": spec,
            },
            namespaced=False,
        )
        copy_spec: Obj = {"source": {"volumeSnapshotContentName": name}}
        if spec.get("volumeSnapshotClassName"):
            copy_spec["volumeSnapshotClassName"] = spec["volumeSnapshotClassName"]
        self._create_or_keep(
            api.VOLUME_SNAPSHOT,
            {
                "apiVersion": api.VOLUME_SNAPSHOT.api_version,
                "kind": "VolumeSnapshot",
                "metadata": {"name": name, "namespace": self.namespace, "labels": HOLDER_LABELS},
                "spec": copy_spec,
            },
        )

    def expose_source(self, item: Obj) -> Exposed:
        work = WorkItem.of(item)
        namespace = work.pvc_namespace
        snapshot = self._ready(namespace, work.source_snapshot)
        size = SnapshotView.of(snapshot).restore_size or "1Gi"
        source_pvc = self.kube.find(api.PVC, namespace, work.pvc_name)
        storage_class = ClaimView.of(source_pvc).storage_class or None
        name = f"mover-vb-{_short(item['metadata'].get('uid') or item['metadata']['name'])}"
        release = _Release(self.kube, self.namespace, name, claim=name, snapshot=name)
        try:
            self._copy_snapshot(snapshot, name)
            self._ready(self.namespace, name)
            claim: Obj = {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {"name": name, "namespace": self.namespace, "labels": HOLDER_LABELS},
                "spec": {
                    "accessModes": ["ReadWriteOnce"],
                    "volumeMode": "Block",
                    "resources": {"requests": {"storage": size}},
                    "dataSource": {
                        "apiGroup": api.VOLUME_SNAPSHOT.group,
                        "kind": "VolumeSnapshot",
                        "name": name,
                    },
                },
            }
            if storage_class:
                claim["spec"]["storageClassName"] = storage_class
            self._create_or_keep(api.PVC, claim)
            self._create_or_keep(api.POD, self._holder(name, name))
            path = self._wait_attached(name)
        except BaseException:
            release()
            raise
        return Exposed(path, release)

    def expose_target(self, item: Obj) -> Exposed:
        """A Block-mode view of the target claim's volume, whatever its mode: the claim lives
        in the app's namespace, where mover makes no pods."""
        name = f"mover-vr-{_short(item['metadata'].get('uid') or item['metadata']['name'])}"
        pv = target_pv(self.kube, item)
        release = _Release(self.kube, self.namespace, name, claim=name, pv=name)
        try:
            self._block_view(name, pv)
            path = self._wait_attached(name)
        except BaseException:
            release()
            raise
        return Exposed(path, release)

    def _block_view(self, name: str, pv: Obj) -> None:
        """A second, static PV for the same CSI volume in Block mode, bound to a claim of our
        own, attached by the holder pod. Its reclaim policy is Retain, so deleting it afterwards
        never deletes the disk."""
        volume = VolumeView.of(pv)
        csi = volume.csi
        if not csi or not csi.get("driver") or not csi.get("volumeHandle"):
            raise SpecError(
                "CannotAttach",
                f"PV {pv['metadata']['name']} is not a CSI volume; mover cannot attach it as a "
                "block device to write the volume image",
            )
        capacity = volume.capacity or "1Gi"
        block_csi = {k: v for k, v in csi.items() if k != "fsType"}
        self._create_or_keep(
            api.PV,
            {
                "apiVersion": "v1",
                "kind": "PersistentVolume",
                "metadata": {"name": name, "labels": HOLDER_LABELS},
                "spec": {
                    "capacity": {"storage": capacity},
                    "accessModes": ["ReadWriteOnce"],
                    "volumeMode": "Block",
                    "persistentVolumeReclaimPolicy": "Retain",
                    "storageClassName": "",
                    "csi": block_csi,
                    "claimRef": {"namespace": self.namespace, "name": name},
                },
            },
            namespaced=False,
        )
        self._create_or_keep(
            api.PVC,
            {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {"name": name, "namespace": self.namespace, "labels": HOLDER_LABELS},
                "spec": {
                    "accessModes": ["ReadWriteOnce"],
                    "volumeMode": "Block",
                    "storageClassName": "",
                    "volumeName": name,
                    "resources": {"requests": {"storage": capacity}},
                },
            },
        )
        self._create_or_keep(api.POD, self._holder(name, name))

    def _create_or_keep(self, rt: ResourceType, body: Obj, namespaced: bool = True) -> None:
        """Create it; one left by an earlier attempt of the same job is kept (the names derive
        from the work item), so a restarted agent picks up where it was."""
        if not namespaced:
            body["metadata"].pop("namespace", None)
        with contextlib.suppress(Conflict):
            self.kube.create(rt, body)
