"""A small evaluator of Kubernetes RBAC, for checking what rendered manifests grant, offline.

It decides a request as the API server's RBAC authorizer does (plugin/pkg/auth/authorizer/rbac):
a request is allowed when some binding whose subject is the requester points at a role with a
rule that covers it; nothing denies. Covered:

- ClusterRoleBindings (their ClusterRole applies in every namespace and at cluster scope) and
  RoleBindings (their Role, or ClusterRole, applies only to requests in the binding's
  namespace: a list across all namespaces is not one);
- subjects: ServiceAccounts, and the User name (`system:serviceaccount:NS:NAME`) and Groups
  (`system:serviceaccounts`, `system:serviceaccounts:NS`, `system:authenticated`) a
  ServiceAccount's token carries;
- rules: verbs, apiGroups, resources with subresources (`pods/exec`, `*`, `*/status`; not
  `pods/*`, which RBAC reads as a literal name), resourceNames (which never match a create or
  a list: their request names no object), `*` in each, and nonResourceURLs (`/healthz`,
  `/apis/*`) for non-resource requests;
- aggregated ClusterRoles (aggregationRule: matchLabels and matchExpressions), whose rules are
  those of every ClusterRole its selectors match, as the controller-manager fills them in.

Not modelled: the escalation checks on creating roles and bindings (a request for `escalate`
or `bind` is just a request here), and authorizers other than RBAC (the built-in
`system:discovery` and `system:basic-user` bindings are not in a chart's output: add them to
`objects` to count them).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

Obj = dict[str, Any]

RBAC_KINDS = ("Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding")


@dataclass(frozen=True)
class Account:
    """A ServiceAccount as the API server sees its requests."""

    namespace: str
    name: str

    @property
    def user(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.name}"

    @property
    def groups(self) -> tuple[str, ...]:
        return (
            "system:serviceaccounts",
            f"system:serviceaccounts:{self.namespace}",
            "system:authenticated",
        )


@dataclass(frozen=True)
class Request:
    """One API request. `resource` is the plural, with its subresource if any (`pods/exec`);
    `namespace` None is a cluster-scoped request or one across every namespace; `path` makes it
    a non-resource request (then only `verb` counts besides it)."""

    verb: str
    resource: str = ""
    group: str = ""
    namespace: str | None = None
    name: str | None = None
    path: str | None = None

    def __str__(self) -> str:
        if self.path is not None:
            return f"{self.verb} {self.path}"
        what = f"{self.resource}.{self.group}" if self.group else self.resource
        where = f" in {self.namespace}" if self.namespace else " (cluster-wide)"
        named = f" {self.name}" if self.name else ""
        return f"{self.verb} {what}{named}{where}"


def _selector_matches(selector: Obj, labels: dict[str, str]) -> bool:
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def _resource_matches(rule_resources: list[str], resource: str) -> bool:
    _, _, sub = resource.partition("/")
    for granted in rule_resources:
        if granted in ("*", resource):
            return True
        if sub and granted == f"*/{sub}":  # `pods/*` is no wildcard to RBAC: only `*/sub`
            return True
    return False


def _url_matches(rule_urls: list[str], path: str) -> bool:
    for granted in rule_urls:
        if granted in ("*", path):
            return True
        if granted.endswith("*") and path.startswith(granted[:-1]):
            return True
    return False


def rule_allows(rule: Obj, request: Request) -> bool:
    verbs = rule.get("verbs") or []
    if "*" not in verbs and request.verb not in verbs:
        return False
    if request.path is not None:
        return _url_matches(rule.get("nonResourceURLs") or [], request.path)
    groups = rule.get("apiGroups") or []
    if "*" not in groups and request.group not in groups:
        return False
    if not _resource_matches(rule.get("resources") or [], request.resource):
        return False
    names = rule.get("resourceNames") or []
    return not names or (request.name is not None and request.name in names)


class Authorizer:
    """The RBAC objects among `objects`, ready to decide requests."""

    def __init__(self, objects: Iterable[Obj]) -> None:
        rbac = [
            o
            for o in objects
            if o.get("kind") in RBAC_KINDS
            and str(o.get("apiVersion", "")).startswith("rbac.authorization.k8s.io/")
        ]
        self.cluster_roles = {o["metadata"]["name"]: o for o in rbac if o["kind"] == "ClusterRole"}
        self.roles = {
            (o["metadata"].get("namespace", ""), o["metadata"]["name"]): o
            for o in rbac
            if o["kind"] == "Role"
        }
        self.bindings = [o for o in rbac if o["kind"] in ("RoleBinding", "ClusterRoleBinding")]

    def cluster_role_rules(self, name: str) -> list[Obj]:
        role = self.cluster_roles.get(name)
        if role is None:
            return []
        aggregation = role.get("aggregationRule")
        if not aggregation:
            return list(role.get("rules") or [])
        rules: list[Obj] = []
        for other in self.cluster_roles.values():
            if other is role:
                continue
            labels = (other.get("metadata") or {}).get("labels") or {}
            if any(
                _selector_matches(s, labels) for s in aggregation.get("clusterRoleSelectors") or []
            ):
                rules += other.get("rules") or []
        return rules

    @staticmethod
    def _is_subject(binding: Obj, account: Account) -> bool:
        binding_ns = binding["metadata"].get("namespace", "")
        for subject in binding.get("subjects") or []:
            kind, name = subject.get("kind"), subject.get("name")
            if kind == "ServiceAccount":
                # A RoleBinding's ServiceAccount subject without a namespace is in its own.
                namespace = subject.get("namespace") or binding_ns
                if (namespace, name) == (account.namespace, account.name):
                    return True
            elif (kind, name) == ("User", account.user) or (
                kind == "Group" and name in account.groups
            ):
                return True
        return False

    def _rules_of(self, binding: Obj) -> list[Obj]:
        ref = binding.get("roleRef") or {}
        if ref.get("kind") == "ClusterRole":
            return self.cluster_role_rules(ref.get("name", ""))
        if ref.get("kind") == "Role" and binding["kind"] == "RoleBinding":
            role = self.roles.get((binding["metadata"].get("namespace", ""), ref.get("name", "")))
            return list((role or {}).get("rules") or [])
        return []

    def why(self, account: Account, request: Request) -> str | None:
        """The binding and role that allow `request` ("KIND/NAME -> KIND/NAME"), or None."""
        for binding in self.bindings:
            if not self._is_subject(binding, account):
                continue
            # A RoleBinding: only requests in its namespace, never a non-resource one.
            namespace = binding["metadata"].get("namespace")
            if binding["kind"] == "RoleBinding" and (
                request.path is not None or request.namespace != namespace
            ):
                continue
            for rule in self._rules_of(binding):
                if rule_allows(rule, request):
                    ref = binding["roleRef"]
                    meta = binding["metadata"]
                    where = f"{meta['namespace']}/" if meta.get("namespace") else ""
                    return f"{binding['kind']}/{where}{meta['name']} -> {ref['kind']}/{ref['name']}"
        return None

    def allows(self, account: Account, request: Request) -> bool:
        return self.why(account, request) is not None

    def rules_for(self, account: Account) -> list[tuple[Obj, Obj]]:
        """(binding, rule) for every rule bound to `account`."""
        return [
            (binding, rule)
            for binding in self.bindings
            if self._is_subject(binding, account)
            for rule in self._rules_of(binding)
        ]
