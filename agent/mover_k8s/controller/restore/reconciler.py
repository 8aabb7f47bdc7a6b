"""The Restore reconciler: reads what the Restore's status says was done and takes the next step
(mover_k8s.controller.restore says what a Restore does; each step is a module of it)."""

from __future__ import annotations

import logging
from typing import Any

from mover.errors import MoverError
from mover_k8s import api
from mover_k8s.conditions import set_condition, set_condition_of
from mover_k8s.controller.restore import validate
from mover_k8s.controller.restore.apply import Applier, as_obj
from mover_k8s.controller.restore.external import (
    ExternalNames,
    external_fields,
    recorded_external,
    wait_of,
)
from mover_k8s.controller.restore.plan import Loaded, Planner, binds_late
from mover_k8s.controller.restore.volumes import Volumes
from mover_k8s.errors import KubeError, SpecError
from mover_k8s.k8s.client import Kube, Obj
from mover_k8s.repo_access import Repositories
from mover_k8s.restore_plan import fidelity_report, key_of
from mover_k8s.timestamps import now

log = logging.getLogger("mover.k8s.restore")


def counts_of(objects: list[Obj], volumes: list[Any]) -> dict[str, int]:
    counts = {"created": 0, "updated": 0, "skipped": 0, "failed": 0}
    for entry in objects:
        if entry.get("result") in counts:
            counts[entry["result"]] += 1
    counts["failed"] += sum(1 for v in volumes if v.get("result") == "failed")
    return counts


class RestoreReconciler:
    def __init__(
        self, kube: Kube, repos: Repositories, agent_namespace: str, bind_timeout: float = 600.0
    ) -> None:
        self.kube = kube
        self.repos = repos
        self.agent_namespace = agent_namespace
        self.planner = Planner(kube, repos)
        self.applier = Applier(kube)
        self.volumes = Volumes(kube, agent_namespace, bind_timeout)
        self.external = ExternalNames(kube)

    def reconcile(self, restore: Obj) -> None:
        phase = (restore.get("status") or {}).get("phase") or api.NEW
        if phase in api.DONE_PHASES:
            self._follow_external(restore)
            return
        if (restore.get("spec") or {}).get("cancel"):
            self._cancel(restore)
        elif phase in (api.NEW, api.IN_PROGRESS):
            # InProgress: a controller stopped while applying objects. Applying again is safe:
            # what was created then now exists, and is reported as such.
            self._start(restore)
        else:
            self._advance(restore)

    # -- status --

    def _patch(self, restore: Obj, status: Obj) -> None:
        meta = restore["metadata"]
        status["observedGeneration"] = meta.get("generation", 1)
        self.kube.patch_status(api.RESTORE, meta["namespace"], meta["name"], status)
        restore.setdefault("status", {}).update(status)

    def _fail(self, restore: Obj, reason: str, message: str) -> None:
        log.info("restore %s failed: %s", restore["metadata"]["name"], message)
        conditions = set_condition_of(restore, "Ready", False, reason, message)
        self._patch(
            restore,
            {"phase": api.FAILED, "completionTimestamp": now(), "conditions": conditions},
        )

    # -- steps --

    def _cancel(self, restore: Obj) -> None:
        """spec.cancel: stop the volumes' work (the agents stop at their next chunk); objects
        already created stay, as the report says."""
        report = dict((restore.get("status") or {}).get("report") or {})
        volumes: list[Obj] = [dict(v) for v in report.get("volumes") or []]
        if self.volumes.cancel(restore, volumes):
            return
        report["volumes"] = volumes
        counts = counts_of(report.get("objects") or [], volumes)
        message = (
            f"cancelled; created {counts['created']}, updated {counts['updated']} objects "
            "before (they stay)"
        )
        self._patch(
            restore,
            {
                "phase": api.CANCELLED,
                "completionTimestamp": now(),
                "report": report,
                "counts": counts,
                "conditions": set_condition_of(restore, "Ready", False, "Cancelled", message),
            },
        )

    def _start(self, restore: Obj) -> None:
        try:
            loaded = self.planner.load(restore)
            validate.check_target(
                self.kube,
                loaded.plan,
                loaded.filters,
                loaded.doc,
                loaded.mode,
                loaded.classes,
            )
            nodes = validate.volume_nodes(
                self.kube, self.agent_namespace, loaded.plan, loaded.mode, loaded.namespaces
            )
        except SpecError as exc:
            self._fail(restore, exc.reason, str(exc))
            return
        except KubeError:
            raise
        except MoverError as exc:
            self._fail(restore, "RepositoryError", str(exc))
            return
        self._begin(restore, loaded, nodes)

    def _begin(self, restore: Obj, loaded: Loaded, volume_nodes: dict[str, str]) -> None:
        """Everything checked: apply the objects, hand out the volumes, report, go on."""
        meta = restore["metadata"]
        plan, mode, repo_name = loaded.plan, loaded.mode, loaded.repo_name
        self._patch(
            restore,
            {
                "phase": api.IN_PROGRESS,
                "startTimestamp": now(),
                "manifestSnapshot": loaded.manifest_id,
                "repository": repo_name,
                "conditions": set_condition(
                    None, "Ready", False, "InProgress", "restoring", meta.get("generation")
                ),
            },
        )
        # Workloads wait for their volumes' data, so that an app never starts on empty volumes;
        # except where a claim binds only for its first consumer (WaitForFirstConsumer): there
        # the workloads are what binds the claims, so they come first.
        defer = mode == "full" and bool(plan.volumes) and not binds_late(self.kube, plan)
        report = (
            self.applier.apply(plan, loaded.policy, defer_workloads=defer)
            if mode != "data-only"
            else []
        )
        volumes = self.volumes.hand_out(
            restore, repo_name, plan, loaded.namespaces, volume_nodes, mode
        )
        counts = counts_of(report, volumes)
        names = self.external.refresh(recorded_external(plan))
        wait = wait_of(restore)
        self._patch(
            restore,
            {
                "phase": api.WAITING,
                "report": {
                    "objects": report,
                    "volumes": volumes,
                    **fidelity_report(plan),
                    **external_fields(names, wait, None),
                },
                "counts": counts,
            },
        )
        self._advance(restore)

    def _advance(self, restore: Obj) -> None:
        report = dict((restore.get("status") or {}).get("report") or {})
        volumes: list[Obj] = [dict(v) for v in report.get("volumes") or []]
        if self.volumes.track(restore, volumes):
            report["volumes"] = volumes
            self._patch(
                restore,
                {"report": report, "counts": counts_of(report.get("objects") or [], volumes)},
            )
        if any(v.get("result") == "pending" for v in volumes):
            return
        self._finish(restore, report, volumes)

    def _finish(self, restore: Obj, report: Obj, volumes: list[Obj]) -> None:
        """Every volume is done: the workloads held back, the external names, the outcome."""
        objects: list[Obj] = list(report.get("objects") or [])
        deferred = {key_of(as_obj(e)) for e in objects if e.get("result") == "pending"}
        if deferred:
            objects = self._apply_deferred(restore, objects, deferred)
            report["objects"] = objects
            self._patch(restore, {"report": report})
        if report.get("external"):
            wait = wait_of(restore)
            report.update(external_fields(self.external.refresh(report["external"]), wait, None))
        counts = counts_of(report.get("objects") or [], volumes)
        failed = counts["failed"]
        ok = failed == 0
        message = (
            f"created {counts['created']}, updated {counts['updated']}, skipped "
            f"{counts['skipped']}, failed {failed}; volumes restored "
            f"{sum(1 for v in volumes if v.get('result') == 'restored')} of {len(volumes)}"
        )
        self._patch(
            restore,
            {
                "phase": api.COMPLETED if ok else api.PARTIALLY_FAILED,
                "completionTimestamp": now(),
                "report": report,
                "conditions": set_condition_of(
                    restore, "Ready", ok, "Completed" if ok else "PartiallyFailed", message
                ),
            },
        )

    def _apply_deferred(self, restore: Obj, objects: list[Obj], deferred: set[str]) -> list[Obj]:
        """The workloads held back until the data was in place."""
        try:
            loaded = self.planner.load(restore)
        except MoverError as exc:  # the repository went away meanwhile: say so per object
            return [
                dict(e, result="failed", reason=f"not created: {exc}")
                if e.get("result") == "pending"
                else e
                for e in objects
            ]
        done = {
            key_of(as_obj(e)): e
            for e in self.applier.apply(loaded.plan, loaded.policy, only=deferred)
        }
        missing = {"result": "failed", "reason": "no longer in the backup's plan"}
        return [
            done.get(key_of(as_obj(e)), dict(e, **missing)) if e.get("result") == "pending" else e
            for e in objects
        ]

    def _follow_external(self, restore: Obj) -> None:
        """After the Restore has ended: refresh its pending external names until none is
        pending or spec.externalWait has run out since it ended."""
        updated = self.external.follow(restore)
        if updated is not None:
            self._patch(restore, {"report": updated})
