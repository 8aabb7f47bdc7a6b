"""Turning captured objects into objects to create: which, in what order, and how changed.

Pure functions over JSON objects (no API calls), so the rules are easy to read and test:

- order: CRDs, Namespaces, ServiceAccounts/ConfigMaps/Secrets, StorageClasses and RBAC,
  PVCs, Services, workloads, then the rest (custom resources, Ingresses, policies...);
- stripped: what the cluster assigns (uid, resourceVersion, creationTimestamp, generation,
  managedFields, ownerReferences to objects that no longer exist, status, a Service's
  clusterIP(s), a Pod's nodeName, a PVC's volumeName, data source and binding annotations);
- skipped, with the reason: objects a controller recreates (a controller owner reference to a
  captured object; Endpoints and EndpointSlices of Services), what every namespace gets by
  itself (kube-root-ca.crt, the default ServiceAccount, token Secrets), PVs (a restored claim
  gets a new volume from its class);
- mapped everywhere they appear: namespaces (metadata.namespace, subjects, claimRefs, any
  `namespace` field) and storage classes (`storageClassName` fields, the beta annotation).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from mover_k8s.capture import owner_of
from mover_k8s.errors import SpecError

Obj = dict[str, Any]

STRIPPED_METADATA = (
    "uid",
    "resourceVersion",
    "creationTimestamp",
    "generation",
    "managedFields",
    "selfLink",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "ownerReferences",
)
STRIPPED_ANNOTATIONS = (
    "pv.kubernetes.io/bind-completed",
    "pv.kubernetes.io/bound-by-controller",
    "pv.kubernetes.io/provisioned-by",
    "volume.beta.kubernetes.io/storage-provisioner",
    "volume.kubernetes.io/storage-provisioner",
    "volume.kubernetes.io/selected-node",
    "deployment.kubernetes.io/revision",
)
SC_ANNOTATION = "volume.beta.kubernetes.io/storage-class"

_ORDER = {
    "CustomResourceDefinition": 0,
    "Namespace": 1,
    "ServiceAccount": 2,
    "ConfigMap": 2,
    "Secret": 2,
    "LimitRange": 2,
    "ResourceQuota": 2,
    "StorageClass": 3,
    "PriorityClass": 3,
    "ClusterRole": 3,
    "Role": 3,
    "ClusterRoleBinding": 3,
    "RoleBinding": 3,
    "PersistentVolume": 4,
    "PersistentVolumeClaim": 4,
    "Service": 5,
    "Deployment": 6,
    "StatefulSet": 6,
    "DaemonSet": 6,
    "ReplicaSet": 6,
    "ReplicationController": 6,
    "Job": 6,
    "CronJob": 6,
    "Pod": 6,
}
WORKLOADS = 6
REST = 7


def rank(obj: Obj) -> int:
    return _ORDER.get(str(obj.get("kind")), REST)


def key_of(obj: Obj) -> str:
    meta = obj.get("metadata") or {}
    ns = meta.get("namespace")
    return (
        f"{obj.get('kind')}/{ns}/{meta.get('name')}"
        if ns
        else f"{obj.get('kind')}/{meta.get('name')}"
    )


def skip_reason(obj: Obj, captured_uids: set[str], mode: str) -> str | None:
    kind, meta = obj.get("kind"), obj.get("metadata") or {}
    owner = owner_of(obj)
    if owner is not None and owner.get("uid") in captured_uids:
        return f"managed by {owner.get('kind')}/{owner.get('name')}, which recreates it"
    if kind in ("Endpoints", "EndpointSlice"):
        return "maintained by the cluster for its Service"
    if kind == "ConfigMap" and meta.get("name") == "kube-root-ca.crt":
        return "created in every namespace by the cluster"
    if kind == "ServiceAccount" and meta.get("name") == "default":
        return "created in every namespace by the cluster"
    if kind == "Secret" and obj.get("type") == "kubernetes.io/service-account-token":
        return "service account tokens are issued by the cluster"
    if kind == "PersistentVolume":
        return "a restored claim is given a new volume by its StorageClass"
    if kind == "Lease":
        return "leases belong to the processes that hold them"
    return None


def strip(obj: Obj) -> Obj:
    """A copy without what the cluster assigns."""
    result = copy.deepcopy(obj)
    result.pop("status", None)
    meta = result.setdefault("metadata", {})
    for name in STRIPPED_METADATA:
        meta.pop(name, None)
    annotations = meta.get("annotations")
    if annotations:
        for name in STRIPPED_ANNOTATIONS:
            annotations.pop(name, None)
        if not annotations:
            meta.pop("annotations")
    spec = result.get("spec")
    kind = result.get("kind")
    if isinstance(spec, dict):
        if kind == "Service":
            for name in ("clusterIP", "clusterIPs", "healthCheckNodePort"):
                spec.pop(name, None)
        elif kind == "Pod":
            spec.pop("nodeName", None)
        elif kind == "PersistentVolumeClaim":
            # A new volume, filled from the backup: not the old PV, not the snapshot or claim
            # the old one may have been cloned from (it may not exist here).
            for name in ("volumeName", "dataSource", "dataSourceRef"):
                spec.pop(name, None)
    return result


def _map_values(node: Any, key: str, mapping: dict[str, str]) -> Any:
    if isinstance(node, dict):
        return {
            k: (
                mapping.get(v, v)
                if k == key and isinstance(v, str)
                else _map_values(v, key, mapping)
            )
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_map_values(v, key, mapping) for v in node]
    return node


def apply_mappings(obj: Obj, namespaces: dict[str, str], classes: dict[str, str]) -> Obj:
    result = obj
    if namespaces:
        result = _map_values(result, "namespace", namespaces)
        if result.get("kind") == "Namespace":
            name = result["metadata"]["name"]
            result["metadata"]["name"] = namespaces.get(name, name)
    if classes:
        result = _map_values(result, "storageClassName", classes)
        annotations = (result.get("metadata") or {}).get("annotations") or {}
        if annotations.get(SC_ANNOTATION) in classes:
            annotations[SC_ANNOTATION] = classes[annotations[SC_ANNOTATION]]
        if result.get("kind") == "StorageClass":
            name = result["metadata"]["name"]
            if name in classes:
                return {}  # mapped away: the cluster's own class stands in for it
    return result


def _labels_match(labels: dict[str, str], selector: Obj) -> bool:
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def _name_matches(obj: Obj, names: Iterable[str]) -> bool:
    kind = str(obj.get("kind", "")).lower()
    name = (obj.get("metadata") or {}).get("name")
    for entry in names:
        if "/" in entry:
            want_kind, _, want_name = entry.partition("/")
            if want_kind.lower() == kind and want_name == name:
                return True
        elif entry == name:
            return True
    return False


def _kind_in(obj: Obj, kinds: Iterable[str]) -> bool:
    kind = str(obj.get("kind", ""))
    group = str(obj.get("apiVersion", "")).rpartition("/")[0]
    forms = {kind.lower(), f"{kind}.{group}".lower() if group else kind.lower()}
    return any(k.lower() in forms for k in kinds)


@dataclass(frozen=True)
class Filters:
    included_kinds: tuple[str, ...] = ()
    excluded_kinds: tuple[str, ...] = ()
    included_names: tuple[str, ...] = ()
    excluded_names: tuple[str, ...] = ()
    selector: Obj | None = None
    volumes: tuple[str, ...] = ()

    @classmethod
    def of(cls, spec: Obj) -> Filters:
        return cls(
            tuple(spec.get("includedKinds") or ()),
            tuple(spec.get("excludedKinds") or ()),
            tuple(spec.get("includedNames") or ()),
            tuple(spec.get("excludedNames") or ()),
            spec.get("labelSelector") or None,
            tuple(spec.get("volumes") or ()),
        )

    def wants(self, obj: Obj, kinds: bool = True) -> bool:
        if kinds and self.included_kinds and not _kind_in(obj, self.included_kinds):
            return False
        if kinds and self.excluded_kinds and _kind_in(obj, self.excluded_kinds):
            return False
        if self.included_names and not _name_matches(obj, self.included_names):
            return False
        if self.excluded_names and _name_matches(obj, self.excluded_names):
            return False
        labels = (obj.get("metadata") or {}).get("labels") or {}
        return not (self.selector and not _labels_match(labels, self.selector))

    def wants_volume(self, namespace: str, pvc: str) -> bool:
        if not self.volumes:
            return True
        return f"{namespace}/{pvc}" in self.volumes or pvc in self.volumes


@dataclass
class Step:
    original: Obj
    prepared: Obj
    skip: str | None = None

    @property
    def key(self) -> str:
        return key_of(self.original)


@dataclass
class Plan:
    steps: list[Step] = field(default_factory=list)
    volumes: list[Obj] = field(default_factory=list)  # manifest entries to restore


def check_mappings(namespaces: dict[str, str], captured_namespaces: Iterable[str]) -> None:
    known = set(captured_namespaces)
    for source, target in namespaces.items():
        if source not in known:
            raise SpecError(
                "InvalidMapping",
                f"namespaceMapping names {source!r}, which the backup does not hold "
                f"(it holds {', '.join(sorted(known)) or 'none'})",
            )
        if not target or len(target) > 63 or not all(c.isalnum() or c == "-" for c in target):
            raise SpecError(
                "InvalidMapping", f"namespaceMapping target {target!r} is not a namespace name"
            )


def make_plan(
    objects: list[Obj],
    manifest_volumes: list[Obj],
    mode: str,
    filters: Filters,
    namespaces: dict[str, str],
    classes: dict[str, str],
) -> Plan:
    uids = {str((o.get("metadata") or {}).get("uid")) for o in objects}
    plan = Plan()
    selected_pvcs: set[tuple[str, str]] = set()
    for obj in sorted(objects, key=lambda o: (rank(o), key_of(o))):
        kind_ok = obj.get("kind") == "PersistentVolumeClaim" and mode == "data-only"
        if not filters.wants(obj, kinds=not kind_ok):
            continue
        if obj.get("kind") == "PersistentVolumeClaim":
            meta = obj["metadata"]
            selected_pvcs.add((meta["namespace"], meta["name"]))
        if mode == "data-only":
            continue  # no object changes
        reason = skip_reason(obj, uids, mode)
        prepared = apply_mappings(strip(obj), namespaces, classes)
        if not prepared:
            reason = f"mapped to the cluster's StorageClass {classes.get(obj['metadata']['name'])}"
            prepared = obj
        plan.steps.append(Step(obj, prepared, reason))
    if mode != "resources-only":
        for entry in manifest_volumes:
            pair = (entry.get("namespace", ""), entry.get("pvc", ""))
            if pair in selected_pvcs and filters.wants_volume(*pair):
                plan.volumes.append(entry)
    return plan
