"""Typed views of the objects the loops read most: mover's work items and Backups, and the
storage objects the exposers and the changed-block code follow (claims, volumes, snapshots and
their contents). Each view is read once from the JSON the API returned, with every field that
may be absent given its default here, so the code that uses it reads `item.pvc_namespace`, not
`((item.get("spec") or {}).get("pvc") or {}).get("namespace", "")`. Views are read-only: writes
still go through the dicts, as JSON merge patches.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mover_k8s.k8s.types import Obj


def spec(obj: Obj | None) -> Obj:
    """obj.spec, {} when the object or its spec is absent."""
    return (obj or {}).get("spec") or {}


def status(obj: Obj | None) -> Obj:
    """obj.status, {} when the object or its status is absent."""
    return (obj or {}).get("status") or {}


def _sub(parent: Obj, key: str) -> Obj:
    value = parent.get(key)
    return value if isinstance(value, dict) else {}


@dataclass(frozen=True)
class Meta:
    name: str
    namespace: str
    uid: str
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    created: str = ""

    @classmethod
    def of(cls, obj: Obj | None) -> Meta:
        meta = _sub(obj or {}, "metadata")
        return cls(
            str(meta.get("name") or ""),
            str(meta.get("namespace") or ""),
            str(meta.get("uid") or ""),
            dict(meta.get("labels") or {}),
            dict(meta.get("annotations") or {}),
            str(meta.get("creationTimestamp") or ""),
        )


@dataclass(frozen=True)
class WorkItem:
    """A VolumeBackup or VolumeRestore: what the node agent runs."""

    meta: Meta
    node: str
    repository: str
    pvc_namespace: str
    pvc_name: str
    pv: str
    source_path: str  # spec.source.path (the path exposer)
    source_snapshot: str  # spec.source.volumeSnapshot (the snapshot exposer)
    snapshot: str  # a VolumeRestore's repository snapshot
    restore: str  # a VolumeRestore's Restore
    cancel: bool
    changed_blocks: Obj  # a VolumeBackup's base for changed block tracking ({}: none)
    phase: str
    attempts: int

    @classmethod
    def of(cls, item: Obj) -> WorkItem:
        s, st = spec(item), status(item)
        pvc, source = _sub(s, "pvc"), _sub(s, "source")
        return cls(
            Meta.of(item),
            str(s.get("node") or ""),
            str(s.get("repository") or ""),
            str(pvc.get("namespace") or ""),
            str(pvc.get("name") or ""),
            str(s.get("pv") or ""),
            str(source.get("path") or ""),
            str(source.get("volumeSnapshot") or ""),
            str(s.get("snapshot") or ""),
            str(s.get("restore") or ""),
            bool(s.get("cancel")),
            _sub(s, "changedBlocks"),
            str(st.get("phase") or ""),
            int(st.get("attempts") or 0),
        )


@dataclass(frozen=True)
class BackupView:
    """A Backup: what its reconciler reads of it."""

    meta: Meta
    repository: str
    cancel: bool
    phase: str
    volumes: list[Obj]  # status.volumes: one entry a volume

    @classmethod
    def of(cls, backup: Obj) -> BackupView:
        s, st = spec(backup), status(backup)
        return cls(
            Meta.of(backup),
            str(s.get("repository") or ""),
            bool(s.get("cancel")),
            str(st.get("phase") or ""),
            list(st.get("volumes") or []),
        )

    @property
    def repository_key(self) -> str:
        """NAMESPACE/NAME of its Repository."""
        return f"{self.meta.namespace}/{self.repository}"


@dataclass(frozen=True)
class ClaimView:
    """A PersistentVolumeClaim."""

    meta: Meta
    volume_name: str
    storage_class: str
    bound: bool

    @classmethod
    def of(cls, pvc: Obj | None) -> ClaimView:
        s = spec(pvc)
        return cls(
            Meta.of(pvc),
            str(s.get("volumeName") or ""),
            str(s.get("storageClassName") or ""),
            status(pvc).get("phase") == "Bound",
        )


@dataclass(frozen=True)
class VolumeView:
    """A PersistentVolume."""

    meta: Meta
    csi: Obj  # spec.csi ({}: not a CSI volume)
    capacity: str  # spec.capacity.storage, "" when absent
    node_affinity: Obj

    @classmethod
    def of(cls, pv: Obj) -> VolumeView:
        s = spec(pv)
        return cls(
            Meta.of(pv),
            _sub(s, "csi"),
            str(_sub(s, "capacity").get("storage") or ""),
            _sub(s, "nodeAffinity"),
        )

    @property
    def csi_driver(self) -> str:
        return str(self.csi.get("driver") or "")


@dataclass(frozen=True)
class SnapshotView:
    """A VolumeSnapshot."""

    meta: Meta
    ready: bool
    error: str  # status.error.message
    bound_content: str  # status.boundVolumeSnapshotContentName
    restore_size: str

    @classmethod
    def of(cls, snapshot: Obj) -> SnapshotView:
        st = status(snapshot)
        return cls(
            Meta.of(snapshot),
            bool(st.get("readyToUse")),
            str(_sub(st, "error").get("message") or ""),
            str(st.get("boundVolumeSnapshotContentName") or ""),
            str(st.get("restoreSize") or ""),
        )


@dataclass(frozen=True)
class ContentView:
    """A VolumeSnapshotContent."""

    meta: Meta
    driver: str
    handle: str  # status.snapshotHandle
    spec: dict[str, Any]

    @classmethod
    def of(cls, content: Obj) -> ContentView:
        s = spec(content)
        return cls(
            Meta.of(content),
            str(s.get("driver") or ""),
            str(status(content).get("snapshotHandle") or ""),
            s,
        )
