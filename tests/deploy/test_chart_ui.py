"""The chart's dashboard component (values ui.*): off by default; on, it runs `mover ui
--in-cluster` as it parses, with its ServiceAccount bound, behind a Service on its port, probed
on a path the dashboard serves. Its RBAC and Pod Security: tests/deploy/test_rbac_audit.py."""

from __future__ import annotations

from typing import Any

from mover_k8s.ui.command import ui
from tests.deploy.helm import render
from tests.deploy.kube_schema import validate_all

Obj = dict[str, Any]
ON = """
ui: {enabled: true, port: 9090, service: {port: 8080}, secureCookies: false, audiences: [mover]}
"""


def test_off_by_default() -> None:
    names = {o["metadata"]["name"] for o in render(None, "mover-system", "mover")}
    assert not {"mover-ui", "mover-app-viewer", "mover-app-operator"} & names


def test_the_dashboard_runs_mover_ui_in_cluster_behind_a_service() -> None:
    objects = render(ON, "backup", "mover")
    assert validate_all(objects) == []
    (deployment,) = [
        o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == "mover-ui"
    ]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    args = container["args"]
    assert args[0] == "ui"
    params = ui.make_context("ui", list(args[1:])).params
    assert params["in_cluster"] is True and params["namespace"] == "backup"
    assert params["port"] == 9090 and params["secure_cookies"] is False
    assert params["audiences"] == ("mover",)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": 9090}
    assert container["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    bound = {
        s["name"]
        for o in objects
        if o["kind"] in ("ClusterRoleBinding", "RoleBinding")
        for s in o["subjects"]
    }
    assert pod["serviceAccountName"] == "mover-ui" and "mover-ui" in bound
    (service,) = [o for o in objects if o["kind"] == "Service"]
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["ports"] == [{"name": "http", "port": 8080, "targetPort": "http"}]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert all(labels.get(k) == v for k, v in service["spec"]["selector"].items())
