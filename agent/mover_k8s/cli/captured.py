"""What a Backup captured, read back from its repository (with the caller's credentials: the
repository's password Secret)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mover.errors import MoverError, UsageError
from mover_k8s import api
from mover_k8s.captured import by_kind, read_backup
from mover_k8s.k8s.types import Obj

if TYPE_CHECKING:
    from mover_k8s.k8s.client import Kube


def captured_objects(kube: Kube, namespace: str, name: str) -> tuple[Obj, Obj]:
    """(the Backup, its capture document), read back from the repository; the manifest is
    checked against the Backup's root hash first when the Backup has one."""
    backup = kube.find(api.BACKUP, namespace, name)
    if backup is None:
        raise UsageError(f"no Backup {namespace}/{name}; see `mover app list`")
    return backup, read_capture(kube, backup)


def read_capture(kube: Kube, backup: Obj) -> Obj:
    """A Backup's capture document, read back from the repository; the manifest is checked
    against the Backup's root hash first when the Backup has one."""
    return read_backup(kube, backup)[1]


def capture_report(kube: Kube, backup: Obj) -> Obj:
    """What a Backup captured, for describe: {"captured": {"objects": N, "kinds": [{"kind",
    "group", "count", "objects": [NAMESPACE/NAME, ...]}, ...]}, "external": [{"kind",
    "namespace", "name", "type", "value"}, ...]}; {"captureError": why} when the repository
    cannot be read; {} before anything was captured."""
    if not (backup.get("status") or {}).get("objectsSnapshot"):
        return {}
    try:
        objects = list(read_capture(kube, backup).get("objects") or [])
    except MoverError as exc:
        return {"captureError": str(exc)}
    found = by_kind(objects)
    return {
        "captured": {"objects": found["objects"], "kinds": found["kinds"]},
        "external": found["external"],
    }
