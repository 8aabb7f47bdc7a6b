"""A restore under the chart's RBAC (issue 15): the emulator is made to answer every request of
the controller as the API server would with the chart's ClusterRoles and bindings (the RBAC
evaluator of tests/deploy/kube_rbac.py; a request it denies gets 403 Forbidden), so the real
controller restores an app with exactly the permissions the chart gives it.

By default the chart grants no RBAC, CRD or StorageClass writes: such objects of the backup
are skipped, and the Restore's report says why ("not allowed by mover's RBAC; enable
restore.clusterScoped"), never a silent failure; a kind missing from restore.rules fails with
a hint. With restore.clusterScoped they are restored.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import yaml

from mover_k8s import api
from mover_k8s.controller.restore.apply import NOT_ALLOWED, needs_cluster_scope, refused_entry
from mover_k8s.errors import KubeError
from tests.deploy.helm import render as render_values
from tests.deploy.kube_rbac import Account, Authorizer, Request
from tests.deploy.kube_schema import ROOT

from . import emulator
from .conftest import ROLE_BINDING, SYSTEM, WIDGET, Env, Obj, backup_body, deploy_app, restore_body

CONTROLLER = Account(SYSTEM, "mover-controller")
VERBS = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}
WIDGETS_RULE = {"apiGroups": ["example.com"], "resources": ["widgets"], "verbs": ["get", "create"]}


def _values(cluster_scoped: bool) -> str:
    """The chart's values with the test app's custom resource (Widget) added to restore.rules,
    and restore.clusterScoped as given."""
    defaults = yaml.safe_load((ROOT / "agent" / "chart" / "values.yaml").read_text())
    rules = [*defaults["restore"]["rules"], WIDGETS_RULE]
    return yaml.safe_dump({"restore": {"rules": rules, "clusterScoped": cluster_scoped}})


@contextmanager
def chart_rbac(monkeypatch: pytest.MonkeyPatch, values: str | None) -> Iterator[list[str]]:
    """From here on, every request to the emulator is the controller's, decided by the chart's
    RBAC rendered with `values`; yields the requests denied."""
    auth = Authorizer(render_values(values))
    denied: list[str] = []
    serve = emulator.Cluster._serve

    async def enforced(
        self: emulator.Cluster, method: str, target: emulator.Target, query: Any, body: Any
    ) -> tuple[int, Obj]:
        if method == "GET":
            verb = "get" if target.name else "list"
        else:
            verb = VERBS.get(method, method.lower())
        resource = target.resource.plural + (f"/{target.sub}" if target.sub else "")
        request = Request(verb, resource, target.resource.group, target.namespace, target.name)
        if not auth.allows(CONTROLLER, request):
            denied.append(str(request))
            raise emulator.ApiError(
                403,
                "Forbidden",
                f'{resource} is forbidden: User "{CONTROLLER.user}" cannot {verb} resource '
                f'"{resource}" in API group "{target.resource.group}"',
            )
        return await serve(self, method, target, query, body)

    monkeypatch.setattr(emulator.Cluster, "_serve", enforced)
    yield denied


def _backed_up(env: Env) -> None:
    """The test app (a Deployment, ConfigMaps, a Secret, a Service, a Widget and its CRD, a
    RoleBinding, a ClusterRoleBinding, two volumes), backed up as `nightly`. The Widget has an
    external-dns name, which a restore reads back (a `get` of its kind)."""
    deploy_app(env.kube, "shop")
    env.kube.patch(
        WIDGET,
        "shop",
        "gizmo",
        {"metadata": {"annotations": {"external-dns.alpha.kubernetes.io/hostname": "gizmo.test"}}},
    )
    with env.running():
        env.kube.create(api.BACKUP, backup_body("nightly", includedNamespaces=["shop"]))
        assert env.wait_phase(api.BACKUP, "nightly")["status"]["phase"] == "Completed"


def _restore(
    env: Env, monkeypatch: pytest.MonkeyPatch, values: str | None
) -> tuple[Obj, list[str]]:
    env.kube.create(
        api.RESTORE,
        restore_body(
            "back", backup="nightly", mode="resources-only", namespaceMapping={"shop": "shop2"}
        ),
    )
    with chart_rbac(monkeypatch, values) as denied, env.running(agent=False):
        restore = env.wait_phase(api.RESTORE, "back")
    return restore, denied


def _results(restore: Obj) -> dict[tuple[str, str], tuple[str, str]]:
    return {
        (e["kind"], e["name"]): (e["result"], e["reason"])
        for e in restore["status"]["report"]["objects"]
    }


def test_rbac_objects_are_skipped_with_the_reason_under_the_default_rbac(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    _backed_up(env)
    restore, denied = _restore(env, monkeypatch, None)
    results = _results(restore)
    # The cluster-scoped and RBAC objects of the backup: skipped, and said why.
    for key in [
        ("ClusterRoleBinding", "shop-reader"),
        ("ClusterRole", "shop-reader"),
        ("ClusterRole", "view"),
        ("RoleBinding", "shop-view"),
        ("CustomResourceDefinition", "widgets.example.com"),
        ("StorageClass", "fast"),
    ]:
        assert results[key] == ("skipped", NOT_ALLOWED), key
    # The namespaced kinds apps use, and the namespace: made.
    for key in [
        ("Namespace", "shop2"),
        ("ConfigMap", "app-config"),
        ("Secret", "app-secret"),
        ("Service", "shop"),
        ("Deployment", "shop"),
        ("PersistentVolumeClaim", "data-a"),
        ("ServiceAccount", "shop"),
    ]:
        assert results[key] == ("created", ""), (key, results.get(key))
    # A kind the chart's restore.rules leave out (the app's custom resource): failed, with
    # the API's 403 and where the grant is.
    result, reason = results[("Widget", "gizmo")]
    assert result == "failed" and "403" in reason, reason
    assert reason.endswith(
        "not allowed by mover's RBAC (the chart's restore.rules, rbac.namespaces)"
    )
    assert restore["status"]["phase"] == "PartiallyFailed"
    # Its external name could not be read back (no `get` on Widgets: 403): still pending, and
    # the Restore ended all the same.
    (external,) = restore["status"]["report"]["external"]
    assert (external["kind"], external["state"]) == ("Widget", "pending")
    assert env.kube.find(api.CONFIG_MAP, "shop2", "app-config") is not None
    # Nothing else the controller did was refused: only the writes the report names.
    refused = {d.split(" ")[1].split(".")[0] for d in denied}
    assert refused == {
        "clusterrolebindings",
        "clusterroles",
        "rolebindings",
        "customresourcedefinitions",
        "storageclasses",
        "widgets",
    }, denied
    assert {d.split(" ")[0] for d in denied} == {"create", "get"}, denied
    assert {d for d in denied if d.startswith("get ")} == {"get widgets.example.com gizmo in shop2"}


def test_rbac_objects_are_restored_with_restore_cluster_scoped(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    _backed_up(env)
    restore, denied = _restore(env, monkeypatch, _values(cluster_scoped=True))
    assert denied == []
    results = _results(restore)
    assert results[("RoleBinding", "shop-view")] == ("created", "")
    assert results[("ClusterRoleBinding", "shop-reader")] == ("skipped", "exists already")
    assert results[("Widget", "gizmo")] == ("created", "")
    assert restore["status"]["phase"] == "Completed", restore["status"]
    binding = env.kube.get(ROLE_BINDING, "shop2", "shop-view")
    assert binding["subjects"][0]["namespace"] == "shop2"


# -- the classification, one object at a time --------------------------------------------


def _obj(api_version: str, kind: str, namespace: str | None = None) -> Obj:
    meta: Obj = {"name": "x"}
    if namespace:
        meta["namespace"] = namespace
    return {"apiVersion": api_version, "kind": kind, "metadata": meta}


@pytest.mark.parametrize(
    ("obj", "creating", "opt_in"),
    [
        (_obj("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"), True, True),
        (_obj("rbac.authorization.k8s.io/v1", "RoleBinding", "shop"), True, True),
        (_obj("rbac.authorization.k8s.io/v1", "Role", "shop"), False, True),
        (_obj("apiextensions.k8s.io/v1", "CustomResourceDefinition"), True, True),
        (_obj("storage.k8s.io/v1", "StorageClass"), True, True),
        (_obj("example.com/v1", "ClusterWidget"), True, True),  # any cluster-scoped kind
        (_obj("v1", "Namespace"), True, False),  # restore.createNamespaces
        (_obj("v1", "Namespace"), False, True),  # replacing one: clusterScopedRules
        (_obj("v1", "ConfigMap", "shop"), True, False),
        (_obj("apps/v1", "Deployment", "shop"), False, False),
        (_obj("example.com/v1", "Widget", "shop"), True, False),
    ],
)
def test_which_objects_need_restore_cluster_scoped(obj: Obj, creating: bool, opt_in: bool) -> None:
    assert needs_cluster_scope(obj, creating) is opt_in


def test_a_403_becomes_a_skip_or_a_failure_with_a_hint() -> None:
    forbidden = KubeError("POST ...: 403 Forbidden cannot create", status=403, reason="Forbidden")
    other = KubeError("POST ...: 422 Invalid", status=422, reason="Invalid")
    crb = _obj("rbac.authorization.k8s.io/v1", "ClusterRoleBinding")
    config = _obj("v1", "ConfigMap", "shop")
    assert refused_entry(crb, forbidden, True, str(forbidden))["result"] == "skipped"
    assert refused_entry(crb, forbidden, True, str(forbidden))["reason"] == NOT_ALLOWED
    failed = refused_entry(config, forbidden, True, str(forbidden))
    assert failed["result"] == "failed" and failed["reason"].startswith(str(forbidden))
    assert "restore.rules" in failed["reason"]
    assert refused_entry(crb, other, True, "m") == {
        "kind": "ClusterRoleBinding",
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "name": "x",
        "result": "failed",
        "reason": "m",
    }
    updated = refused_entry(_obj("v1", "Namespace"), forbidden, False, "exists; update failed")
    assert (updated["result"], updated["reason"]) == ("skipped", NOT_ALLOWED)
