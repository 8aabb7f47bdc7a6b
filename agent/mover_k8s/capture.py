"""What a Backup captures: every namespaced object in scope, of every kind the API serves (found
by discovery, so custom resources come along without being named), as it is live (status
included: the runtime state, not what git says), plus what the app needs at cluster scope.

Scope: `includedNamespaces` and/or a label selector; kinds in or out. Cluster-scoped
dependencies: the CRDs of the custom resources found, the namespaces themselves, the PVs bound
to the PVCs and the StorageClasses they name, the ClusterRoles named by the RoleBindings, and
the ClusterRoleBindings that grant to its captured ServiceAccounts (with their ClusterRoles).

The document also records where it was taken: `cluster` (the API server's URL, for people) and
`clusterId` (cluster_id(): what a restore compares to tell the same cluster from another).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from mover_k8s import api
from mover_k8s.errors import KubeError, NotFound, SpecError
from mover_k8s.k8s.client import Kube, Obj, ResourceType

# Never captured: events are a log, not state; the others are requests, not objects.
SKIPPED_KINDS = frozenset(
    {
        "Event",
        "Binding",
        "TokenRequest",
        "TokenReview",
        "SubjectAccessReview",
        "LocalSubjectAccessReview",
        "SelfSubjectAccessReview",
        "SelfSubjectRulesReview",
        "SelfSubjectReview",
    }
)
SKIPPED_GROUPS = frozenset({"metrics.k8s.io", "events.k8s.io"})


def selector_string(selector: Obj | None) -> str:
    """A LabelSelector (matchLabels, matchExpressions) as the API's query string."""
    if not selector:
        return ""
    terms = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        if op == "In":
            terms.append(f"{key} in ({','.join(values)})")
        elif op == "NotIn":
            terms.append(f"{key} notin ({','.join(values)})")
        elif op == "Exists":
            terms.append(str(key))
        elif op == "DoesNotExist":
            terms.append(f"!{key}")
        else:
            raise SpecError(
                "InvalidSelector",
                f"labelSelector operator {op!r} is not In, NotIn, Exists or DoesNotExist",
            )
    return ",".join(terms)


def kind_matches(rt: ResourceType, names: Iterable[str]) -> bool:
    """`names` hold Kind, Kind.group, plural or plural.group, in any case."""
    forms = {
        rt.kind.lower(),
        rt.group_kind.lower(),
        rt.plural.lower(),
        f"{rt.plural}.{rt.group}".lower() if rt.group else rt.plural.lower(),
    }
    return any(name.lower() in forms for name in names)


@dataclass(frozen=True)
class Scope:
    namespaces: tuple[str, ...] = ()
    selector: Obj | None = None
    included_kinds: tuple[str, ...] = ()
    excluded_kinds: tuple[str, ...] = ()
    cluster_resources: bool = True

    @classmethod
    def of(cls, spec: Obj) -> Scope:
        namespaces = tuple(spec.get("includedNamespaces") or ())
        selector = spec.get("labelSelector") or None
        if not namespaces and not selector:
            raise SpecError(
                "InvalidScope",
                "a Backup needs spec.includedNamespaces or spec.labelSelector (or both)",
            )
        return cls(
            namespaces=namespaces,
            selector=selector,
            included_kinds=tuple(spec.get("includedKinds") or ()),
            excluded_kinds=tuple(spec.get("excludedKinds") or ()),
            cluster_resources=spec.get("includeClusterResources", True) is not False,
        )

    def wants(self, rt: ResourceType) -> bool:
        if self.included_kinds and not kind_matches(rt, self.included_kinds):
            return False
        return not kind_matches(rt, self.excluded_kinds)


def cluster_id(kube: Kube) -> str:
    """Which cluster this is: the uid of its `kube-system` namespace, made once when the cluster
    was created and kept for its life (a URL is not an identity: every cluster is
    https://kubernetes.default.svc from inside). "" when there is none (not a real cluster) or
    reading it is forbidden."""
    try:
        namespace = kube.find(api.NAMESPACE, None, "kube-system")
    except KubeError as exc:
        if exc.status != 403:
            raise
        return ""
    return str(((namespace or {}).get("metadata") or {}).get("uid") or "")


@dataclass
class Capture:
    objects: list[Obj] = field(default_factory=list)
    namespaces: list[str] = field(default_factory=list)
    cluster_id: str = ""  # cluster_id() of the cluster captured

    def document(self, cluster: str, scope: Scope) -> Obj:
        return {
            "format": 1,
            "cluster": cluster,
            "clusterId": self.cluster_id,
            "scope": {
                "namespaces": list(scope.namespaces),
                "labelSelector": scope.selector,
                "includedKinds": list(scope.included_kinds),
                "excludedKinds": list(scope.excluded_kinds),
            },
            "namespaces": self.namespaces,
            "objects": self.objects,
        }


def _key(obj: Obj) -> tuple[str, str, str, str]:
    meta = obj.get("metadata") or {}
    return (
        obj.get("apiVersion", ""),
        obj.get("kind", ""),
        meta.get("namespace") or "",
        meta["name"],
    )


def check_namespaces(kube: Kube, namespaces: Iterable[str]) -> None:
    missing = [ns for ns in namespaces if kube.find(api.NAMESPACE, None, ns) is None]
    if missing:
        raise SpecError(
            "NamespaceNotFound",
            f"namespace(s) {', '.join(missing)} do not exist in this cluster; "
            "fix spec.includedNamespaces",
        )


def capture(kube: Kube, scope: Scope) -> Capture:
    check_namespaces(kube, scope.namespaces)
    selector = selector_string(scope.selector)
    types = kube.discover(refresh=True)
    namespaced = [
        rt
        for rt in types
        if rt.namespaced
        and "list" in rt.verbs
        and rt.kind not in SKIPPED_KINDS
        and rt.group not in SKIPPED_GROUPS
        and rt.group != api.GROUP  # mover's own work items are not the app
        and scope.wants(rt)
    ]
    found: dict[tuple[str, str, str, str], Obj] = {}
    for rt in namespaced:
        if scope.namespaces:
            for ns in scope.namespaces:
                for obj in kube.list(rt, ns, label_selector=selector or None):
                    found[_key(obj)] = obj
        else:
            for obj in kube.list(rt, None, label_selector=selector):
                found[_key(obj)] = obj
    result = Capture(cluster_id=cluster_id(kube))
    namespaces = set(scope.namespaces) | {
        o["metadata"]["namespace"] for o in found.values() if o["metadata"].get("namespace")
    }
    result.namespaces = sorted(namespaces)
    cluster: dict[tuple[str, str, str, str], Obj] = {}
    for ns in result.namespaces:
        namespace = kube.find(api.NAMESPACE, None, ns)
        if namespace is not None:
            namespace.setdefault("apiVersion", "v1")
            namespace.setdefault("kind", "Namespace")
            cluster[_key(namespace)] = namespace
    if scope.cluster_resources:
        for obj in dependencies(kube, list(found.values()), types):
            cluster[_key(obj)] = obj
    result.objects = sorted(cluster.values(), key=_key) + sorted(found.values(), key=_key)
    return result


def _get_typed(kube: Kube, rt: ResourceType, name: str) -> Obj | None:
    obj = kube.find(rt, None, name)
    if obj is not None:
        obj.setdefault("apiVersion", rt.api_version)
        obj.setdefault("kind", rt.kind)
    return obj


def dependencies(kube: Kube, objects: list[Obj], types: list[ResourceType]) -> list[Obj]:
    """The cluster-scoped objects that `objects` need to run elsewhere."""
    return [
        *_custom_resource_definitions(kube, objects),
        *_volumes_and_classes(kube, objects),
        *_cluster_rbac(kube, objects, types),
    ]


def _custom_resource_definitions(kube: Kube, objects: list[Obj]) -> list[Obj]:
    """The CRDs of the custom resources among `objects`."""
    builtin_groups = {"", "apps", "batch", "policy", "autoscaling", "networking.k8s.io"}
    groups_kinds = {
        (o.get("apiVersion", "").rpartition("/")[0], o.get("kind", ""))
        for o in objects
        if o.get("apiVersion", "").rpartition("/")[0] not in builtin_groups
    }
    if not groups_kinds:
        return []
    try:
        crds = kube.list(api.CRD)
    except NotFound:
        return []
    found = []
    for crd in crds:
        spec = crd.get("spec") or {}
        if (spec.get("group"), (spec.get("names") or {}).get("kind")) in groups_kinds:
            found.append(crd)
    return found


def _volumes_and_classes(kube: Kube, objects: list[Obj]) -> list[Obj]:
    """The PVs of the PVCs among `objects`, then the StorageClasses of both."""
    deps: list[Obj] = []
    classes: set[str] = set()
    for pvc in (o for o in objects if o.get("kind") == "PersistentVolumeClaim"):
        spec = pvc.get("spec") or {}
        if spec.get("storageClassName"):
            classes.add(spec["storageClassName"])
        if spec.get("volumeName"):
            pv = _get_typed(kube, api.PV, spec["volumeName"])
            if pv is not None:
                deps.append(pv)
                if (pv.get("spec") or {}).get("storageClassName"):
                    classes.add(pv["spec"]["storageClassName"])
    return deps + _existing(kube, api.STORAGE_CLASS, classes)


def _cluster_rbac(kube: Kube, objects: list[Obj], types: list[ResourceType]) -> list[Obj]:
    """The ClusterRoleBindings granting to the app's ServiceAccounts, then the ClusterRoles
    those and the app's RoleBindings name."""
    cluster_roles = {
        (rb.get("roleRef") or {}).get("name", "")
        for rb in objects
        if rb.get("kind") == "RoleBinding"
        and (rb.get("roleRef") or {}).get("kind") == "ClusterRole"
    }
    bindings = _bindings_to_accounts(kube, objects, types)
    for crb in bindings:
        ref = crb.get("roleRef") or {}
        if ref.get("kind") == "ClusterRole":
            cluster_roles.add(ref.get("name", ""))
    return bindings + _existing(kube, api.CLUSTER_ROLE, cluster_roles)


def _bindings_to_accounts(kube: Kube, objects: list[Obj], types: list[ResourceType]) -> list[Obj]:
    """The ClusterRoleBindings with a subject among the ServiceAccounts in `objects`."""
    accounts = {
        (o["metadata"].get("namespace"), o["metadata"]["name"])
        for o in objects
        if o.get("kind") == "ServiceAccount"
    }
    served = {(rt.group, rt.kind) for rt in types}
    if not accounts or (api.CLUSTER_ROLE_BINDING.group, "ClusterRoleBinding") not in served:
        return []
    return [
        crb
        for crb in kube.list(api.CLUSTER_ROLE_BINDING)
        if any(
            s.get("kind") == "ServiceAccount" and (s.get("namespace"), s.get("name")) in accounts
            for s in crb.get("subjects") or []
        )
    ]


def _existing(kube: Kube, rt: ResourceType, names: set[str]) -> list[Obj]:
    """The cluster-scoped objects of `rt` by these names that exist, by name."""
    found = (_get_typed(kube, rt, name) for name in sorted(names))
    return [obj for obj in found if obj is not None]


def owner_of(obj: Obj) -> dict[str, Any] | None:
    """The controller owner reference, if a controller manages this object."""
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller"):
            return dict(ref)
    return None
