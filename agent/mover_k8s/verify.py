"""What an auditor checks later: that a Backup's root hash still attests what the repository
holds. Structure: the manifest's tree is the root hash and every snapshot it names is there with
the tree it records. With `read_data`, every chunk of the objects and of every volume is read
and verified (authenticated, keyed hash equal to its id): the trees then attest every byte.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mover import api as mover_api
from mover.api import Repository
from mover.errors import MoverError
from mover_k8s import store
from mover_k8s.k8s.types import Obj


@dataclass
class Verified:
    root_hash: str
    parts: list[str] = field(default_factory=list)  # what was verified, for people
    chunks: int = 0
    bytes: int = 0


def verify_backup(repo: Repository, status: Obj, read_data: bool = False) -> Verified:
    """Raises IntegrityError (a MoverError) naming the first part that does not verify."""
    manifest = repo.find_snapshot(str(status.get("manifestSnapshot") or ""))
    root = str(status.get("rootHash") or "")
    doc = store.verify_manifest(repo, manifest, root)
    result = Verified(root)
    parts = [("objects", doc["objects"])] + [
        (f"volume {v['namespace']}/{v['pvc']}", v) for v in doc.get("volumes") or []
    ]
    for name, part in parts:
        result.parts.append(name)
        if not read_data:
            continue
        try:
            for extent in mover_api.extents(repo, part["tree"]):
                if extent.chunk_id is not None:
                    repo.read_blob(extent.chunk_id)
                    result.chunks += 1
                result.bytes += extent.length
        except MoverError as exc:
            raise type(exc)(f"{name} of this backup does not verify: {exc}") from None
    return result
