"""The controller's loop: every `interval` seconds, reconcile every Repository, Schedule,
Backup and Restore.

Several replicas may run: one leads (mover_k8s.leader), the others stand by. With `watch`,
changes wake the loop at once (mover_k8s.wakeup), but it stays a poll at heart: reconciling is
level-triggered (each pass reads the status and does the next step), so a missed event costs
nothing and a restart resumes by itself. With `watch`, the passes also read the objects from a
copy the watches keep (mover_k8s.k8s.cache): a pass costs the API server nothing for objects
that did not change. A Backup's capture runs inside the pass; volume data
never does (the node agents move it).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypedDict, Unpack

from mover_k8s import api
from mover_k8s.conditions import set_condition_of
from mover_k8s.controller.backups import BackupReconciler
from mover_k8s.controller.repositories import RepositoryReconciler
from mover_k8s.controller.restore import RestoreReconciler
from mover_k8s.controller.schedules import ScheduleReconciler
from mover_k8s.errors import KubeError
from mover_k8s.k8s.cache import Cache
from mover_k8s.k8s.client import Kube, Obj, ResourceType
from mover_k8s.leader import Leadership
from mover_k8s.metrics import ControllerMetrics
from mover_k8s.repo_access import Repositories
from mover_k8s.wakeup import Wakeup

log = logging.getLogger("mover.k8s.controller")


@dataclass(frozen=True)
class ControllerSettings:
    """How the controller runs (`mover agent controller`'s options)."""

    watch_namespace: str | None = None  # None: mover's objects in every namespace
    interval: float = 2.0  # seconds between passes (with watches: the longest wait)
    agent_grace: float = 60.0  # how long a Backup waits for its volumes' node agent to start
    bind_timeout: float = 600.0  # how long a Restore waits for its claims to bind
    lease_seconds: float = 15.0  # the leader Lease's duration
    watch: bool = False  # watches wake the loop, and passes read the copy they keep


class ControllerOptions(TypedDict, total=False):
    """ControllerSettings' fields, as Controller's keywords (checked by mypy: PEP 692)."""

    watch_namespace: str | None
    interval: float
    agent_grace: float
    bind_timeout: float
    lease_seconds: float
    watch: bool


class Controller:
    def __init__(
        self,
        kube: Kube,
        agent_namespace: str,
        metrics: ControllerMetrics | None = None,
        **options: Unpack[ControllerOptions],
    ) -> None:
        self.settings = settings = ControllerSettings(**options)
        # With watches, the passes read Repositories, Schedules, Backups, Restores and work
        # items from a copy the watches keep (mover_k8s.k8s.cache), not from the API.
        self.cache = Cache() if settings.watch else None
        kube = kube.cached(self.cache) if self.cache is not None else kube
        self.kube = kube
        self.metrics = metrics or ControllerMetrics()
        self.watch_namespace = settings.watch_namespace
        self.interval = settings.interval
        self.identity = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        # Standbys (replicas of the Deployment) pass until the leader's Lease runs out.
        self.leadership = Leadership(kube, agent_namespace, self.identity, settings.lease_seconds)
        self.led_passes = 0
        self.watch = settings.watch
        repos = Repositories(kube)
        self.repositories = RepositoryReconciler(kube, repos)
        self.backups = BackupReconciler(kube, repos, agent_namespace, settings.agent_grace)
        self.restores = RestoreReconciler(kube, repos, agent_namespace, settings.bind_timeout)
        self.schedules = ScheduleReconciler(kube)

    def run(self, stop: threading.Event) -> None:
        log.info("controller started (namespace: %s)", self.watch_namespace or "all")
        wakeup = Wakeup(self.kube, api.OURS, self.watch_namespace, cache=self.cache)
        with contextlib.ExitStack() as stack:
            wait = wakeup.wait if self.watch else stop.wait
            if self.watch:
                stack.enter_context(wakeup.running(stop))
            try:
                while not stop.is_set():
                    try:
                        if self.leadership.acquire():
                            self.led_passes += 1
                            self.run_once()
                    except KubeError as exc:
                        log.warning("controller pass failed: %s", exc)
                    wait(self.interval)
            finally:
                with contextlib.suppress(KubeError):  # else the Lease runs out by itself
                    self.leadership.release()

    def run_once(self) -> None:
        for repository in self.kube.list(api.REPOSITORY, self.watch_namespace):
            self._guarded(api.REPOSITORY, repository, self.repositories.reconcile)
        for schedule in self.kube.list(api.SCHEDULE, self.watch_namespace):
            self._guarded(api.SCHEDULE, schedule, self.schedules.reconcile)
        backups = self.kube.list(api.BACKUP, self.watch_namespace)
        self.metrics.observe("Backup", backups, api.DONE_PHASES)
        for backup in backups:
            self._guarded(api.BACKUP, backup, self.backups.reconcile)
        restores = self.kube.list(api.RESTORE, self.watch_namespace)
        self.metrics.observe("Restore", restores, api.DONE_PHASES)
        for restore in restores:
            self._guarded(api.RESTORE, restore, self.restores.reconcile)

    def _guarded(self, rt: ResourceType, obj: Obj, reconcile: Callable[[Obj], None]) -> None:
        """One object's failure must not stop the others, nor the controller: an API error is
        retried next pass; anything else (an object the schema would have refused, a bug) is
        logged with its traceback and shown in the object's condition."""
        meta = obj["metadata"]
        try:
            reconcile(obj)
        except KubeError as exc:
            log.warning("%s %s: %s (retrying)", rt.kind, meta["name"], exc)
            reason, message = "Retrying", f"the Kubernetes API failed; retrying: {exc}"
        except Exception as exc:  # the loop outlives any one object; see the docstring
            log.exception("%s %s could not be reconciled", rt.kind, meta["name"])
            reason, message = "ReconcileError", f"{type(exc).__name__}: {exc}"
        else:
            return
        conditions = set_condition_of(obj, "Ready", None, reason, message)
        # If the API is still failing, the next pass tries again.
        with contextlib.suppress(KubeError):
            self.kube.patch_status(rt, meta["namespace"], meta["name"], {"conditions": conditions})
