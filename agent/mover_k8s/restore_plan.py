"""Turning captured objects into objects to create: which, in what order, and how changed.

Pure functions over JSON objects (no API calls), so the rules are easy to read and test:

- order: CRDs, Namespaces, ServiceAccounts/ConfigMaps/Secrets, StorageClasses and RBAC,
  PVCs, Services, workloads, then the rest (custom resources, Ingresses, policies...);
- stripped: what the cluster assigns (uid, resourceVersion, creationTimestamp, generation,
  managedFields, ownerReferences to objects that no longer exist, status, a Service's
  clusterIP(s) and healthCheckNodePort, a Pod's nodeName, a PVC's volumeName, data source and
  binding annotations); but a headless Service's `clusterIP: None` is what it is, kept always;
- Service addresses (`service_addresses`): a captured clusterIP is put back only on the cluster
  it was captured on, and only where no other Service here uses it (else dropped, reported);
  nodePorts and healthCheckNodePort are dropped (reported) unless preserve_node_ports;
- namespace references (`namespace_references`): with a namespace mapping OLD->NEW, any string
  of an object (Secret data and ConfigMap binaryData decoded) naming OLD in a Service DNS name
  (`NAME.OLD.svc`, `NAME.OLD.svc.cluster.local`) is reported, and rewritten to NEW (in those
  names only) with rewrite_namespace_references;
- skipped, with the reason: objects a controller recreates (a controller owner reference to a
  captured object; Endpoints and EndpointSlices of Services), what every namespace gets by
  itself (kube-root-ca.crt, the default ServiceAccount, token Secrets), PVs (a restored claim
  gets a new volume from its class);
- mapped everywhere they appear: namespaces (metadata.namespace, subjects, claimRefs, any
  `namespace` field) and storage classes (`storageClassName` fields, the beta annotation);
- kept as captured: everything else, labels and annotations included (GitOps tracking: Argo
  CD's, Flux's, Helm's `meta.helm.sh/*` and `app.kubernetes.io/*`; Helm's release Secrets are
  restored as any Secret);
- transformed last (`transform`, mover_k8s.transforms: a Restore's spec.transforms), after all
  of the above, as the user's rules say.
"""

from __future__ import annotations

import base64
import binascii
import copy
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from mover_k8s.capture import owner_of
from mover_k8s.errors import SpecError

Obj = dict[str, Any]
# (object as prepared, as captured) -> (object transformed, labels of the rules that changed it)
Transform = Callable[[Obj, Obj], tuple[Obj, list[str]]]

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
HEADLESS = "None"  # a headless Service's clusterIP
REPORT_LIMIT = 100  # entries of each list in a Restore's report (the count says how many in all)

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


def headless(service: Obj) -> bool:
    """A headless Service (`clusterIP: None`): its DNS name resolves to its pods (a
    StatefulSet's `POD.SERVICE.NAMESPACE.svc` names need it)."""
    return (service.get("spec") or {}).get("clusterIP") == HEADLESS


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
            spec.pop("healthCheckNodePort", None)
            if not headless(result):  # `None` is declared, not assigned: the Service's DNS
                for name in ("clusterIP", "clusterIPs"):
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


@dataclass(frozen=True)
class Options:
    """A restore's choices (spec.preserveNodePorts, spec.rewriteNamespaceReferences) and what it
    knows of the cluster it restores into: whether the backup was captured on this one, and the
    cluster IPs its Services use (IP -> NAMESPACE/NAME of the Service)."""

    preserve_node_ports: bool = False
    rewrite_namespace_references: bool = False
    same_cluster: bool = False
    cluster_ips: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def of(
        cls, spec: Obj, same_cluster: bool = False, cluster_ips: Mapping[str, str] | None = None
    ) -> Options:
        return cls(
            preserve_node_ports=spec.get("preserveNodePorts") is True,
            rewrite_namespace_references=spec.get("rewriteNamespaceReferences") is True,
            same_cluster=same_cluster,
            cluster_ips=dict(cluster_ips or {}),
        )


def cluster_ips_of(services: Iterable[Obj]) -> dict[str, str]:
    """IP -> NAMESPACE/NAME for the cluster IPs `services` hold (headless ones hold none)."""
    used: dict[str, str] = {}
    for service in services:
        spec, meta = service.get("spec") or {}, service.get("metadata") or {}
        for ip in [spec.get("clusterIP"), *(spec.get("clusterIPs") or [])]:
            if ip and ip != HEADLESS:
                used[str(ip)] = f"{meta.get('namespace')}/{meta.get('name')}"
    return used


def _join(path: str, key: str) -> str:
    """`a.b`, or `a["b.c/d"]` for a key that is not a plain word (annotations, data keys)."""
    if key.replace("_", "").replace("-", "").isalnum():
        return f"{path}.{key}" if path else key
    return f'{path}["{key}"]'


def _item(path: str, items: list[Any], index: int) -> str:
    """`ports[name=http]` where every element has a name (containers, env, ports), else
    `ports[0]`."""
    named = all(isinstance(i, dict) and isinstance(i.get("name"), str) for i in items)
    return f"{path}[name={items[index]['name']}]" if named else f"{path}[{index}]"


NODE_PORT_REASON = (
    "node ports are given anew by the cluster (a captured one collides on another cluster); "
    "spec.preserveNodePorts keeps them"
)


def service_addresses(original: Obj, prepared: Obj, options: Options) -> list[Obj]:
    """A Service's captured addresses put back on `prepared` (stripped and mapped), or not:

    - `clusterIP: None` (headless) stays (strip keeps it);
    - another captured cluster IP (and clusterIPs) only when restoring into the cluster it was
      captured on and no other Service here uses it; when one does, it is dropped (reported);
      on another cluster it is dropped (not reported: the IP means nothing there); a Service
      that exists here already keeps its own;
    - nodePorts and healthCheckNodePort are dropped (reported) unless preserve_node_ports.

    Returns what was dropped: {path, value, reason}."""
    spec = prepared.get("spec")
    if original.get("kind") != "Service" or not isinstance(spec, dict):
        return []
    captured = original.get("spec") or {}
    dropped: list[Obj] = []
    ip = captured.get("clusterIP")
    meta = prepared.get("metadata") or {}
    itself = f"{meta.get('namespace')}/{meta.get('name')}"
    # A Service that is here already keeps the address it has (the restore skips it, or
    # replaces it: the API server keeps its IP when the new version names none).
    if (
        ip
        and ip != HEADLESS
        and options.same_cluster
        and itself not in options.cluster_ips.values()
    ):
        ips = [str(a) for a in captured.get("clusterIPs") or [ip]]
        taken = {a: options.cluster_ips[a] for a in ips if a in options.cluster_ips}
        if not taken:
            spec["clusterIP"] = ip
            if captured.get("clusterIPs"):
                spec["clusterIPs"] = list(captured["clusterIPs"])
        for index, address in enumerate(ips):
            if address in taken:
                dropped.append(
                    {
                        "path": "spec.clusterIP" if address == ip else f"spec.clusterIPs[{index}]",
                        "value": address,
                        "reason": f"used by Service {taken[address]} in this cluster; the "
                        "cluster assigns a new one",
                    }
                )
    ports = spec.get("ports")
    if isinstance(ports, list) and not options.preserve_node_ports:
        for index, port in enumerate(ports):
            if isinstance(port, dict) and port.get("nodePort"):
                dropped.append(
                    {
                        "path": _item("spec.ports", ports, index) + ".nodePort",
                        "value": str(port.pop("nodePort")),
                        "reason": NODE_PORT_REASON,
                    }
                )
    health = captured.get("healthCheckNodePort")
    if health and options.preserve_node_ports:
        spec["healthCheckNodePort"] = health
    elif health:
        dropped.append(
            {"path": "spec.healthCheckNodePort", "value": str(health), "reason": NODE_PORT_REASON}
        )
    return dropped


def _reference_pattern(namespaces: Iterable[str]) -> re.Pattern[str]:
    """A mapped namespace as the namespace label of a Service DNS name: preceded by `NAME.`
    and followed by `.svc` (then the end, a dot, a port, a path...), so `NAME.OLD.svc` and
    `NAME.OLD.svc.cluster.local` match; `OLD` alone, `NAME.OLD`, `xOLD.svc` do not."""
    names = "|".join(re.escape(n) for n in sorted(namespaces, key=len, reverse=True))
    return re.compile(rf"(?<=[A-Za-z0-9_-]\.)(?P<ns>{names})(?=\.svc(?![A-Za-z0-9_-]))")


def namespace_references(
    obj: Obj, namespaces: dict[str, str], rewrite: bool
) -> tuple[Obj, list[Obj]]:
    """Every string of `obj` that names a mapped namespace (OLD -> NEW, OLD != NEW) in a Service
    DNS name: (the object, with those names rewritten to NEW when `rewrite`; the findings, one
    per field and namespace: {path, from, to, occurrences, rewritten}). A Secret's data and a
    ConfigMap's binaryData are read decoded (base64; text only) and written encoded again; the
    findings name the field, never its value."""
    moved = {old: new for old, new in namespaces.items() if old != new}
    if not moved:
        return obj, []
    pattern = _reference_pattern(moved)
    found: list[Obj] = []

    def text(value: str, path: str) -> str:
        counts: dict[str, int] = {}
        for match in pattern.finditer(value):
            counts[match.group("ns")] = counts.get(match.group("ns"), 0) + 1
        for old, occurrences in sorted(counts.items()):
            found.append(
                {
                    "path": path,
                    "from": old,
                    "to": moved[old],
                    "occurrences": occurrences,
                    "rewritten": rewrite,
                }
            )
        if rewrite and counts:
            return pattern.sub(lambda m: moved[m.group("ns")], value)
        return value

    def encoded(value: str, path: str) -> str:
        try:
            decoded = base64.b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, ValueError):  # not base64, or not text: nothing to read
            return value
        new = text(decoded, path)
        return value if new == decoded else base64.b64encode(new.encode()).decode()

    def walk(node: Any, path: str) -> Any:
        if isinstance(node, str):
            return text(node, path)
        if isinstance(node, dict):
            return {k: walk(v, _join(path, str(k))) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v, _item(path, node, i)) for i, v in enumerate(node)]
        return node

    kind = obj.get("kind")
    result: Obj = {}
    for key, value in obj.items():
        if isinstance(value, dict) and (
            (kind == "Secret" and key == "data") or (kind == "ConfigMap" and key == "binaryData")
        ):
            result[key] = {
                k: encoded(v, _join(key, str(k))) if isinstance(v, str) else v
                for k, v in value.items()
            }
        else:
            result[key] = walk(value, key)
    return (result if rewrite else obj), found


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
    dropped: list[Obj] = field(default_factory=list)  # service_addresses
    references: list[Obj] = field(default_factory=list)  # namespace_references
    transformed: list[str] = field(default_factory=list)  # the rules that changed it

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
    options: Options | None = None,
    transform: Transform | None = None,
) -> Plan:
    """What to restore, in order. `transform` (spec.transforms) applies last, to each object
    that would be created; it raises SpecError when a rule cannot apply."""
    options = options or Options()
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
        step = Step(obj, prepared, reason)
        if reason is None:
            step.dropped = service_addresses(obj, prepared, options)
            step.prepared, step.references = namespace_references(
                prepared, namespaces, options.rewrite_namespace_references
            )
            if transform is not None:
                step.prepared, step.transformed = transform(step.prepared, obj)
        plan.steps.append(step)
    if mode != "resources-only":
        for entry in manifest_volumes:
            pair = (entry.get("namespace", ""), entry.get("pvc", ""))
            if pair in selected_pvcs and filters.wants_volume(*pair):
                plan.volumes.append(entry)
    return plan


def _where(obj: Obj) -> Obj:
    meta = obj.get("metadata") or {}
    where = {"apiVersion": obj.get("apiVersion", ""), "kind": obj.get("kind", "")}
    if meta.get("namespace"):
        where["namespace"] = meta["namespace"]
    where["name"] = meta.get("name", "")
    return where


def fidelity_report(plan: Plan, limit: int = REPORT_LIMIT) -> Obj:
    """For a Restore's report, what the restore changes in the objects it makes beyond the
    mappings: `namespaceReferences` (namespace_references), `dropped` (service_addresses) and
    `transformed` (the transform rules that changed an object: {rule, apiVersion, kind,
    namespace, name}), each entry naming its object as restored; each list holds the first
    `limit` entries and `namespaceReferenceCount`, `droppedCount`, `transformedCount` say how
    many there are. Empty when none."""
    references: list[Obj] = []
    dropped: list[Obj] = []
    transformed: list[Obj] = []
    for step in plan.steps:
        if step.skip:
            continue
        where = _where(step.prepared)
        references += [dict(where, **r) for r in step.references]
        dropped += [dict(where, **d) for d in step.dropped]
        transformed += [dict(rule=rule, **where) for rule in step.transformed]
    report: Obj = {}
    if references:
        report["namespaceReferences"] = references[:limit]
        report["namespaceReferenceCount"] = len(references)
    if dropped:
        report["dropped"] = dropped[:limit]
        report["droppedCount"] = len(dropped)
    if transformed:
        report["transformed"] = transformed[:limit]
        report["transformedCount"] = len(transformed)
    return report
