"""Applying a Restore's plan: create its objects in order (bare Namespaces first where a granular
restore needs one), or replace those that exist (existingResourcePolicy: update), each with its
entry in the report; RBAC refusals are reported, not raised."""

from __future__ import annotations

import time

from mover_k8s import api
from mover_k8s.errors import Conflict, KubeError, NotFound
from mover_k8s.k8s.client import Kube, Obj, ResourceType
from mover_k8s.restore_plan import WORKLOADS, Plan, key_of, rank

CRD_WAIT = 10.0  # seconds for a restored CRD's kind to be served before its objects fail

# A write the chart's RBAC grants only with `restore.clusterScoped: true` (RBAC objects, CRDs,
# StorageClasses, replacing Namespaces): refused with 403, the object is skipped with this reason.
NOT_ALLOWED = "not allowed by mover's RBAC; enable restore.clusterScoped"
RBAC_GROUP = "rbac.authorization.k8s.io"


def as_obj(entry: Obj) -> Obj:
    """A report entry in the shape key_of reads."""
    meta = {"name": entry.get("name")}
    if entry.get("namespace"):
        meta["namespace"] = entry["namespace"]
    return {"kind": entry.get("kind"), "metadata": meta}


def report_entry(obj: Obj, result: str, reason: str = "") -> Obj:
    meta = obj.get("metadata") or {}
    entry = {
        "kind": obj.get("kind", ""),
        "apiVersion": obj.get("apiVersion", ""),
        "name": meta.get("name", ""),
        "result": result,
        "reason": reason,
    }
    if meta.get("namespace"):
        entry["namespace"] = meta["namespace"]
    return entry


def needs_cluster_scope(obj: Obj, creating: bool) -> bool:
    """Whether writing `obj` is one of the chart's opt-in grants (restore.clusterScoped): an RBAC
    object (namespaced or not), or any cluster-scoped object but a Namespace being created
    (restore.createNamespaces, on by default). `obj` as restored: a namespaced one names its
    namespace."""
    group = str(obj.get("apiVersion") or "").rpartition("/")[0]
    if group == RBAC_GROUP:
        return True
    if (obj.get("metadata") or {}).get("namespace"):
        return False
    return not (creating and group == "" and obj.get("kind") == "Namespace")


def refused_entry(obj: Obj, exc: KubeError, creating: bool, message: str) -> Obj:
    """The report entry of a write the API refused with `exc`: a 403 Forbidden on an object
    that needs restore.clusterScoped is skipped (NOT_ALLOWED); another 403 fails, saying which
    of the chart's values grant writes; anything else fails with `message`."""
    if exc.status == 403 and needs_cluster_scope(obj, creating):
        return report_entry(obj, "skipped", NOT_ALLOWED)
    if exc.status == 403:
        return report_entry(
            obj,
            "failed",
            f"{message}; not allowed by mover's RBAC (the chart's restore.rules, rbac.namespaces)",
        )
    return report_entry(obj, "failed", message)


class Applier:
    """Writes a plan's objects to the cluster and reports each."""

    def __init__(self, kube: Kube) -> None:
        self.kube = kube

    def _type_of(self, obj: Obj, established: set[tuple[str, str]]) -> ResourceType:
        """The object's type; waits (a little) only for the kinds of CRDs this restore just
        created, which the API server is still establishing."""
        api_version, kind = obj.get("apiVersion", ""), obj.get("kind", "")
        deadline = time.monotonic() + CRD_WAIT
        while True:
            try:
                return self.kube.resource_for(api_version, kind)
            except NotFound:
                waiting = (api_version.rpartition("/")[0], kind) in established
                if not waiting or time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def _namespaces(self, plan: Plan) -> list[Obj]:
        """A granular restore into namespaces that are not there (nor in the plan): make them,
        bare."""
        report: list[Obj] = []
        planned = {
            s.prepared["metadata"]["name"]
            for s in plan.steps
            if s.prepared.get("kind") == "Namespace" and not s.skip
        }
        needed = {
            s.prepared["metadata"].get("namespace")
            for s in plan.steps
            if not s.skip and s.prepared["metadata"].get("namespace")
        }
        for ns in sorted(n for n in needed - planned if n):
            if self.kube.find(api.NAMESPACE, None, ns) is None:
                body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}
                try:
                    self.kube.create(api.NAMESPACE, body)
                    report.append(report_entry(body, "created", "needed by the objects restored"))
                except KubeError as exc:
                    report.append(report_entry(body, "failed", str(exc)))
        return report

    def apply(
        self,
        plan: Plan,
        policy: str,
        defer_workloads: bool = False,
        only: set[str] | None = None,
    ) -> list[Obj]:
        """Create the plan's objects in order; `only`: just these (deferred) keys."""
        report: list[Obj] = self._namespaces(plan) if only is None else []
        established: set[tuple[str, str]] = set()
        for step in plan.steps:
            obj = step.prepared
            if only is not None and key_of(obj) not in only:  # keys as restored (mapped)
                continue
            if step.skip:
                report.append(report_entry(obj, "skipped", step.skip))
                continue
            if defer_workloads and rank(step.original) == WORKLOADS:
                report.append(report_entry(obj, "pending", "after its volumes' data is restored"))
                continue
            try:
                rt = self._type_of(obj, established)
                self.kube.create(rt, obj)
                report.append(report_entry(obj, "created"))
                if obj.get("kind") == "CustomResourceDefinition":
                    spec = obj.get("spec") or {}
                    established.add(
                        (spec.get("group", ""), (spec.get("names") or {}).get("kind", ""))
                    )
            except Conflict as exc:
                if exc.reason != "AlreadyExists" or policy == "skip":
                    report.append(report_entry(obj, "skipped", "exists already"))
                    continue
                report.append(self._update(obj, established))
            except KubeError as exc:
                report.append(refused_entry(obj, exc, True, str(exc)))
        return report

    def _update(self, obj: Obj, established: set[tuple[str, str]]) -> Obj:
        try:
            rt = self._type_of(obj, established)
            meta = obj["metadata"]
            current = self.kube.get(rt, meta.get("namespace"), meta["name"])
            body = dict(obj)
            body["metadata"] = dict(meta, resourceVersion=current["metadata"]["resourceVersion"])
            self.kube.replace(rt, body)
        except KubeError as exc:
            return refused_entry(obj, exc, False, f"exists; update failed: {exc}")
        return report_entry(obj, "updated", "existed; replaced with the backup's version")
