"""Reconciling a Restore: validate everything, then apply objects in order, then hand each
volume to the agent of its node (a VolumeRestore), wait, and report.

Modes: `full` (objects, then data into the claims just made), `resources-only` (objects),
`data-only` (no object is created or changed: the data goes into the claims that exist, e.g.
recreated by a GitOps pipeline; a volume without a matching claim is reported).

All input is checked before the first write: the mode, the backup (found as a Backup here, or
by name in the repository: a backup taken on another cluster), the repository, the manifest
against the Backup's root hash, the mappings (storage classes must exist here), the volume
subset, and the agents for the target volumes. A Restore that fails a check changes nothing.

What a restore changes in the objects beyond the mappings (restore_plan: Service addresses,
namespace references in the data) is in the report: `dropped` and `namespaceReferences`, each
the first REPORT_LIMIT entries, with `droppedCount` and `namespaceReferenceCount`.

Transforms (spec.transforms, mover_k8s.transforms) are checked with the rest of the spec and
applied to the plan, so a rule that does not apply to an object fails the Restore
(`TransformFailed`) before anything is written; the report's `transformed` (and
`transformedCount`) says which rules changed which objects.

External names (mover_k8s.external): once the objects are made, the report pairs each external
name recorded in the captured objects (a load balancer's hostname, an ExternalName target, an
Ingress host, an external-dns name) with the restored object's current one: `same`, `changed`
or `pending` (no value yet, e.g. a LoadBalancer the cloud has not provisioned). Pending entries
are refreshed on every pass, also after the Restore has ended, for `spec.externalWait` (10m)
after its completion; then they are left pending and `report.externalPhase` says `TimedOut`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from mover.errors import MoverError
from mover_k8s import agents, api, external, store, transforms
from mover_k8s.capture import cluster_id
from mover_k8s.conditions import set_condition, set_condition_of
from mover_k8s.controller.backups import item_name, owner_ref, parse_ttl
from mover_k8s.errors import Conflict, KubeError, NotFound, SpecError
from mover_k8s.k8s.client import Kube, Obj, ResourceType
from mover_k8s.repos import Repositories
from mover_k8s.restore_plan import (
    WORKLOADS,
    Filters,
    Options,
    Plan,
    check_mappings,
    cluster_ips_of,
    fidelity_report,
    key_of,
    make_plan,
    rank,
)
from mover_k8s.timestamps import now
from mover_k8s.volumes import pv_node, quantity

log = logging.getLogger("mover.k8s.restore")
CRD_WAIT = 10.0  # seconds for a restored CRD's kind to be served before its objects fail
EXTERNAL_WAIT = "10m"  # spec.externalWait's default
# report.externalPhase: pending external names are refreshed (Waiting), none is pending
# (Settled), or spec.externalWait ran out with some still pending (TimedOut).
EXTERNAL_WAITING, EXTERNAL_SETTLED, EXTERNAL_TIMED_OUT = "Waiting", "Settled", "TimedOut"


def _as_obj(entry: Obj) -> Obj:
    """A report entry in the shape key_of reads."""
    meta = {"name": entry.get("name")}
    if entry.get("namespace"):
        meta["namespace"] = entry["namespace"]
    return {"kind": entry.get("kind"), "metadata": meta}


def _entry(obj: Obj, result: str, reason: str = "") -> Obj:
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


# A write the chart's RBAC grants only with `restore.clusterScoped: true` (RBAC objects, CRDs,
# StorageClasses, replacing Namespaces): refused with 403, the object is skipped with this reason.
NOT_ALLOWED = "not allowed by mover's RBAC; enable restore.clusterScoped"
RBAC_GROUP = "rbac.authorization.k8s.io"


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
        return _entry(obj, "skipped", NOT_ALLOWED)
    if exc.status == 403:
        return _entry(
            obj,
            "failed",
            f"{message}; not allowed by mover's RBAC (the chart's restore.rules, rbac.namespaces)",
        )
    return _entry(obj, "failed", message)


@dataclass(frozen=True)
class Loaded:
    repo_name: str
    manifest_id: str
    doc: Obj
    plan: Plan
    filters: Filters
    namespaces: dict[str, str]
    classes: dict[str, str]
    mode: str
    policy: str


def external_wait(spec: Obj) -> float:
    """spec.externalWait in seconds; SpecError if it is not a duration."""
    text = str(spec.get("externalWait") or EXTERNAL_WAIT)
    try:
        return parse_ttl(text).total_seconds()
    except SpecError:
        raise SpecError(
            "InvalidExternalWait", f"spec.externalWait {text!r} is not a duration like 10m or 90s"
        ) from None


def _wait_of(restore: Obj) -> float:
    """spec.externalWait of a Restore that was checked already: the default if it has been
    changed since to something that is not a duration."""
    try:
        return external_wait(restore.get("spec") or {})
    except SpecError:
        return external_wait({})


def _external_fields(entries: list[Obj], wait: float, waited: float | None) -> Obj:
    """The report's external fields; `waited`: seconds since the Restore ended (None: not yet).
    Nothing when nothing external was recorded."""
    if not entries:
        return {}
    pending = sum(1 for e in entries if e.get("state") == external.PENDING)
    if not pending:
        phase = EXTERNAL_SETTLED
        message = "every recorded external name is known on the restored objects"
    elif waited is not None and waited >= wait:
        phase = EXTERNAL_TIMED_OUT
        message = (
            f"{pending} external name(s) still pending; stopped checking {wait:.0f}s after "
            "the restore ended (spec.externalWait)"
        )
    else:
        phase = EXTERNAL_WAITING
        message = (
            f"{pending} external name(s) pending; checked until {wait:.0f}s after the restore "
            "ends (spec.externalWait)"
        )
    return {"external": entries, "externalPhase": phase, "externalMessage": message}


def _seconds_since(stamp: str) -> float:
    try:
        then = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        return 0.0
    return (datetime.now(UTC) - then).total_seconds()


class RestoreReconciler:
    def __init__(
        self, kube: Kube, repos: Repositories, agent_namespace: str, bind_timeout: float = 600.0
    ) -> None:
        self.kube = kube
        self.repos = repos
        self.agent_namespace = agent_namespace
        # How long a restored claim may take to be bound before its volume is reported failed.
        self.bind_timeout = bind_timeout

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

    def _cancel(self, restore: Obj) -> None:
        """spec.cancel: stop the volumes' work (the agents stop at their next chunk); objects
        already created stay, as the report says."""
        meta, status = restore["metadata"], restore.get("status") or {}
        report = dict(status.get("report") or {})
        volumes: list[Obj] = [dict(v) for v in report.get("volumes") or []]
        running = False
        for entry in volumes:
            if entry.get("result") != "pending":
                continue
            item = (
                self.kube.find(api.VOLUME_RESTORE, meta["namespace"], entry["volumeRestore"])
                if entry.get("volumeRestore")
                else None
            )
            phase = ((item or {}).get("status") or {}).get("phase") or api.NEW
            if item is not None and phase not in api.DONE_PHASES:
                running = True
                if not (item.get("spec") or {}).get("cancel"):
                    self.kube.patch(
                        api.VOLUME_RESTORE,
                        meta["namespace"],
                        entry["volumeRestore"],
                        {"spec": {"cancel": True}},
                    )
                continue
            entry.update(
                result="restored" if phase == api.COMPLETED else "failed",
                reason="" if phase == api.COMPLETED else "cancelled",
            )
        if running:
            return
        report["volumes"] = volumes
        counts = self._counts(report.get("objects") or [], volumes)
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

    # -- validation --

    def _locate(self, restore: Obj) -> tuple[str, str, str | None]:
        """(repository name, manifest snapshot ref, expected root hash)."""
        meta, spec = restore["metadata"], restore.get("spec") or {}
        ref = str(spec.get("backup") or "")
        if not ref:
            raise SpecError("BackupNotFound", "spec.backup names no backup")
        backup_ns, _, backup_name = ref.rpartition("/")
        backup = self.kube.find(api.BACKUP, backup_ns or meta["namespace"], backup_name)
        repo_name = str(spec.get("repository") or "")
        if backup is not None:
            status = backup.get("status") or {}
            if status.get("phase") not in (api.COMPLETED, api.PARTIALLY_FAILED):
                raise SpecError(
                    "BackupNotReady",
                    f"Backup {backup_name} is {status.get('phase') or 'New'}, not Completed; "
                    "wait for it or name another",
                )
            return (
                repo_name or str((backup.get("spec") or {}).get("repository") or ""),
                str(status.get("manifestSnapshot") or ""),
                status.get("rootHash"),
            )
        if not repo_name:
            raise SpecError(
                "BackupNotFound",
                f"no Backup {ref} in namespace {backup_ns or meta['namespace']}; to restore a "
                "backup from a repository (e.g. taken on another cluster) set spec.repository",
            )
        return repo_name, "", None

    def _load(self, restore: Obj) -> Loaded:
        """The Restore's input, checked: what to restore from, and the plan."""
        meta, spec = restore["metadata"], restore.get("spec") or {}
        mode = str(spec.get("mode") or "full")
        if mode not in api.MODES:
            raise SpecError("InvalidMode", f"mode {mode!r} is not one of {', '.join(api.MODES)}")
        policy = str(spec.get("existingResourcePolicy") or "skip")
        if policy not in ("skip", "update"):
            raise SpecError(
                "InvalidPolicy", f"existingResourcePolicy {policy!r} is not skip or update"
            )
        external_wait(spec)
        rules = transforms.parse_rules(spec.get("transforms"), "spec.transforms")
        repo_name, manifest_ref, root = self._locate(restore)
        repo = self.repos.open(meta["namespace"], repo_name)
        try:
            if manifest_ref:
                manifest = repo.find_snapshot(manifest_ref)
            else:
                ref = str(spec["backup"])
                ns, _, name = ref.rpartition("/")
                manifest = store.find_manifest(repo, name, ns or None)
            doc = store.verify_manifest(repo, manifest, root)
            objects_doc = store.load_document(repo, doc["objects"]["snapshot"])
        finally:
            repo.close()
        namespaces: dict[str, str] = dict(spec.get("namespaceMapping") or {})
        classes: dict[str, str] = dict(spec.get("storageClassMapping") or {})
        check_mappings(namespaces, objects_doc.get("namespaces") or [])
        filters = Filters.of(spec)
        objects: list[Obj] = objects_doc.get("objects") or []
        plan = make_plan(
            objects,
            doc.get("volumes") or [],
            mode,
            filters,
            namespaces,
            classes,
            self._options(spec, objects_doc, mode),
            self._transforms(rules, objects) if rules and mode != "data-only" else None,
        )
        return Loaded(repo_name, manifest.id, doc, plan, filters, namespaces, classes, mode, policy)

    def _transforms(
        self, rules: list[transforms.Rule], objects: list[Obj]
    ) -> transforms.Transforms:
        """The rules, with the plural of every kind (for their `resource`): as this cluster
        serves it, or as a captured CRD names it."""
        plurals: dict[tuple[str, str], str] = {}
        if any(rule.resource is not None for rule in rules):
            served = [(rt.group, rt.kind, rt.plural) for rt in self.kube.discover()]
            plurals = transforms.plurals_of(objects, served)
        return transforms.Transforms(tuple(rules), plurals)

    def _options(self, spec: Obj, objects_doc: Obj, mode: str) -> Options:
        """The spec's choices, and whether the backup was captured on this cluster (its recorded
        cluster id is this one's; a backup that recorded none counts as another cluster's) with
        the cluster IPs its Services use now."""
        recorded = str(objects_doc.get("clusterId") or "")
        same = mode != "data-only" and bool(recorded) and recorded == cluster_id(self.kube)
        used = cluster_ips_of(self.kube.list(api.SERVICE)) if same else {}
        return Options.of(spec, same, used)

    def _start(self, restore: Obj) -> None:
        meta = restore["metadata"]
        try:
            loaded = self._load(restore)
            self._check(
                loaded.plan,
                loaded.filters,
                loaded.doc,
                loaded.mode,
                loaded.namespaces,
                loaded.classes,
            )
            volume_nodes = self._volume_nodes(loaded.plan, loaded.mode, loaded.namespaces)
        except SpecError as exc:
            self._fail(restore, exc.reason, str(exc))
            return
        except KubeError:
            raise
        except MoverError as exc:
            self._fail(restore, "RepositoryError", str(exc))
            return
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
        defer = mode == "full" and bool(plan.volumes) and not self._binds_late(plan)
        report = (
            self._apply(plan, loaded.policy, defer_workloads=defer) if mode != "data-only" else []
        )
        volumes = self._hand_out(restore, repo_name, plan, loaded.namespaces, volume_nodes, mode)
        counts = self._counts(report, volumes)
        names = self._refresh_external(self._recorded_external(plan))
        wait = _wait_of(restore)
        self._patch(
            restore,
            {
                "phase": api.WAITING,
                "report": {
                    "objects": report,
                    "volumes": volumes,
                    **fidelity_report(plan),
                    **_external_fields(names, wait, None),
                },
                "counts": counts,
            },
        )
        self._advance(restore)

    def _check(
        self,
        plan: Plan,
        filters: Filters,
        doc: Obj,
        mode: str,
        namespaces: dict[str, str],
        classes: dict[str, str],
    ) -> None:
        for target in sorted(set(classes.values())):
            if self.kube.find(api.STORAGE_CLASS, None, target) is None:
                raise SpecError(
                    "StorageClassNotFound",
                    f"storageClassMapping targets {target!r}, which this cluster does not have",
                )
        known = {f"{v.get('namespace')}/{v.get('pvc')}" for v in doc.get("volumes") or []}
        names = {k.rpartition("/")[2] for k in known}
        unknown = [v for v in filters.volumes if v not in known and v not in names]
        if unknown:
            raise SpecError(
                "VolumeNotFound",
                f"spec.volumes names {', '.join(unknown)}, not in the backup "
                f"(it holds {', '.join(sorted(known)) or 'no volume'})",
            )
        if mode == "full":
            restored_classes = {
                s.prepared["metadata"]["name"]
                for s in plan.steps
                if s.original.get("kind") == "StorageClass" and not s.skip
            }
            for step in plan.steps:
                if step.original.get("kind") != "PersistentVolumeClaim":
                    continue
                cls = (step.prepared.get("spec") or {}).get("storageClassName")
                if (
                    cls
                    and cls not in restored_classes
                    and (self.kube.find(api.STORAGE_CLASS, None, cls) is None)
                ):
                    raise SpecError(
                        "StorageClassNotFound",
                        f"PVC {key_of(step.original)} needs StorageClass {cls!r}, which this "
                        "cluster does not have; map it with storageClassMapping",
                    )

    def _binds_late(self, plan: Plan) -> bool:
        restored = {
            s.prepared["metadata"]["name"]: s.prepared
            for s in plan.steps
            if s.prepared.get("kind") == "StorageClass" and not s.skip
        }
        for step in plan.steps:
            if step.prepared.get("kind") != "PersistentVolumeClaim":
                continue
            name = (step.prepared.get("spec") or {}).get("storageClassName")
            cls = self.kube.find(api.STORAGE_CLASS, None, name) if name else None
            cls = cls or restored.get(str(name))
            if (cls or {}).get("volumeBindingMode") == "WaitForFirstConsumer":
                return True
        return False

    def _volume_nodes(self, plan: Plan, mode: str, namespaces: dict[str, str]) -> dict[str, str]:
        """For data-only, the node of each target claim, checked to have an agent; for full,
        that some agent runs (the claims do not exist yet)."""
        if not plan.volumes:
            return {}
        live = agents.live_nodes(self.kube, self.agent_namespace)
        if not live:
            raise SpecError(
                "NoAgent", "no mover node agent runs in this cluster; start the DaemonSet first"
            )
        if mode != "data-only":
            return {}
        nodes: dict[str, str] = {}
        for entry in plan.volumes:
            ns = namespaces.get(entry["namespace"], entry["namespace"])
            pvc = self.kube.find(api.PVC, ns, entry["pvc"])
            if pvc is None:
                continue  # reported as not matched
            node = self._claim_node(pvc, live)
            if node and node not in live:
                raise SpecError(
                    "NoAgent",
                    f"PVC {ns}/{entry['pvc']} is on node {node}, where no mover node agent "
                    "runs; start it there and restore again",
                )
            nodes[f"{ns}/{entry['pvc']}"] = node
        return nodes

    def _claim_node(self, pvc: Obj, live: set[str]) -> str:
        volume = (pvc.get("spec") or {}).get("volumeName")
        pv = self.kube.find(api.PV, None, volume) if volume else None
        node = pv_node(pv) if pv else ""
        if not node:
            node = (pvc["metadata"].get("annotations") or {}).get(
                "volume.kubernetes.io/selected-node", ""
            )
        return node or (sorted(live)[0] if live else "")

    # -- objects --

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

    def _apply(
        self,
        plan: Plan,
        policy: str,
        defer_workloads: bool = False,
        only: set[str] | None = None,
    ) -> list[Obj]:
        """Create the plan's objects in order; `only`: just these (deferred) keys."""
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
        for ns in sorted(n for n in needed - planned if n and only is None):
            # A granular restore into a namespace that is not there: make it (bare).
            if self.kube.find(api.NAMESPACE, None, ns) is None:
                body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}
                try:
                    self.kube.create(api.NAMESPACE, body)
                    report.append(_entry(body, "created", "needed by the objects restored"))
                except KubeError as exc:
                    report.append(_entry(body, "failed", str(exc)))
        established: set[tuple[str, str]] = set()
        for step in plan.steps:
            obj = step.prepared
            if only is not None and key_of(obj) not in only:  # keys as restored (mapped)
                continue
            if step.skip:
                report.append(_entry(obj, "skipped", step.skip))
                continue
            if defer_workloads and rank(step.original) == WORKLOADS:
                report.append(_entry(obj, "pending", "after its volumes' data is restored"))
                continue
            try:
                rt = self._type_of(obj, established)
                self.kube.create(rt, obj)
                report.append(_entry(obj, "created"))
                if obj.get("kind") == "CustomResourceDefinition":
                    spec = obj.get("spec") or {}
                    established.add(
                        (spec.get("group", ""), (spec.get("names") or {}).get("kind", ""))
                    )
            except Conflict as exc:
                if exc.reason != "AlreadyExists" or policy == "skip":
                    report.append(_entry(obj, "skipped", "exists already"))
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
        return _entry(obj, "updated", "existed; replaced with the backup's version")

    # -- volumes --

    def _hand_out(
        self,
        restore: Obj,
        repo_name: str,
        plan: Plan,
        namespaces: dict[str, str],
        nodes: dict[str, str],
        mode: str,
    ) -> list[Obj]:
        entries: list[Obj] = []
        for volume in plan.volumes:
            ns = str(namespaces.get(volume["namespace"], volume["namespace"]))
            entry: Obj = {
                "kind": "PersistentVolumeClaim",
                "namespace": ns,
                "name": str(volume["pvc"]),
                "snapshot": volume["snapshot"],
                "sourceTree": volume.get("tree", ""),
                "size": int(volume.get("size") or 0),
                "since": now(),
            }
            if mode == "data-only" and self.kube.find(api.PVC, ns, entry["name"]) is None:
                entry.update(
                    result="failed",
                    reason=f"no PVC {ns}/{entry['name']} in this cluster to restore into",
                )
            else:
                self._try_hand_out(restore, repo_name, entry, nodes.get(f"{ns}/{entry['name']}"))
            entries.append(entry)
        return entries

    def _try_hand_out(self, restore: Obj, repo_name: str, entry: Obj, node: str | None) -> None:
        """Make the VolumeRestore of `entry` once its claim is bound; until then (a provisioner
        at work, a class that binds late) it stays pending, for `bind_timeout` seconds."""
        meta = restore["metadata"]
        ns, name = entry["namespace"], entry["name"]
        pvc = self.kube.find(api.PVC, ns, name)
        pv_name = ((pvc or {}).get("spec") or {}).get("volumeName") or ""
        pv = self.kube.find(api.PV, None, pv_name) if pv_name else None
        if pvc is None or pv is None:
            waited = _seconds_since(str(entry.get("since") or ""))
            if waited > self.bind_timeout:
                entry.update(
                    result="failed",
                    reason=f"PVC {ns}/{name} was not bound to a volume within "
                    f"{self.bind_timeout:.0f}s",
                )
            else:
                entry.update(result="pending", reason=f"waiting for PVC {ns}/{name} to be bound")
            return
        capacity = quantity(((pv.get("spec") or {}).get("capacity") or {}).get("storage"))
        if capacity and int(entry.get("size") or 0) > capacity:
            entry.update(
                result="failed",
                reason=f"PV {pv_name} holds {capacity} bytes; the volume needs {entry['size']}",
            )
            return
        live = agents.live_nodes(self.kube, self.agent_namespace)
        node = node or self._claim_node(pvc, live)
        if node not in live:
            entry.update(result="failed", reason=f"no mover node agent runs on node {node}")
            return
        item = item_name(meta["name"], ns, name)
        body = {
            "apiVersion": api.API_VERSION,
            "kind": "VolumeRestore",
            "metadata": {
                "name": item,
                "namespace": meta["namespace"],
                "labels": {api.NODE_LABEL: node, api.RESTORE_LABEL: meta["name"]},
                "ownerReferences": [owner_ref(restore)],
            },
            "spec": {
                "restore": meta["name"],
                "repository": repo_name,
                "node": node,
                "pvc": {"namespace": ns, "name": name},
                "pv": pv_name,
                "snapshot": entry["snapshot"],
                "sourceTree": entry.get("sourceTree", ""),
                "cancel": False,
            },
        }
        try:
            self.kube.create(api.VOLUME_RESTORE, body)
        except KubeError as exc:
            if exc.status != 409:
                raise
        entry.update(result="pending", reason="", volumeRestore=item)

    def _advance(self, restore: Obj) -> None:
        meta, status = restore["metadata"], restore.get("status") or {}
        report = dict(status.get("report") or {})
        volumes: list[Obj] = [dict(v) for v in report.get("volumes") or []]
        changed = False
        for entry in volumes:
            if entry.get("result") != "pending":
                continue
            if not entry.get("volumeRestore"):
                before = dict(entry)
                self._try_hand_out(restore, str(status.get("repository") or ""), entry, None)
                changed = changed or entry != before
                continue
            item = self.kube.find(api.VOLUME_RESTORE, meta["namespace"], entry["volumeRestore"])
            if item is None:
                entry.update(result="failed", reason="its VolumeRestore was deleted")
                changed = True
                continue
            item_status = item.get("status") or {}
            phase = item_status.get("phase")
            if phase == api.COMPLETED:
                entry.update(result="restored", reason="")
                changed = True
            elif phase in (api.FAILED, api.CANCELLED):
                entry.update(result="failed", reason=item_status.get("message") or phase)
                changed = True
        if changed:
            report["volumes"] = volumes
            self._patch(
                restore,
                {"report": report, "counts": self._counts(report.get("objects") or [], volumes)},
            )
        if any(v.get("result") == "pending" for v in volumes):
            return
        objects: list[Obj] = list(report.get("objects") or [])
        deferred = {key_of(_as_obj(e)) for e in objects if e.get("result") == "pending"}
        if deferred:
            objects = self._apply_deferred(restore, objects, deferred)
            report["objects"] = objects
            self._patch(restore, {"report": report})
        if report.get("external"):
            wait = _wait_of(restore)
            report.update(_external_fields(self._refresh_external(report["external"]), wait, None))
        counts = self._counts(report.get("objects") or [], volumes)
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
            loaded = self._load(restore)
        except MoverError as exc:  # the repository went away meanwhile: say so per object
            return [
                dict(e, result="failed", reason=f"not created: {exc}")
                if e.get("result") == "pending"
                else e
                for e in objects
            ]
        done = {
            key_of(_as_obj(e)): e for e in self._apply(loaded.plan, loaded.policy, only=deferred)
        }
        missing = {"result": "failed", "reason": "no longer in the backup's plan"}
        return [
            done.get(key_of(_as_obj(e)), dict(e, **missing)) if e.get("result") == "pending" else e
            for e in objects
        ]

    # -- external names --

    @staticmethod
    def _recorded_external(plan: Plan) -> list[Obj]:
        """The external names of the captured objects this restore makes (or finds existing),
        under their restored (mapped) namespace; not yet compared."""
        entries: list[Obj] = []
        for step in plan.steps:
            if step.skip:
                continue
            meta = step.prepared.get("metadata") or {}
            for what, value in external.values_of(step.original):
                entry: Obj = {
                    "apiVersion": step.prepared.get("apiVersion", ""),
                    "kind": step.prepared.get("kind", ""),
                    "name": meta.get("name", ""),
                    "what": what,
                    "recorded": value,
                    "current": "",
                    "state": external.PENDING,
                }
                if meta.get("namespace"):
                    entry["namespace"] = meta["namespace"]
                entries.append(entry)
        return entries

    def _current_external(
        self, api_version: str, kind: str, ns: str, name: str
    ) -> list[tuple[str, str]]:
        """(type, value) of the restored object's external names now; none if it is not there
        (or its kind is not served, or mover's RBAC does not let it read that kind: 403)."""
        try:
            obj = self.kube.find(self.kube.resource_for(api_version, kind), ns or None, name)
        except NotFound:
            return []
        except KubeError as exc:
            if exc.status != 403:
                raise
            return []
        return external.values_of(obj) if obj is not None else []

    def _refresh_external(self, entries: list[Obj]) -> list[Obj]:
        """`entries` paired again with the restored objects' current values."""
        groups: dict[tuple[str, str, str, str, str], list[tuple[str, str]]] = {}
        for e in entries:
            if e.get("recorded"):
                key = (
                    str(e.get("apiVersion") or ""),
                    str(e.get("kind") or ""),
                    str(e.get("namespace") or ""),
                    str(e.get("name") or ""),
                    external.family(str(e.get("what") or "")),
                )
                groups.setdefault(key, []).append((str(e["what"]), str(e["recorded"])))
        live: dict[tuple[str, str, str, str], list[tuple[str, str]]] = {}
        refreshed: list[Obj] = []
        for (api_version, kind, ns, name, family), recorded in groups.items():
            obj_key = (api_version, kind, ns, name)
            if obj_key not in live:
                live[obj_key] = self._current_external(api_version, kind, ns, name)
            current = [(t, v) for t, v in live[obj_key] if external.family(t) == family]
            for what, old, new, state in external.pair(recorded, current):
                entry: Obj = {"apiVersion": api_version, "kind": kind, "name": name}
                if ns:
                    entry["namespace"] = ns
                entry.update(what=what, recorded=old, current=new, state=state)
                refreshed.append(entry)
        return refreshed

    def _follow_external(self, restore: Obj) -> None:
        """After the Restore has ended: refresh its pending external names until none is
        pending or spec.externalWait has run out since it ended."""
        status = restore.get("status") or {}
        report = dict(status.get("report") or {})
        if report.get("externalPhase") != EXTERNAL_WAITING:
            return
        wait = _wait_of(restore)
        waited = _seconds_since(str(status.get("completionTimestamp") or ""))
        try:
            names = self._refresh_external(list(report.get("external") or []))
        except KubeError as exc:  # the Restore has ended well: its condition stays; next pass
            log.warning("restore %s: external names: %s", restore["metadata"]["name"], exc)
            return
        updated = dict(report, **_external_fields(names, wait, waited))
        if updated != report:
            self._patch(restore, {"report": updated})

    @staticmethod
    def _counts(objects: list[Obj], volumes: list[Any]) -> dict[str, int]:
        counts = {"created": 0, "updated": 0, "skipped": 0, "failed": 0}
        for entry in objects:
            if entry.get("result") in counts:
                counts[entry["result"]] += 1
        counts["failed"] += sum(1 for v in volumes if v.get("result") == "failed")
        return counts
