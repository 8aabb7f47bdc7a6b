"""forget: snapshots dropped by id. Only snapshot objects are deleted; what only they referenced
stays stored until prune (mover.maintenance.prune) finds it unreferenced. So forget takes no
lock: a deleted snapshot only leaves garbage, which is prune's to collect."""

from __future__ import annotations

import contextlib

from mover.errors import ObjectNotFound
from mover.objects.repository import Repository


def forget(repo: Repository, snapshot_ids: list[str]) -> list[str]:
    """Deletes the snapshots named by id or unique prefix, damaged ones included; every id is
    resolved before anything is deleted."""
    readable = [s.id for s in repo.snapshots()]
    targets = [repo.resolve_snapshot_id(ref, readable) for ref in snapshot_ids]
    removed = []
    for snapshot_id in dict.fromkeys(targets):
        with contextlib.suppress(ObjectNotFound):  # a concurrent forget was first
            repo.backend.delete(f"snapshots/{snapshot_id}")
        removed.append(snapshot_id)
    return removed
