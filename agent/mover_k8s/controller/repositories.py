"""Reconciling a Repository: open it with its Secrets and say in its Ready condition whether
Backups can use it, so a wrong URL or password shows where it was made, not in every Backup.

Checked when its spec changed (observedGeneration) and again every `recheck` seconds, since a
Secret or the store behind it can change without the Repository changing.
"""

from __future__ import annotations

import time

from mover_k8s import api
from mover_k8s.conditions import set_condition_of
from mover_k8s.errors import SpecError
from mover_k8s.k8s.client import Kube, Obj
from mover_k8s.repo_access import Repositories


class RepositoryReconciler:
    def __init__(self, kube: Kube, repos: Repositories, recheck: float = 300.0) -> None:
        self.kube = kube
        self.repos = repos
        self.recheck = recheck
        self._checked: dict[str, float] = {}

    def reconcile(self, repository: Obj) -> None:
        meta, status = repository["metadata"], repository.get("status") or {}
        key = meta.get("uid") or f"{meta['namespace']}/{meta['name']}"
        current = status.get("observedGeneration") == meta.get("generation", 1)
        last = self._checked.get(key)
        if current and last is not None and time.monotonic() - last < self.recheck:
            return
        self._checked[key] = time.monotonic()
        try:
            repo = self.repos.open(meta["namespace"], meta["name"])
        except SpecError as exc:
            ok, reason, message, repo_id = False, exc.reason, str(exc), ""
        else:
            ok, reason, message, repo_id = True, "Ready", f"opened {repo.backend.location}", repo.id
            repo.close()
        conditions = set_condition_of(repository, "Ready", ok, reason, message)
        update: Obj = {"conditions": conditions, "observedGeneration": meta.get("generation", 1)}
        if repo_id:
            update["repositoryId"] = repo_id
        self.kube.patch_status(api.REPOSITORY, meta["namespace"], meta["name"], update)
