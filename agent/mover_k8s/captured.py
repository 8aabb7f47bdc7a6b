"""What a Backup captured, read back from its repository with the caller's credentials (the
Repository's password Secret, read with the Kube given: the user's own on the command line and
in the dashboard), and summed up by kind. Shared by `mover app describe` and `mover ui`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mover.errors import UsageError
from mover_k8s import store, views
from mover_k8s.external import external_names
from mover_k8s.k8s.types import Obj
from mover_k8s.repo_access import Repositories

if TYPE_CHECKING:
    from mover_k8s.k8s.client import Kube


def read_backup(kube: Kube, backup: Obj) -> tuple[Obj, Obj]:
    """(the manifest, {} for a Backup that has none; the capture document), read from the
    Backup's repository; the manifest is checked against the Backup's root hash first."""
    meta, status = views.Meta.of(backup), views.status(backup)
    if not status.get("objectsSnapshot"):
        raise UsageError(
            f"Backup {meta.name} is {status.get('phase') or 'New'}: it has captured no objects yet"
        )
    repo = Repositories(kube).open(meta.namespace, views.BackupView.of(backup).repository)
    try:
        manifest: Obj = {}
        objects_id = str(status["objectsSnapshot"])
        if status.get("manifestSnapshot"):
            found = repo.find_snapshot(str(status["manifestSnapshot"]))
            manifest = store.verify_manifest(repo, found, status.get("rootHash"))
            objects_id = str(manifest["objects"]["snapshot"])
        return manifest, store.load_document(repo, objects_id)
    finally:
        repo.close()


def by_kind(objects: list[Obj]) -> Obj:
    """{"objects": N, "kinds": [{"kind", "group", "count", "objects": [NS/NAME...]}],
    "external": [{"kind", "namespace", "name", "type", "value"}]} of captured objects."""
    kinds: dict[tuple[str, str], list[str]] = {}
    for obj in objects:
        meta = obj.get("metadata") or {}
        group = str(obj.get("apiVersion") or "").rpartition("/")[0]
        where = f"{meta['namespace']}/" if meta.get("namespace") else ""
        kinds.setdefault((str(obj.get("kind")), group), []).append(f"{where}{meta.get('name')}")
    return {
        "objects": len(objects),
        "kinds": [
            {"kind": kind, "group": group, "count": len(names), "objects": sorted(names)}
            for (kind, group), names in sorted(kinds.items())
        ],
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
