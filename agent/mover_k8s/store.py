"""Documents of the Kubernetes side (captured objects, a backup's manifest) stored in the
repository as ordinary snapshots: encrypted, chunked and deduplicated like volume data, so an
unchanged object list costs nothing the second time and a reader needs the repository key.

The manifest names the objects' snapshot and every volume's snapshot with their tree roots; the
root of the manifest's own chunk tree is the backup's root hash: recomputing it from the
repository attests the objects and all volumes at once.
"""

from __future__ import annotations

from typing import Any

from mover import api as mover_api
from mover.api import Repository, Snapshot
from mover.errors import IntegrityError
from mover_k8s.errors import SpecError

Obj = dict[str, Any]
MANIFEST_FORMAT = 1
PREFIX = "k8s:"


def source_name(namespace: str, backup: str, part: str) -> str:
    """`k8s:NAMESPACE/BACKUP/PART`: how `mover snapshots` shows what a snapshot belongs to."""
    return f"{PREFIX}{namespace}/{backup}/{part}"


def store_document(repo: Repository, doc: Obj, name: str) -> Snapshot:
    return mover_api.put_document(repo, doc, name)


def load_document(repo: Repository, snapshot_id: str) -> Obj:
    return mover_api.get_document(repo, snapshot_id, kind="mover-k8s document")


def find_manifest(repo: Repository, backup: str, namespace: str | None = None) -> Snapshot:
    """The latest manifest of the backup named `backup` (in `namespace`, or any)."""
    matches = [
        s
        for s in repo.snapshots()
        if s.source.startswith(PREFIX)
        and s.source.endswith(f"/{backup}/manifest")
        and (namespace is None or s.source == source_name(namespace, backup, "manifest"))
    ]
    if not matches:
        where = f"{namespace}/{backup}" if namespace else backup
        raise SpecError(
            "BackupNotFound",
            f"no backup {where} in this cluster or its repository; see `mover app list`",
        )
    namespaces = {s.source[len(PREFIX) :].split("/", 1)[0] for s in matches}
    if len(namespaces) > 1:
        raise SpecError(
            "BackupAmbiguous",
            f"backups named {backup} exist from namespaces {sorted(namespaces)}; "
            "write spec.backup as NAMESPACE/NAME",
        )
    return matches[-1]


def verify_manifest(repo: Repository, manifest: Snapshot, root_hash: str | None) -> Obj:
    """The manifest, checked: its tree is `root_hash` (when known), and every snapshot it names
    exists with the tree it records."""
    if root_hash and manifest.tree != root_hash:
        raise IntegrityError(
            f"manifest {manifest.id[:8]} has root {manifest.tree[:16]}, the Backup recorded "
            f"{root_hash[:16]}: not the backup that was taken"
        )
    doc = load_document(repo, manifest.id)
    if doc.get("format") != MANIFEST_FORMAT:
        raise IntegrityError(f"manifest {manifest.id[:8]} has unknown format {doc.get('format')}")
    by_id = {s.id: s for s in repo.snapshots()}
    parts = [doc.get("objects") or {}, *(doc.get("volumes") or [])]
    for part in parts:
        found = by_id.get(part.get("snapshot", ""))
        if found is None or found.tree != part.get("tree"):
            raise IntegrityError(
                f"manifest {manifest.id[:8]} names snapshot {str(part.get('snapshot'))[:8]} "
                "that is missing or differs; the repository lost part of this backup"
            )
    return doc
