"""The real cluster's exposer (the app's CSI snapshot copied into mover's namespace, a Block-mode
claim made from the copy and attached to the agent's node by a holder pod there), as far as an
emulator allows: the test plays the parts of the cluster that mover relies on and does not own —
the snapshot controller (takes snapshots, binds pre-provisioned contents), the CSI provisioner
(binds the claim made from a snapshot, to that snapshot's data) and the kubelet (runs the holder
pod and publishes the block device, here a file, under its pod directory). Every pod and claim
mover makes is in its own namespace, and gone after the job (issue 15)."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mover.pipeline.backup import run_backup
from mover_k8s import api
from mover_k8s.controller.manager import Controller
from mover_k8s.k8s.client import Kube, Obj, ResourceType
from mover_k8s.node.agent import NodeAgent
from mover_k8s.node.exposer import PathExposer, SnapshotExposer
from tests.deploy.pod_security import violations

from .conftest import NODE, SYSTEM, Env, backup_body, read_bytes, restore_body
from .test_capture import open_repo

DRIVER = "csi.example.com"
SIZE = 3 << 20
STATUS = frozenset({"status"})
SNAPSHOT_CLASS = ResourceType(
    "snapshot.storage.k8s.io", "v1", "volumesnapshotclasses", "VolumeSnapshotClass", False
)


def snapshot_crd(plural: str, kind: str, scope: str) -> Obj:
    """The external-snapshotter's CRDs, reduced to what the API needs to serve them."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.snapshot.storage.k8s.io"},
        "spec": {
            "group": "snapshot.storage.k8s.io",
            "scope": scope,
            "names": {"kind": kind, "plural": plural, "singular": kind.lower()},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "schema": {"openAPIV3Schema": {"type": "object"}},
                }
            ],
        },
    }


def csi_volume(kube: Kube, namespace: str, claim: str, pv_name: str) -> None:
    """A Block-mode claim bound to a CSI volume (no path on any node)."""
    kube.create(
        api.PV,
        {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": pv_name},
            "spec": {
                "capacity": {"storage": "3Mi"},
                "accessModes": ["ReadWriteOnce"],
                "volumeMode": "Block",
                "storageClassName": "csi-fast",
                "csi": {"driver": DRIVER, "volumeHandle": f"handle-{pv_name}"},
            },
        },
    )
    kube.create(
        api.PVC,
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": claim, "namespace": namespace},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "volumeMode": "Block",
                "storageClassName": "csi-fast",
                "volumeName": pv_name,
                "resources": {"requests": {"storage": "3Mi"}},
            },
        },
    )
    kube.patch_status(api.PVC, namespace, claim, {"phase": "Bound"})


class FakeCluster:
    """Snapshot controller, CSI provisioner and kubelet, each doing only what mover waits for."""

    def __init__(self, kube: Kube, kubelet: Path, devices: dict[str, bytes]) -> None:
        self.kube, self.kubelet, self.devices = kube, kubelet, devices
        self.snapshots: dict[str, bytes] = {}  # snapshot handle: the data it holds
        self.seen_pods: list[Obj] = []
        self.seen_claims: list[Obj] = []
        self.seen_volumes: list[Obj] = []
        self.seen_contents: list[Obj] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.wait(0.02):
            snapshots = self.kube.list(api.VOLUME_SNAPSHOT) if self.snapshots_served() else []
            for snap in snapshots:
                if not (snap.get("status") or {}).get("readyToUse"):
                    self._snapshot(snap)
            for claim in self.kube.list(api.PVC):
                meta = claim["metadata"]
                bound = (claim.get("status") or {}).get("phase") == "Bound"
                if claim["spec"].get("volumeName") and not bound:
                    # The PV controller binds a claim made for a given (static) volume.
                    pv = self.kube.get(api.PV, None, claim["spec"]["volumeName"])
                    self.seen_volumes.append(pv)
                    self.kube.patch_status(
                        api.PVC, meta["namespace"], meta["name"], {"phase": "Bound"}
                    )
                    continue
                if not claim["spec"].get("volumeName") and claim["spec"].get("dataSource"):
                    self._provision(claim)
            for pod in self.kube.list(api.POD):
                if (pod.get("status") or {}).get("phase") == "Running":
                    continue
                claim_name = pod["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"]
                claim = self.kube.find(api.PVC, pod["metadata"]["namespace"], claim_name)
                volume = ((claim or {}).get("spec") or {}).get("volumeName")
                if not volume:
                    continue
                self.seen_pods.append(pod)
                device = (
                    self.kubelet
                    / "pods"
                    / pod["metadata"]["uid"]
                    / "volumeDevices"
                    / "kubernetes.io~csi"
                    / volume
                )
                device.parent.mkdir(parents=True, exist_ok=True)
                device.write_bytes(self.devices.get(volume, bytes(SIZE)))
                meta = pod["metadata"]
                self.kube.patch_status(
                    api.POD, meta["namespace"], meta["name"], {"phase": "Running"}
                )

    def _snapshot(self, snap: Obj) -> None:
        meta, source = snap["metadata"], snap["spec"]["source"]
        content_name = source.get("volumeSnapshotContentName")
        if content_name:  # pre-provisioned: bind it to its content, if that points back
            content = self.kube.find(api.VOLUME_SNAPSHOT_CONTENT, None, content_name)
            ref = ((content or {}).get("spec") or {}).get("volumeSnapshotRef") or {}
            if (ref.get("namespace"), ref.get("name")) != (meta["namespace"], meta["name"]):
                return
            self.seen_contents.append(content)  # type: ignore[arg-type]
            self.kube.patch_status(
                api.VOLUME_SNAPSHOT_CONTENT,
                None,
                content_name,
                {"snapshotHandle": content["spec"]["source"]["snapshotHandle"]},  # type: ignore[index]
            )
        else:  # dynamic: cut a snapshot of the claim's volume now
            content_name = f"snapcontent-{meta['uid']}"
            handle = f"snap-{meta['namespace']}-{meta['name']}"
            self.snapshots[handle] = self.devices["source"]
            self.kube.create(
                api.VOLUME_SNAPSHOT_CONTENT,
                {
                    "metadata": {"name": content_name},
                    "spec": {
                        "deletionPolicy": "Delete",
                        "driver": DRIVER,
                        "source": {"volumeHandle": "handle-pv-db"},
                        "sourceVolumeMode": "Filesystem",
                        "volumeSnapshotClassName": "csi-snap",
                        "volumeSnapshotRef": {"namespace": meta["namespace"], "name": meta["name"]},
                    },
                },
            )
            self.kube.patch_status(
                api.VOLUME_SNAPSHOT_CONTENT, None, content_name, {"snapshotHandle": handle}
            )
        self.kube.patch_status(
            api.VOLUME_SNAPSHOT,
            meta["namespace"],
            meta["name"],
            {
                "readyToUse": True,
                "restoreSize": "3Mi",
                "boundVolumeSnapshotContentName": content_name,
            },
        )

    def _provision(self, claim: Obj) -> None:
        """A claim from a snapshot: a new volume holding that snapshot's data."""
        meta = claim["metadata"]
        self.seen_claims.append(claim)
        snap = self.kube.get(
            api.VOLUME_SNAPSHOT, meta["namespace"], claim["spec"]["dataSource"]["name"]
        )
        content = self.kube.get(
            api.VOLUME_SNAPSHOT_CONTENT, None, snap["status"]["boundVolumeSnapshotContentName"]
        )
        pv = f"pv-{meta['name']}"
        self.kube.create(
            api.PV,
            {
                "metadata": {"name": pv},
                "spec": {
                    "capacity": {"storage": "3Mi"},
                    "volumeMode": "Block",
                    "csi": {"driver": DRIVER, "volumeHandle": pv},
                },
            },
        )
        self.kube.patch(api.PVC, meta["namespace"], meta["name"], {"spec": {"volumeName": pv}})
        self.kube.patch_status(api.PVC, meta["namespace"], meta["name"], {"phase": "Bound"})
        self.devices[pv] = self.snapshots[content["status"]["snapshotHandle"]]

    def snapshots_served(self) -> bool:
        return self.kube.find(api.CRD, None, "volumesnapshots.snapshot.storage.k8s.io") is not None

    def __enter__(self) -> FakeCluster:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(10)


@contextmanager
def components(env: Env, kubelet: Path) -> Iterator[None]:
    stop = threading.Event()
    controller = Controller(env.kube, SYSTEM, interval=0.05, agent_grace=5)
    agent = NodeAgent(
        env.kube,
        NODE,
        SYSTEM,
        exposers={
            "path": PathExposer(env.kube),
            "snapshot": SnapshotExposer(
                env.kube, NODE, SYSTEM, str(kubelet), poll=0.02, timeout=30
            ),
        },
        interval=0.05,
        progress_interval=0.05,
    )
    threads = [
        threading.Thread(target=c.run, args=(stop,), daemon=True) for c in (controller, agent)
    ]
    for thread in threads:
        thread.start()
    try:
        yield
    finally:
        stop.set()
        for thread in threads:
            thread.join(60)


def test_backup_reads_a_snapshot_through_a_block_pvc_and_restore_writes_a_block_pvc(
    env: Env, tmp_path: Path
) -> None:
    kube = env.kube
    kube.create(api.CRD, snapshot_crd("volumesnapshots", "VolumeSnapshot", "Namespaced"))
    kube.create(api.CRD, snapshot_crd("volumesnapshotclasses", "VolumeSnapshotClass", "Cluster"))
    kube.create(api.CRD, snapshot_crd("volumesnapshotcontents", "VolumeSnapshotContent", "Cluster"))
    kube.create(
        api.STORAGE_CLASS,
        {"metadata": {"name": "csi-fast"}, "provisioner": DRIVER, "volumeBindingMode": "Immediate"},
    )
    kube.create(
        SNAPSHOT_CLASS,
        {"metadata": {"name": "csi-snap"}, "driver": DRIVER, "deletionPolicy": "Delete"},
    )
    kube.create(api.NAMESPACE, {"metadata": {"name": "db"}})
    csi_volume(kube, "db", "data", "pv-db")
    data = random.Random(5).randbytes(SIZE)
    kubelet = tmp_path / "kubelet"
    devices = {"source": data}
    with FakeCluster(kube, kubelet, devices) as cluster, components(env, kubelet):
        kube.create(api.BACKUP, backup_body("snap", includedNamespaces=["db"]))
        backup = env.wait_phase(api.BACKUP, "snap")
        assert backup["status"]["phase"] == "Completed", backup["status"]
        (volume,) = backup["status"]["volumes"]
        assert volume["volumeSnapshot"] and volume["node"] == NODE
        key = ("snapshot.storage.k8s.io/v1/volumesnapshots", "db", volume["volumeSnapshot"])
        snapshot = env.served.cluster.objects[key].history.last
        assert snapshot["spec"] == {
            "volumeSnapshotClassName": "csi-snap",
            "source": {"persistentVolumeClaimName": "data"},
        }
        # The app's snapshot, copied into mover's namespace: the same handle, kept (Retain)
        # when the copy is deleted, allowed to become a Block-mode claim.
        (copied,) = cluster.seen_contents
        original = env.served.cluster.objects[
            (
                "snapshot.storage.k8s.io/v1/volumesnapshotcontents",
                None,
                f"snapcontent-{snapshot['metadata']['uid']}",
            )
        ].history.last
        assert copied["spec"]["source"] == {"snapshotHandle": original["status"]["snapshotHandle"]}
        assert copied["spec"]["deletionPolicy"] == "Retain"
        assert copied["spec"]["sourceVolumeMode"] == "Filesystem"
        assert copied["spec"]["volumeSnapshotRef"]["namespace"] == SYSTEM
        annotations = copied["metadata"]["annotations"]
        assert annotations["snapshot.storage.kubernetes.io/allow-volume-mode-change"] == "true"
        (claim,) = cluster.seen_claims
        assert claim["metadata"]["namespace"] == SYSTEM
        assert claim["spec"]["volumeMode"] == "Block"
        assert claim["spec"]["dataSource"]["name"] == copied["metadata"]["name"]
        holder = cluster.seen_pods[0]
        assert holder["metadata"]["namespace"] == SYSTEM
        assert holder["spec"]["nodeName"] == NODE
        assert holder["spec"]["containers"][0]["volumeDevices"][0]["devicePath"]
        assert violations(holder, "restricted") == []
        # Deleted once the data is stored; released after the job: no holder pod, no claim,
        # no copy of the snapshot; nothing of mover's was ever in the app's namespace.
        assert kube.find(api.VOLUME_SNAPSHOT, "db", volume["volumeSnapshot"]) is None
        assert kube.list(api.VOLUME_SNAPSHOT, SYSTEM) == []
        assert kube.find(api.VOLUME_SNAPSHOT_CONTENT, None, copied["metadata"]["name"]) is None
        assert kube.list(api.POD, SYSTEM) == [] and kube.list(api.PVC, SYSTEM) == []
        assert kube.list(api.POD, "db") == []
        assert [c["metadata"]["name"] for c in kube.list(api.PVC, "db")] == ["data"]

        # Restore into the Block-mode claim: a Block view of its volume, attached the same way.
        kube.create(api.RESTORE, restore_body("back", backup="snap", mode="data-only"))
        restore = env.wait_phase(api.RESTORE, "back")
    assert restore["status"]["phase"] == "Completed", restore["status"]
    pod = cluster.seen_pods[-1]
    assert pod["metadata"]["namespace"] == SYSTEM
    view = pod["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"]
    (static,) = [v for v in cluster.seen_volumes if v["metadata"]["name"] == view]
    assert static["spec"]["csi"]["volumeHandle"] == "handle-pv-db"
    device = kubelet / "pods" / pod["metadata"]["uid"] / "volumeDevices/kubernetes.io~csi" / view
    assert read_bytes(device) == data
    assert kube.list(api.POD, SYSTEM) == [] and kube.list(api.PVC, SYSTEM) == []
    assert kube.list(api.POD, "db") == []


def volume_restore(name: str, snapshot: str) -> Obj:
    return {
        "apiVersion": api.API_VERSION,
        "kind": "VolumeRestore",
        "metadata": {"name": name, "namespace": SYSTEM, "labels": {api.NODE_LABEL: NODE}},
        "spec": {
            "restore": "manual",
            "repository": "default",
            "node": NODE,
            "pvc": {"namespace": "db", "name": "data"},
            "snapshot": snapshot,
        },
    }


def stored_snapshot(env: Env, tmp_path: Path, data: bytes) -> str:
    image = tmp_path / "image"
    image.write_bytes(data)
    with open(image, "rb") as f:
        repo = open_repo(env.repo_dir)
        try:
            return run_backup(repo, f, "image").id
        finally:
            repo.close()


def test_a_filesystem_mode_claim_is_written_through_a_block_view_of_its_volume(
    env: Env, tmp_path: Path
) -> None:
    kube = env.kube
    kube.create(api.NAMESPACE, {"metadata": {"name": "db"}})
    csi_volume(kube, "db", "data", "pv-db")
    kube.patch(api.PVC, "db", "data", {"spec": {"volumeMode": "Filesystem"}})
    data = random.Random(9).randbytes(SIZE)
    snapshot = stored_snapshot(env, tmp_path, data)
    kube.create(api.VOLUME_RESTORE, volume_restore("fs", snapshot))
    kubelet = tmp_path / "kubelet"
    with FakeCluster(kube, kubelet, {}) as cluster, components(env, kubelet):
        item = env.wait_phase(api.VOLUME_RESTORE, "fs")
    assert item["status"]["phase"] == "Completed", item["status"]
    (pod,) = cluster.seen_pods
    view = pod["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"]
    assert view.startswith("mover-vr-")
    (static,) = [v for v in cluster.seen_volumes if v["metadata"]["name"] == view]
    assert static["spec"]["csi"]["volumeHandle"] == "handle-pv-db"
    assert static["spec"]["claimRef"] == {"namespace": SYSTEM, "name": view}
    assert pod["metadata"]["namespace"] == SYSTEM
    assert static["spec"]["persistentVolumeReclaimPolicy"] == "Retain"
    assert static["spec"]["volumeMode"] == "Block"
    device = kubelet / "pods" / pod["metadata"]["uid"] / "volumeDevices/kubernetes.io~csi" / view
    assert read_bytes(device) == data
    # Released: the pod, our claim and our PV are gone; the app's claim and volume stay.
    assert kube.list(api.POD, SYSTEM) == [] and kube.list(api.PVC, SYSTEM) == []
    assert kube.list(api.POD, "db") == []
    assert [c["metadata"]["name"] for c in kube.list(api.PVC, "db")] == ["data"]
    assert [v["metadata"]["name"] for v in kube.list(api.PV)] == ["pv-db"]


def test_a_volume_that_cannot_be_attached_fails_with_its_reason(env: Env, tmp_path: Path) -> None:
    kube = env.kube
    kube.create(api.NAMESPACE, {"metadata": {"name": "db"}})
    kube.create(
        api.PV,
        {
            "metadata": {"name": "pv-nfs"},
            "spec": {"capacity": {"storage": "3Mi"}, "nfs": {"server": "nfs", "path": "/x"}},
        },
    )
    kube.create(
        api.PVC,
        {
            "metadata": {"name": "data", "namespace": "db"},
            "spec": {"volumeName": "pv-nfs", "resources": {"requests": {"storage": "3Mi"}}},
        },
    )
    kube.create(api.VOLUME_RESTORE, volume_restore("nfs", "latest"))
    with components(env, tmp_path / "kubelet"):
        item = env.wait_phase(api.VOLUME_RESTORE, "nfs")
    status = item["status"]
    assert status["phase"] == "Failed"
    assert "PV pv-nfs is not a CSI volume; mover cannot attach it" in status["message"]
    assert (
        kube.list(api.POD, "db") == [] and kube.list(api.PVC, "db")[0]["metadata"]["name"] == "data"
    )
