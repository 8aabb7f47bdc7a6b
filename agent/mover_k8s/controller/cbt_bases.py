"""The bases of changed-block backups: which CSI snapshot of a claim the next backup of it is
compared against.

GetMetadataDelta (mover_k8s.cbt) lists what changed since a base snapshot that the storage
still holds, so a Backup keeps the VolumeSnapshot of each volume it stored, instead of deleting
it, when the volume's CSI driver publishes a SnapshotMetadataService and the controller may
read it (the chart grants that with `changedBlockTracking.enabled`; without it the answer is
403 and every snapshot is deleted as before). One base is kept per claim and repository: the
newest; keeping a new one deletes the older ones. A kept snapshot carries what the next backup
needs: the mover snapshot it was stored as (the parent whose chunks the unchanged ranges reuse)
and the repository, so a backup into another repository never pairs with it.

A base is only a hint. The node agent falls back to reading the whole volume when the service,
the base or the parent snapshot is gone, so a missing or stale base costs time, never data.
"""

from __future__ import annotations

import logging

from mover_k8s import api
from mover_k8s.cbt.discovery import find_endpoint, snapshot_handle
from mover_k8s.errors import CbtError, KubeError
from mover_k8s.k8s.client import Kube, Obj
from mover_k8s.views import Meta

log = logging.getLogger("mover.k8s.controller")

BASE_LABEL = "mover.io/cbt-base"  # "true" on a VolumeSnapshot kept as a base
PVC_ANNOTATION = "mover.io/cbt-pvc"
REPOSITORY_ANNOTATION = "mover.io/cbt-repository"  # NAMESPACE/NAME of the Repository
SNAPSHOT_ANNOTATION = "mover.io/cbt-snapshot"  # the mover snapshot id the volume was stored as


def offered(kube: Kube, namespace: str, snapshot: str) -> bool:
    """Whether the driver of VolumeSnapshot `namespace/snapshot` offers changed block tracking
    that this controller may use (a SnapshotMetadataService it is allowed to read)."""
    try:
        return find_endpoint(kube, namespace, snapshot) is not None
    except CbtError as exc:
        log.info("no changed block tracking for %s/%s: %s", namespace, snapshot, exc)
        return False
    except KubeError as exc:
        if exc.status == 403:  # not granted: changed block tracking is off
            return False
        raise


def find_base(kube: Kube, namespace: str, pvc: str, repository: str) -> Obj | None:
    """The newest kept base of claim `namespace/pvc` for `repository`, as a VolumeBackup's
    spec.changedBlocks: {volumeSnapshot, snapshotHandle, parent}; None when there is none."""
    try:
        kept = kube.list(api.VOLUME_SNAPSHOT, namespace, label_selector=f"{BASE_LABEL}=true")
    except KubeError as exc:
        if exc.status in (403, 404):
            return None
        raise
    ours = [s for s in kept if _annotations(s).get(PVC_ANNOTATION) == pvc]
    ours = [s for s in ours if _annotations(s).get(REPOSITORY_ANNOTATION) == repository]
    ours.sort(key=lambda s: str(s["metadata"].get("creationTimestamp") or ""))
    for snap in reversed(ours):
        name = snap["metadata"]["name"]
        try:
            handle = snapshot_handle(kube, namespace, name)
        except CbtError as exc:
            log.info("base %s/%s unusable: %s", namespace, name, exc)
            continue
        return {
            "volumeSnapshot": name,
            "snapshotHandle": handle,
            "parent": _annotations(snap)[SNAPSHOT_ANNOTATION],
        }
    return None


def keep_as_base(kube: Kube, entry: Obj, repository: str) -> bool:
    """Keep the VolumeSnapshot of a stored volume (a Backup's status.volumes entry) as the base
    of its claim's next backup, and delete the older bases of that claim and repository.
    False, changing nothing, when the driver offers no changed block tracking."""
    namespace, name = entry["namespace"], str(entry["volumeSnapshot"])
    if not entry.get("snapshot") or not offered(kube, namespace, name):
        return False
    kube.patch(
        api.VOLUME_SNAPSHOT,
        namespace,
        name,
        {
            "metadata": {
                "labels": {BASE_LABEL: "true"},
                "annotations": {
                    PVC_ANNOTATION: entry["pvc"],
                    REPOSITORY_ANNOTATION: repository,
                    SNAPSHOT_ANNOTATION: entry["snapshot"],
                },
            }
        },
    )
    for old in kube.list(api.VOLUME_SNAPSHOT, namespace, label_selector=f"{BASE_LABEL}=true"):
        notes = _annotations(old)
        if old["metadata"]["name"] == name:
            continue
        if notes.get(PVC_ANNOTATION) == entry["pvc"] and notes.get(REPOSITORY_ANNOTATION) == (
            repository
        ):
            kube.delete(api.VOLUME_SNAPSHOT, namespace, old["metadata"]["name"])
    return True


def _annotations(obj: Obj) -> dict[str, str]:
    return Meta.of(obj).annotations
