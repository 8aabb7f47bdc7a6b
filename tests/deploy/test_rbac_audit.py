"""RBAC and Pod Security audit of the chart (agent/chart), request by request.

The chart is rendered with its default values, with each opt-in of values.yaml alone, and with
every opt-in at once, by the pinned helm (tests/deploy/helm.py: $MOVER_HELM or on PATH; without
it these tests skip, or fail under CI=true). Then a table of API requests, each with whether
the controller's or the node agent's ServiceAccount must be allowed it or must be denied it, is
decided by the RBAC evaluator in tests/deploy/kube_rbac.py. The emulator of tests/k8s does not
enforce RBAC: this is what proves the grants, and docs/security.md is the table in words.

Pod Security: the controller's pod passes `restricted`; the node agent's passes what
docs/security.md says for each setting, and the Namespace the chart makes says that level.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import pytest

from tests.deploy import pod_security
from tests.deploy.helm import render
from tests.deploy.kube_rbac import Account, Authorizer, Request
from tests.deploy.kube_schema import ROOT, validate_all
from tests.deploy.test_chart import EVERY_OPT_IN

NAMESPACE = "mover-system"  # the release namespace of every render here
CONTROLLER = Account(NAMESPACE, "mover-controller")
NODE = Account(NAMESPACE, "mover-node")
UI = Account(NAMESPACE, "mover-ui")
APP = "shop"  # an app's namespace (the one rbac.namespaces lists, where it is set)

Obj = dict[str, Any]

VALUES: dict[str, str | None] = {
    "defaults": None,
    "namespace": "namespace: {create: true}",
    "host-paths": "node: {hostPaths: [{name: disks, path: /mnt/disks, readOnly: false}]}",
    "no-block-access": "node: {blockAccess: false}",
    "no-block-access-host-paths": (
        "node: {blockAccess: false, hostPaths: [{name: d, path: /mnt/d, readOnly: true}]}"
    ),
    "no-block-access-namespace": "namespace: {create: true}\nnode: {blockAccess: false}",
    "namespaces": "rbac: {namespaces: [shop]}",
    "cluster-scoped": "restore: {clusterScoped: true}",
    "hooks": "hooks: {enabled: true}",
    "cbt": "changedBlockTracking: {enabled: true}",
    "every-opt-in": EVERY_OPT_IN,  # rbac.namespaces: [shop, billing]
    "ui": "ui: {enabled: true}",
    "ui-aggregated": "ui: {enabled: true, aggregateToBuiltInRoles: true}",
}


def rendered(values: str) -> list[Obj]:
    """The chart's objects (no CRDs) for one of VALUES, released as `mover` in mover-system."""
    return render(VALUES[values], NAMESPACE, "mover")


@functools.cache
def authorizer(values: str) -> Authorizer:
    return Authorizer(rendered(values))


def R(verb: str, resource: str, group: str = "", ns: str | None = None, name: str | None = None):
    return Request(verb, resource, group, ns, name)


S = NAMESPACE
K = "kube-system"
RBAC = "rbac.authorization.k8s.io"
SNAP = "snapshot.storage.k8s.io"
MOVER = "mover.dev"
EVERY = tuple(VALUES)
NARROWED = ("namespaces", "every-opt-in")  # rbac.namespaces set
BLOCK = tuple(v for v in EVERY if not v.startswith("no-block-access"))

# What the code asks for (agent/mover_k8s: capture, volumes, the reconcilers, repos, leader,
# agents, the node agent and its exposers), in the release namespace and an app's namespace:
# allowed with every setting (the snapshot exposer's only with node.blockAccess).
CONTROLLER_NEEDS = [
    R("list", "backups", MOVER),  # every namespace (no --watch-namespace)
    R("watch", "restores", MOVER),
    R("patch", "backups/status", MOVER, S, "nightly"),
    R("patch", "restores/status", MOVER, S, "back"),
    R("patch", "schedules/status", MOVER, S, "daily"),
    R("patch", "repositories/status", MOVER, S, "default"),
    R("create", "backups", MOVER, S),
    R("create", "volumebackups", MOVER, S),
    R("create", "volumerestores", MOVER, S),
    R("patch", "volumerestores", MOVER, S, "x"),
    R("delete", "volumebackups", MOVER, S, "x"),
    R("delete", "backups", MOVER, S, "expired"),
    R("get", "secrets", "", S, "mover-repository-password"),  # the Repository's Secrets
    R("get", "leases", "coordination.k8s.io", S, "mover-controller"),
    R("create", "leases", "coordination.k8s.io", S),
    R("update", "leases", "coordination.k8s.io", S, "mover-controller"),
    R("list", "leases", "coordination.k8s.io", S),  # the agents'
    R("get", "namespaces", "", None, "kube-system"),  # the cluster's id
    R("get", "namespaces", "", None, APP),
    R("list", "customresourcedefinitions", "apiextensions.k8s.io"),
    R("get", "persistentvolumes", "", None, "pv-1"),
    R("get", "storageclasses", "storage.k8s.io", None, "fast"),
    R("list", "volumesnapshotclasses", SNAP),
    R("list", "clusterrolebindings", RBAC),
    R("get", "clusterroles", RBAC, None, "view"),
    R("list", "services"),  # every namespace: cluster IPs in use
    R("list", "secrets", "", APP),  # capture: every kind of the app's namespace
    R("list", "configmaps", "", APP),
    R("list", "deployments", "apps", APP),
    R("list", "widgets", "example.com", APP),  # custom resources, found by discovery
    R("get", "persistentvolumeclaims", "", APP, "data"),
    R("get", "volumesnapshots", SNAP, APP, "snap"),
    R("create", "volumesnapshots", SNAP, APP),
    R("delete", "volumesnapshots", SNAP, APP, "snap"),
    R("create", "configmaps", "", APP),  # restoring
    R("create", "secrets", "", APP),
    R("update", "deployments", "apps", APP, "shop"),
    R("create", "persistentvolumeclaims", "", APP),
    R("create", "namespaces"),
    R("get", "deployments", "apps", APP, "shop"),  # replaced (existingResourcePolicy: update)
    R("get", "services", "", APP, "shop"),  # its external names, once restored
    R("get", "secrets", "", APP, "db"),
]
NODE_NEEDS = [
    R("list", "volumebackups", MOVER),
    R("watch", "volumerestores", MOVER),
    R("get", "volumebackups", MOVER, S, "x"),
    R("patch", "volumebackups/status", MOVER, S, "x"),
    R("update", "volumerestores/status", MOVER, S, "x"),
    R("get", "repositories", MOVER, S, "default"),
    R("get", "secrets", "", S, "mover-repository-password"),
    R("get", "leases", "coordination.k8s.io", S, "mover-agent-node-a"),
    R("create", "leases", "coordination.k8s.io", S),
    R("patch", "leases", "coordination.k8s.io", S, "mover-agent-node-a"),
    R("delete", "leases", "coordination.k8s.io", S, "mover-agent-node-a"),
    R("get", "persistentvolumeclaims", "", APP, "data"),
    R("get", "persistentvolumes", "", None, "pv-1"),
]
# `mover ui` (agent/mover_k8s/ui: access, views) with its ServiceAccount; what it does for a
# user goes with the user's token, not this one.
UI_NEEDS = [
    R("create", "tokenreviews", "authentication.k8s.io"),
    R("create", "subjectaccessreviews", "authorization.k8s.io"),
    R("list", "namespaces"),
    R("get", "namespaces", "", None, APP),
    R("list", "backups", MOVER, S),
    R("get", "backups", MOVER, S, "nightly"),
    R("list", "restores", MOVER, S),
    R("get", "restores", MOVER, S, "back"),
    R("list", "schedules", MOVER, S),
    R("list", "repositories", MOVER, S),
    R("list", "volumebackups", MOVER, S),
    R("list", "volumerestores", MOVER, S),
    R("list", "leases", "coordination.k8s.io", S),
]
SNAPSHOT_EXPOSER_NEEDS = [
    R("get", "volumesnapshots", SNAP, APP, "snap"),
    R("get", "volumesnapshotcontents", SNAP, None, "snapcontent-1"),
    R("create", "volumesnapshotcontents", SNAP),
    R("delete", "volumesnapshotcontents", SNAP, None, "mover-vb-1"),
    R("create", "volumesnapshots", SNAP, S),
    R("get", "volumesnapshots", SNAP, S, "mover-vb-1"),
    R("delete", "volumesnapshots", SNAP, S, "mover-vb-1"),
    R("create", "persistentvolumeclaims", "", S),
    R("get", "persistentvolumeclaims", "", S, "mover-vb-1"),
    R("delete", "persistentvolumeclaims", "", S, "mover-vb-1"),
    R("create", "pods", "", S),
    R("get", "pods", "", S, "mover-vb-1"),
    R("delete", "pods", "", S, "mover-vb-1"),
    R("create", "persistentvolumes"),
    R("delete", "persistentvolumes", "", None, "mover-vr-1"),
]

WIDE = tuple(v for v in EVERY if v not in NARROWED)  # every namespace
CLUSTER_SCOPED = ("cluster-scoped", "every-opt-in")
NOT_CLUSTER_SCOPED = tuple(v for v in EVERY if v not in CLUSTER_SCOPED)
HOOKS = ("hooks", "every-opt-in")
NO_HOOKS = tuple(v for v in EVERY if v not in HOOKS)
NO_BLOCK = tuple(v for v in EVERY if v not in BLOCK)
CBT = ("cbt", "every-opt-in")
NO_CBT = tuple(v for v in EVERY if v not in CBT)
# Changed block tracking (changedBlockTracking.enabled): the controller keeps and names bases,
# the node agent asks the driver's SnapshotMetadata service with a token of its own account.
CBT_CONTROLLER_NEEDS = [
    R("get", "snapshotmetadataservices", "cbt.storage.k8s.io", None, "csi.example.com"),
    R("get", "volumesnapshotcontents", SNAP, None, "snapcontent-1"),
    R("list", "volumesnapshots", SNAP, APP),
    R("patch", "volumesnapshots", SNAP, APP, "snap"),
]
CBT_NODE_NEEDS = [
    R("get", "snapshotmetadataservices", "cbt.storage.k8s.io", None, "csi.example.com"),
    R("create", "serviceaccounts/token", "", S, "mover-node"),
]
UI_ON = ("ui", "ui-aggregated")
UI_OFF = tuple(v for v in EVERY if v not in UI_ON)


@dataclass(frozen=True)
class Row:
    values: tuple[str, ...]  # the value sets it holds for
    account: Account
    request: Request
    allowed: bool
    why: str


def _rows() -> list[Row]:
    c, n = CONTROLLER, NODE
    rows = [
        # -- the controller: reading --
        Row(EVERY, c, R("get", "secrets", "", APP, "db"), True, "capture reads the app's Secrets"),
        Row(EVERY, c, R("list", "widgets", "example.com", APP), True, "and its custom resources"),
        Row(WIDE, c, R("list", "secrets"), True, "every namespace: a Backup may name any"),
        Row(WIDE, c, R("get", "secrets", "", K, "x"), True, "kube-system too, unless narrowed"),
        Row(NARROWED, c, R("list", "secrets"), False, "rbac.namespaces: not across namespaces"),
        Row(NARROWED, c, R("get", "secrets", "", K, "x"), False, "rbac.namespaces: not listed"),
        Row(NARROWED, c, R("list", "configmaps", "", "other"), False, "rbac.namespaces"),
        Row(EVERY, c, R("list", "services"), True, "cluster IPs in use (restore)"),
        *[
            Row(EVERY, c, request, False, "the read of every kind is list, never get on `*`")
            for request in (
                R("get", "pods/attach", "", APP, "p"),
                R("get", "pods/portforward", "", APP, "p"),
                R("get", "pods/proxy", "", APP, "p"),
                R("get", "pods/log", "", APP, "p"),
                R("get", "services/proxy", "", APP, "s"),
                R("get", "nodes/proxy", "", None, "node-a"),
                R("get", "widgets", "example.com", APP, "w"),
                R("watch", "secrets", "", APP),
            )
        ],
        # -- the controller: what it restores --
        Row(EVERY, c, R("create", "deployments", "apps", APP), True, "restore.rules"),
        Row(WIDE, c, R("create", "configmaps", "", K), True, "every namespace, unless narrowed"),
        Row(NARROWED, c, R("create", "configmaps", "", K), False, "rbac.namespaces"),
        Row(NARROWED, c, R("create", "volumesnapshots", SNAP, K), False, "rbac.namespaces"),
        Row(EVERY, c, R("create", "namespaces"), True, "restore.createNamespaces"),
        Row(EVERY, c, R("delete", "configmaps", "", APP, "x"), False, "a restore deletes nothing"),
        Row(EVERY, c, R("delete", "deployments", "apps", APP, "x"), False, "nor this"),
        Row(EVERY, c, R("deletecollection", "secrets", "", APP), False, "nor this"),
        Row(EVERY, c, R("delete", "namespaces", "", None, APP), False, "nor this"),
        Row(EVERY, c, R("delete", "persistentvolumes", "", None, "pv"), False, "nor this"),
        Row(EVERY, c, R("patch", "deployments", "apps", APP, "x"), False, "create, update only"),
        Row(EVERY, c, R("update", "nodes", "", None, "n"), False, "not a restored kind"),
        Row(
            EVERY,
            c,
            R("create", "mutatingwebhookconfigurations", "admissionregistration.k8s.io"),
            False,
            "not a restored kind",
        ),
        Row(
            EVERY,
            c,
            R("update", "certificatesigningrequests/approval", "certificates.k8s.io", None, "csr"),
            False,
            "not a restored kind",
        ),
        Row(
            EVERY,
            c,
            R("create", "serviceaccounts/token", "", K, "default"),
            False,
            "no token for any ServiceAccount",
        ),
        Row(EVERY, c, R("create", "pods/attach", "", APP, "p"), False, "no attach"),
        Row(EVERY, c, R("create", "pods/portforward", "", APP, "p"), False, "no port-forward"),
        Row(EVERY, c, R("create", "leases", "coordination.k8s.io", K), False, "its own only"),
        # -- the controller: RBAC, CRDs, cluster-scoped kinds: restore.clusterScoped --
        *[
            Row(values, c, request, values == CLUSTER_SCOPED, "restore.clusterScoped (opt-in)")
            for values in (NOT_CLUSTER_SCOPED, CLUSTER_SCOPED)
            for request in (
                R("create", "clusterrolebindings", RBAC),
                R("create", "clusterroles", RBAC),
                R("create", "rolebindings", RBAC, APP),
                R("create", "roles", RBAC, APP),
                R("escalate", "clusterroles", RBAC, None, "admin"),
                R("bind", "clusterroles", RBAC, None, "cluster-admin"),
                R("bind", "roles", RBAC, APP, "x"),
                R("create", "customresourcedefinitions", "apiextensions.k8s.io"),
                R("create", "storageclasses", "storage.k8s.io"),
                R("update", "namespaces", "", None, K),
            )
        ],
        Row(EVERY, c, R("delete", "clusterrolebindings", RBAC, None, "x"), False, "never delete"),
        Row(EVERY, c, R("impersonate", "users"), False, "no impersonation"),
        Row(EVERY, c, R("impersonate", "serviceaccounts", "", K, "x"), False, "no impersonation"),
        Row(EVERY, c, R("impersonate", "groups", "", None, "system:masters"), False, "none"),
        # -- the controller: hooks --
        Row(NO_HOOKS, c, R("create", "pods/exec", "", APP, "db-0"), False, "hooks.enabled only"),
        Row(NO_HOOKS, c, R("get", "pods/exec", "", APP, "db-0"), False, "hooks.enabled only"),
        Row(HOOKS, c, R("create", "pods/exec", "", APP, "db-0"), True, "hooks.enabled"),
        Row(HOOKS, c, R("get", "pods/exec", "", APP, "db-0"), True, "websocket exec before 1.30"),
        Row(("hooks",), c, R("create", "pods/exec", "", K, "x"), True, "every namespace"),
        Row(("every-opt-in",), c, R("create", "pods/exec", "", K, "x"), False, "rbac.namespaces"),
        # -- the node agent --
        Row(EVERY, n, R("create", "pods", "", K), False, "holder pods in mover's namespace only"),
        Row(EVERY, n, R("create", "pods", "", APP), False, "holder pods in mover's namespace only"),
        Row(EVERY, n, R("create", "persistentvolumeclaims", "", APP), False, "its own, in S"),
        Row(EVERY, n, R("create", "volumesnapshots", SNAP, APP), False, "its copy, in S"),
        Row(EVERY, n, R("delete", "volumesnapshots", SNAP, APP, "s"), False, "the controller's"),
        Row(BLOCK, n, R("create", "pods", "", S), True, "the holder pod"),
        Row(NO_BLOCK, n, R("create", "pods", "", S), False, "no snapshot exposer"),
        Row(NO_BLOCK, n, R("create", "volumesnapshotcontents", SNAP), False, "no exposer"),
        Row(NO_BLOCK, n, R("create", "persistentvolumes"), False, "no snapshot exposer"),
        Row(NO_BLOCK, n, R("get", "volumesnapshots", SNAP, APP, "s"), False, "none"),
        Row(EVERY, n, R("get", "secrets", "", APP, "db"), False, "only the release namespace's"),
        Row(EVERY, n, R("get", "secrets", "", K, "x"), False, "only the release namespace's"),
        Row(EVERY, n, R("list", "secrets", "", S), False, "get by name only"),
        Row(EVERY, n, R("watch", "secrets", "", S), False, "get by name only"),
        Row(EVERY, n, R("update", "volumebackups", MOVER, S, "x"), False, "their status only"),
        Row(EVERY, n, R("delete", "volumebackups", MOVER, S, "x"), False, "their status only"),
        Row(EVERY, n, R("create", "volumerestores", MOVER, S), False, "the controller's"),
        Row(EVERY, n, R("update", "pods", "", APP, "p"), False, "create and delete only"),
        Row(EVERY, n, R("create", "pods/exec", "", APP, "p"), False, "no exec"),
        Row(EVERY, n, R("create", "serviceaccounts/token", "", APP, "default"), False, "none"),
        Row(EVERY, n, R("patch", "persistentvolumes", "", None, "pv"), False, "create, delete"),
        Row(EVERY, n, R("list", "pods"), False, "lists only its work items"),
        Row(EVERY, n, R("list", "persistentvolumeclaims", "", APP), False, "gets by name"),
        Row(EVERY, n, R("create", "deployments", "apps", APP), False, "no workloads"),
        Row(EVERY, n, R("create", "leases", "coordination.k8s.io", K), False, "its own only"),
        Row(EVERY, n, R("create", "rolebindings", RBAC, S), False, "no RBAC"),
        Row(EVERY, n, R("impersonate", "serviceaccounts", "", K, "x"), False, "none"),
        Row(EVERY, n, R("get", "nodes", "", None, "node-a"), False, "nothing else"),
        # -- changed block tracking: changedBlockTracking.enabled --
        *[
            Row(NO_CBT, account, request, False, "changedBlockTracking.enabled only")
            for account, request in [
                (c, CBT_CONTROLLER_NEEDS[0]),
                (c, CBT_CONTROLLER_NEEDS[3]),
                (n, CBT_NODE_NEEDS[0]),
                (n, CBT_NODE_NEEDS[1]),
            ]
        ],
        Row(CBT, n, R("create", "serviceaccounts/token", "", S, "default"), False, "its own"),
        Row(CBT, n, R("create", "serviceaccounts/token", "", S, "mover-controller"), False, "own"),
        Row(CBT, n, R("patch", "volumesnapshots", SNAP, APP, "s"), False, "the controller's"),
        Row(CBT, c, R("delete", "volumesnapshotcontents", SNAP, None, "x"), False, "read only"),
        # -- the dashboard (ui.enabled): reviews and reading mover's objects, nothing else --
        *[
            Row(UI_OFF, UI, request, False, "ui.enabled only")
            for request in (
                R("create", "tokenreviews", "authentication.k8s.io"),
                R("create", "subjectaccessreviews", "authorization.k8s.io"),
                R("list", "backups", MOVER, S),
            )
        ],
        *[
            Row(UI_ON, UI, request, False, why)
            for request, why in (
                (R("get", "secrets", "", S, "mover-repository-password"), "the user's token"),
                (R("list", "secrets", "", S), "no Secret"),
                (R("get", "secrets", "", APP, "db"), "no Secret"),
                (R("create", "backups", MOVER, S), "writes go with the user's token"),
                (R("create", "restores", MOVER, S), "writes go with the user's token"),
                (R("patch", "backups", MOVER, S, "x"), "read-only"),
                (R("delete", "backups", MOVER, S, "x"), "read-only"),
                (R("list", "backups", MOVER, APP), "the release namespace's only"),
                (R("get", "pods", "", APP, "p"), "the apps' objects: the user's token"),
                (R("list", "configmaps", "", APP), "the apps' objects: the user's token"),
                (R("update", "namespaces", "", None, APP), "read-only"),
                (R("impersonate", "users"), "never acts as the user"),
                (R("impersonate", "groups", "", None, "system:masters"), "never"),
                (R("create", "serviceaccounts/token", "", S, "mover-controller"), "none"),
                (R("create", "localsubjectaccessreviews", "authorization.k8s.io", APP), "none"),
                (R("get", "leases", "coordination.k8s.io", S, "mover-controller"), "list only"),
            )
        ],
    ]
    return rows


TABLE = _rows()


def _cases() -> list[Any]:
    return [
        pytest.param(values, row, id=f"{values}-{row.account.name}-{row.request}".replace(" ", "_"))
        for row in TABLE
        for values in row.values
    ]


@pytest.mark.parametrize(("values", "row"), _cases())
def test_the_audit_table(values: str, row: Row) -> None:
    why = authorizer(values).why(row.account, row.request)
    verdict = "allowed" if row.allowed else "denied"
    assert (why is not None) == row.allowed, (
        f"{values}: {row.account.name} must be {verdict} to {row.request} ({row.why}); "
        f"granted by {why}"
    )


@pytest.mark.parametrize("values", EVERY)
def test_every_request_the_code_makes_is_allowed(values: str) -> None:
    auth = authorizer(values)
    needs = [(CONTROLLER, r) for r in CONTROLLER_NEEDS] + [(NODE, r) for r in NODE_NEEDS]
    if values in BLOCK:
        needs += [(NODE, r) for r in SNAPSHOT_EXPOSER_NEEDS]
    if values in CBT:
        needs += [(CONTROLLER, r) for r in CBT_CONTROLLER_NEEDS]
        needs += [(NODE, r) for r in CBT_NODE_NEEDS]
    if values in UI_ON:
        needs += [(UI, r) for r in UI_NEEDS]
    refused = [f"{a.name}: {r}" for a, r in needs if not auth.allows(a, r)]
    assert refused == []


@pytest.mark.parametrize("values", EVERY)
def test_no_broad_grant_outside_its_opt_in(values: str) -> None:
    """No `*` verb; `*` resources or groups only to read; no impersonate; escalate and bind
    only with restore.clusterScoped; no aggregated role (the evaluator handles them, the
    chart uses none); the node agent has no `*` at all."""
    objects = rendered(values)
    assert validate_all(objects) == []
    auth = Authorizer(objects)
    for account in (CONTROLLER, NODE, *((UI,) if values in UI_ON else ())):
        rules = auth.rules_for(account)
        assert rules, account
        for _, rule in rules:
            verbs = set(rule["verbs"])
            assert "*" not in verbs and "impersonate" not in verbs, rule
            if "*" in rule["resources"] or "*" in rule["apiGroups"]:
                assert account == CONTROLLER and verbs <= {"get", "list", "watch"}, rule
            assert not verbs & {"escalate", "bind"} or values in CLUSTER_SCOPED, rule
            if account == UI:  # reviews to create; the rest read
                assert "*" not in rule["resources"] + rule["apiGroups"], rule
                assert verbs <= {"get", "list"} or (
                    verbs == {"create"}
                    and rule["resources"] in (["tokenreviews"], ["subjectaccessreviews"])
                ), rule
    assert not [o for o in objects if o.get("aggregationRule")]
    if values not in UI_ON:
        assert not auth.rules_for(UI)


# -- the RBAC evaluator can tell: each feature allows and denies ----------------------------


def _role(kind: str, name: str, rules: list[Obj], ns: str = "", **extra: Any) -> Obj:
    meta: Obj = {"name": name, **({"namespace": ns} if ns else {}), **extra.pop("meta", {})}
    return {"apiVersion": f"{RBAC}/v1", "kind": kind, "metadata": meta, "rules": rules, **extra}


def _binding(
    kind: str, name: str, ref_kind: str, ref: str, subjects: list[Obj], ns: str = ""
) -> Obj:
    meta: Obj = {"name": name, **({"namespace": ns} if ns else {})}
    return {
        "apiVersion": f"{RBAC}/v1",
        "kind": kind,
        "metadata": meta,
        "roleRef": {"apiGroup": RBAC, "kind": ref_kind, "name": ref},
        "subjects": subjects,
    }


def test_the_evaluator_decides_as_rbac_does() -> None:
    sa = {"kind": "ServiceAccount", "name": "a", "namespace": "ns"}
    me = Account("ns", "a")
    objects = [
        _role("ClusterRole", "wild", [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["get"]}]),
        _role(
            "ClusterRole",
            "status",
            [{"apiGroups": [""], "resources": ["*/status"], "verbs": ["patch"]}],
        ),
        _role(
            "ClusterRole",
            "star-sub",
            [{"apiGroups": [""], "resources": ["pods/*"], "verbs": ["create"]}],
        ),
        _role(
            "Role",
            "named",
            [
                {
                    "apiGroups": [""],
                    "resources": ["configmaps"],
                    "resourceNames": ["one"],
                    "verbs": ["update", "create"],
                }
            ],
            ns="app",
        ),
        _role(
            "ClusterRole", "urls", [{"nonResourceURLs": ["/metrics", "/debug/*"], "verbs": ["get"]}]
        ),
        _role(
            "ClusterRole",
            "agg",
            [],
            aggregationRule={"clusterRoleSelectors": [{"matchLabels": {"x": "1"}}]},
        ),
        _role(
            "ClusterRole",
            "piece",
            [{"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["delete"]}],
            meta={"labels": {"x": "1"}},
        ),
        _role(
            "ClusterRole",
            "in-ns",
            [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["list"]}],
        ),
        _role(
            "ClusterRole",
            "by-group",
            [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["list"]}],
        ),
        _binding("ClusterRoleBinding", "w", "ClusterRole", "wild", [sa]),
        _binding("ClusterRoleBinding", "s", "ClusterRole", "status", [sa]),
        _binding("ClusterRoleBinding", "p", "ClusterRole", "star-sub", [sa]),
        _binding(
            "RoleBinding",
            "n",
            "Role",
            "named",
            [{"kind": "ServiceAccount", "name": "a", "namespace": "ns"}],
            ns="app",
        ),
        _binding(
            "ClusterRoleBinding",
            "u",
            "ClusterRole",
            "urls",
            [{"kind": "User", "name": "system:serviceaccount:ns:a"}],
        ),
        _binding("ClusterRoleBinding", "g", "ClusterRole", "agg", [sa]),
        _binding("RoleBinding", "i", "ClusterRole", "in-ns", [sa], ns="app"),
        _binding(
            "ClusterRoleBinding",
            "grp",
            "ClusterRole",
            "by-group",
            [{"kind": "Group", "name": "system:serviceaccounts:ns"}],
        ),
        _binding(
            "ClusterRoleBinding",
            "other",
            "ClusterRole",
            "wild",
            [{"kind": "ServiceAccount", "name": "a", "namespace": "elsewhere"}],
        ),
    ]
    auth = Authorizer(objects)
    cases = [
        (R("get", "secrets", "", "any", "x"), True),  # `*`
        (R("get", "pods/log", "", "any", "x"), True),  # `*` covers subresources
        (R("list", "secrets", "", "any"), False),  # verbs
        (R("patch", "pods/status", "", "x", "p"), True),  # */status
        (R("patch", "pods", "", "x", "p"), False),
        (R("create", "pods/exec", "", "x", "p"), False),  # pods/* is no wildcard
        (R("update", "configmaps", "", "app", "one"), True),  # resourceNames
        (R("update", "configmaps", "", "app", "two"), False),
        (R("create", "configmaps", "", "app"), False),  # a create names nothing
        (R("update", "configmaps", "", "other", "one"), False),  # RoleBinding: its namespace
        (Request("get", path="/metrics"), True),  # nonResourceURLs, User subject
        (Request("get", path="/debug/pprof"), True),
        (Request("get", path="/healthz"), False),
        (R("delete", "deployments", "apps", "x", "d"), True),  # aggregation
        (R("delete", "statefulsets", "apps", "x", "d"), False),
        (R("list", "secrets", "", "app"), True),  # a ClusterRole through a RoleBinding
        (R("list", "secrets", "", "other"), False),
        (R("list", "secrets"), False),  # ... never across namespaces
        (R("list", "nodes"), True),  # Group subject
    ]
    wrong = [str(r) for r, allowed in cases if auth.allows(me, r) != allowed]
    assert wrong == []
    assert not Authorizer(objects[-1:] + objects[:1]).allows(me, R("get", "pods", "", "x", "p"))


# -- Pod Security ----------------------------------------------------------------------------


COMPONENT = {"Deployment": "mover-controller", "DaemonSet": "mover-node"}


def _pod(values: str, kind: str, name: str = "") -> Obj:
    name = name or COMPONENT[kind]
    (workload,) = [
        o for o in rendered(values) if o["kind"] == kind and o["metadata"]["name"] == name
    ]
    pod: Obj = workload["spec"]["template"]["spec"]
    return pod


@pytest.mark.parametrize("values", EVERY)
def test_the_controller_passes_the_restricted_profile(values: str) -> None:
    pod = _pod(values, "Deployment")
    assert pod_security.violations(pod, "restricted") == []
    (container,) = pod["containers"]
    pod_sc, sc = pod["securityContext"], container["securityContext"]
    assert pod_sc["runAsNonRoot"] is True and pod_sc["runAsUser"] not in (0, None)
    assert pod_sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert sc["allowPrivilegeEscalation"] is False and sc["privileged"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["readOnlyRootFilesystem"] is True
    assert {v["name"]: set(v) - {"name"} for v in pod["volumes"]} == {"tmp": {"emptyDir"}}


@pytest.mark.parametrize("values", UI_ON)
def test_the_dashboard_passes_the_restricted_profile(values: str) -> None:
    pod = _pod(values, "Deployment", "mover-ui")
    assert pod_security.violations(pod, "restricted") == []
    (container,) = pod["containers"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["serviceAccountName"] == "mover-ui"
    assert {v["name"]: set(v) - {"name"} for v in pod["volumes"]} == {"tmp": {"emptyDir"}}


def test_the_people_roles_join_view_and_edit_only_when_asked() -> None:
    """mover-app-viewer (get backups.mover.dev) and mover-app-operator (and create backups and
    restores) exist with the dashboard; they join the built-in view, edit and admin roles only
    with ui.aggregateToBuiltInRoles."""
    aggregate = "rbac.authorization.k8s.io/aggregate-to-"
    for values, joined in (("ui", False), ("ui-aggregated", True)):
        roles = {
            o["metadata"]["name"]: o
            for o in rendered(values)
            if o["kind"] == "ClusterRole" and o["metadata"]["name"].startswith("mover-app-")
        }
        assert set(roles) == {"mover-app-user", "mover-app-viewer", "mover-app-operator"}
        for name, into in (("mover-app-viewer", "view"), ("mover-app-operator", "edit")):
            labels = roles[name]["metadata"]["labels"]
            assert (labels.get(f"{aggregate}{into}") == "true") is joined, name
            assert f"{aggregate}admin" in labels or not joined
            for rule in roles[name]["rules"]:
                assert rule["apiGroups"] == ["mover.dev"], rule
                assert set(rule["resources"]) <= {"backups", "restores"}, rule
                assert set(rule["verbs"]) <= {"get", "create"}, rule
        assert "aggregate-to-view" not in str(roles["mover-app-operator"]["metadata"])
    assert not [o for o in rendered("defaults") if o["metadata"]["name"].startswith("mover-ui")]


# The node agent's level for each setting (docs/security.md): privileged while it opens block
# devices or mounts host paths (hostPath volumes are outside baseline), baseline otherwise (root).
AGENT_LEVEL = {v: "privileged" for v in EVERY} | {
    "no-block-access": "baseline",
    "no-block-access-namespace": "baseline",
}


@pytest.mark.parametrize("values", EVERY)
def test_the_node_agent_has_only_what_its_settings_need(values: str) -> None:
    pod = _pod(values, "DaemonSet")
    (container,) = pod["containers"]
    sc = container["securityContext"]
    assert pod_security.level_of(pod) == AGENT_LEVEL[values]
    assert sc["readOnlyRootFilesystem"] is True
    assert (sc.get("seccompProfile") or pod["securityContext"]["seccompProfile"]) == {
        "type": "RuntimeDefault"
    }
    host = {v["name"]: v["hostPath"]["path"] for v in pod["volumes"] if "hostPath" in v}
    assert "/" not in host.values(), "the host's root is never mounted"
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    block = values in BLOCK
    assert sc["privileged"] is block
    assert ("--no-snapshots" in container["args"]) is not block
    kubelet = {
        "kubelet-pods": "/var/lib/kubelet/pods",
        "kubelet-plugins": "/var/lib/kubelet/plugins",
    }
    if block:
        assert "capabilities" not in sc and "allowPrivilegeEscalation" not in sc
        assert {k: host[k] for k in kubelet} == kubelet
        for name, path in kubelet.items():
            assert mounts[name]["mountPath"] == path and mounts[name]["readOnly"] is True
            assert mounts[name]["mountPropagation"] == "HostToContainer"
    else:
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"] == {"drop": ["ALL"], "add": ["DAC_OVERRIDE"]}
        assert not set(kubelet) & set(host)
    listed = {k: v for k, v in host.items() if k not in kubelet}
    for name, path in listed.items():
        assert mounts[name]["mountPath"] == f"/host{path}"
    assert bool(listed) == ("host-paths" in values or values == "every-opt-in")
    if values == "defaults":
        assert pod["tolerations"] == [] and host == kubelet


@pytest.mark.parametrize("values", ["namespace", "no-block-access-namespace", "every-opt-in"])
def test_the_namespace_is_labelled_with_the_agents_level(values: str) -> None:
    (namespace,) = [o for o in rendered(values) if o["kind"] == "Namespace"]
    assert namespace["metadata"]["name"] == NAMESPACE
    labels = namespace["metadata"]["labels"]
    level = pod_security.level_of(_pod(values, "DaemonSet"))
    assert level == AGENT_LEVEL[values]
    for mode in ("enforce", "audit", "warn"):
        assert labels[f"pod-security.kubernetes.io/{mode}"] == level
    assert pod_security.LEVELS.index(pod_security.level_of(_pod(values, "Deployment"))) <= (
        pod_security.LEVELS.index(level)
    )
    assert "Namespace" not in {o["kind"] for o in rendered("defaults")}


def test_the_pod_security_check_can_fail() -> None:
    pod: Obj = {
        "hostNetwork": True,
        "volumes": [{"name": "root", "hostPath": {"path": "/"}}],
        "containers": [
            {
                "name": "c",
                "securityContext": {"privileged": True, "capabilities": {"add": ["SYS_ADMIN"]}},
                "ports": [{"containerPort": 80, "hostPort": 80}],
            }
        ],
    }
    found = pod_security.violations(pod, "baseline")
    assert len(found) == 5, found
    assert pod_security.level_of(pod) == "privileged"
    plain: Obj = {"containers": [{"name": "c"}]}
    assert pod_security.level_of(plain) == "baseline"
    assert len(pod_security.violations(plain, "restricted")) == 4


def test_docs_security_names_every_role_and_value() -> None:
    """docs/security.md is the table in words: it names every role and binding the chart can
    make, and every value that widens or narrows them."""
    text = (ROOT / "docs" / "security.md").read_text()
    names = {
        o["metadata"]["name"]
        for values in ("every-opt-in", "ui")
        for o in rendered(values)
        if o["kind"] in ("ClusterRole", "Role")
    }
    assert names and not [n for n in names if f"`{n}`" not in text]
    for value in (
        "node.blockAccess",
        "node.hostPaths",
        "node.capabilities",
        "node.tolerations",
        "rbac.namespaces",
        "restore.rules",
        "restore.createNamespaces",
        "restore.clusterScoped",
        "hooks.enabled",
        "changedBlockTracking.enabled",
        "namespace.create",
        "ui.enabled",
        "ui.aggregateToBuiltInRoles",
    ):
        assert f"`{value}`" in text, value
