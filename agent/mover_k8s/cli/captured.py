"""What a Backup captured, read back from its repository (with the caller's credentials: the
repository's password Secret)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mover.errors import MoverError, UsageError
from mover_k8s import api
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
    from mover_k8s import store
    from mover_k8s.repos import Repositories

    namespace, name = backup["metadata"]["namespace"], backup["metadata"]["name"]
    status = backup.get("status") or {}
    if not status.get("objectsSnapshot"):
        raise UsageError(
            f"Backup {name} is {status.get('phase') or 'New'}: it has captured no objects yet"
        )
    repo = Repositories(kube).open(namespace, str((backup.get("spec") or {}).get("repository")))
    try:
        objects_id = str(status["objectsSnapshot"])
        if status.get("manifestSnapshot"):
            manifest = repo.find_snapshot(str(status["manifestSnapshot"]))
            doc = store.verify_manifest(repo, manifest, status.get("rootHash"))
            objects_id = str(doc["objects"]["snapshot"])
        return store.load_document(repo, objects_id)
    finally:
        repo.close()


def capture_report(kube: Kube, backup: Obj) -> Obj:
    """What a Backup captured, for describe: {"captured": {"objects": N, "kinds": [{"kind",
    "group", "count", "objects": [NAMESPACE/NAME, ...]}, ...]}, "external": [{"kind",
    "namespace", "name", "type", "value"}, ...]}; {"captureError": why} when the repository
    cannot be read; {} before anything was captured."""
    from mover_k8s.external import external_names

    if not (backup.get("status") or {}).get("objectsSnapshot"):
        return {}
    try:
        objects = list(read_capture(kube, backup).get("objects") or [])
    except MoverError as exc:
        return {"captureError": str(exc)}
    kinds: dict[tuple[str, str], list[str]] = {}
    for obj in objects:
        meta = obj.get("metadata") or {}
        group = str(obj.get("apiVersion") or "").rpartition("/")[0]
        where = f"{meta['namespace']}/" if meta.get("namespace") else ""
        kinds.setdefault((str(obj.get("kind")), group), []).append(f"{where}{meta.get('name')}")
    return {
        "captured": {
            "objects": len(objects),
            "kinds": [
                {"kind": kind, "group": group, "count": len(names), "objects": sorted(names)}
                for (kind, group), names in sorted(kinds.items())
            ],
        },
        "external": [
            {
                "kind": e.kind,
                "namespace": e.namespace,
                "name": e.name,
                "type": e.type,
                "value": e.value,
            }
            for e in external_names(objects)
        ],
    }
