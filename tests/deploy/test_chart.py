"""The Helm chart (agent/chart), rendered by the pinned helm (tests/deploy/helm.py): it renders
with its defaults and with overrides, every object is valid for its kind, the components run
commands that exist, the RBAC is the least privilege the code needs, and the Grafana dashboard
ships as a ConfigMap for Grafana's sidecar."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from mover_k8s.cli import agent
from tests.deploy.helm import CHART, render
from tests.deploy.kube_schema import ROOT, crd_schemas, validate_all

CRDS = CHART / "crds"

Obj = dict[str, Any]

OVERRIDE = """
image: {repository: registry.example.com/mover, tag: "9.9.9", pullPolicy: Always}
repository:
  name: nfs
  spec:
    url: /mnt/backups
    passwordSecretRef: {name: nfs-password}
    credentialsSecretRef: null
    s3: null
controller:
  replicas: 3
  interval: "5"
  resources: {requests: {cpu: 50m, memory: 128Mi}, limits: {memory: 512Mi}}
  nodeSelector: {node-role.kubernetes.io/control-plane: ""}
  tolerations:
    - {key: node-role.kubernetes.io/control-plane, operator: Exists, effect: NoSchedule}
node:
  workers: "4"
  nodeSelector: {storage: "true"}
  tolerations: []
restore:
  rules: []
  createNamespaces: false
"""

# Every opt-in of values.yaml at once (tests/deploy/test_rbac_audit.py checks each alone too):
# the Namespace object, host paths for local volumes, tolerations, RBAC in listed namespaces
# only, cluster-scoped restores, hooks. node.blockAccess is on by default.
EVERY_OPT_IN = """
namespace: {create: true}
node:
  tolerations: [{operator: Exists}]
  hostPaths:
    - {name: local-disks, path: /mnt/disks, readOnly: false}
    - {name: images, path: /srv/volume-images, readOnly: true}
rbac:
  namespaces: [shop, billing]
restore:
  clusterScoped: true
hooks:
  enabled: true
changedBlockTracking:
  enabled: true
"""


def objects(
    values: str | None = None, namespace: str = "mover-system", release: str = "mover"
) -> list[Obj]:
    """Everything the chart installs, CRDs included, for a values file's text (None: the
    defaults)."""
    return render(values, namespace, release, crds=True)


def one(objs: list[Obj], kind: str, name: str) -> Obj:
    (found,) = [o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name]
    return found


@pytest.fixture(scope="module")
def defaults() -> list[Obj]:
    return objects()


@pytest.fixture(scope="module")
def overridden() -> list[Obj]:
    return objects(OVERRIDE, "backup", "dr")


def test_the_grafana_dashboard_ships_as_a_configmap_for_the_sidecar(defaults: list[Obj]) -> None:
    """dashboards/mover.json, its only copy, as a ConfigMap that Grafana's dashboard sidecar
    loads (label grafana_dashboard: "1"), in the release namespace."""
    dashboard = one(defaults, "ConfigMap", "mover-grafana-dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dashboard["metadata"]["namespace"] == "mover-system"
    assert list(dashboard["data"]) == ["mover.json"]
    source = (CHART / "dashboards" / "mover.json").read_text()
    assert dashboard["data"]["mover.json"] == source
    assert json.loads(dashboard["data"]["mover.json"]) == json.loads(source)
    copies = [p.relative_to(ROOT) for p in (ROOT / "agent").rglob("*.json")]
    assert copies == [Path("agent/chart/dashboards/mover.json")], "one copy of the dashboard"


def test_the_grafana_dashboard_is_optional() -> None:
    off = objects("grafana: {dashboard: false}")
    assert "ConfigMap" not in {o["kind"] for o in off}
    assert len(off) == len(objects()) - 1


def test_defaults_render_to_valid_objects(defaults: list[Obj]) -> None:
    kinds = {o["kind"] for o in defaults}
    assert {"CustomResourceDefinition", "Deployment", "DaemonSet", "ServiceAccount"} <= kinds
    assert {"ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "Repository"} <= kinds
    assert validate_all(defaults) == []
    assert {o["metadata"]["name"] for o in defaults if o["kind"] == "CustomResourceDefinition"} == {
        f"{plural}.mover.dev"
        for plural in (
            *("backups", "restores", "schedules", "repositories"),
            *("volumebackups", "volumerestores"),
        )
    }
    for obj in defaults:
        if obj["kind"] not in ("CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding"):
            assert obj["metadata"]["namespace"] == "mover-system", obj["metadata"]


def test_override_renders_to_valid_objects(overridden: list[Obj]) -> None:
    assert validate_all(overridden) == []
    controller = one(overridden, "Deployment", "mover-controller")
    pod = controller["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert controller["spec"]["replicas"] == 3
    assert container["image"] == "registry.example.com/mover:9.9.9"
    assert container["imagePullPolicy"] == "Always"
    assert container["resources"]["limits"] == {"memory": "512Mi"}
    assert container["args"] == ["agent", "controller", "--namespace", "backup", "--interval", "5"]
    assert pod["nodeSelector"] == {"node-role.kubernetes.io/control-plane": ""}
    assert pod["tolerations"][0]["effect"] == "NoSchedule"
    node = one(overridden, "DaemonSet", "mover-node")["spec"]["template"]["spec"]
    assert node["nodeSelector"] == {"storage": "true"}
    assert node["tolerations"] == []
    assert node["containers"][0]["args"][-1] == "4"
    repository = one(overridden, "Repository", "nfs")
    assert repository["metadata"]["namespace"] == "backup"
    assert repository["spec"] == {
        "url": "/mnt/backups",
        "passwordSecretRef": {"name": "nfs-password", "key": "password"},
    }
    # restore.rules: [] and createNamespaces: false: the controller writes nothing it restores.
    apps = one(overridden, "ClusterRole", "mover-controller-apps")["rules"]
    assert [r["resources"] for r in apps if set(r["verbs"]) - {"get", "list", "watch"}] == [
        ["volumesnapshots"]
    ]
    assert "mover-controller-restore-cluster" not in {o["metadata"]["name"] for o in overridden}
    for binding in [o for o in overridden if o["kind"] in ("ClusterRoleBinding", "RoleBinding")]:
        assert {s["namespace"] for s in binding["subjects"]} == {"backup"}


def test_a_bad_value_is_caught() -> None:
    """The checks can fail: an empty repository URL breaks the CRD's schema, a string where
    the Deployment wants a number breaks its model."""
    errors = validate_all(objects('repository: {spec: {url: ""}}\ncontroller: {replicas: "two"}'))
    assert any("Repository/default" in e and "url" in e for e in errors), errors
    assert any("Deployment/mover-controller.spec.replicas" in e for e in errors), errors


@pytest.mark.parametrize(("kind", "command"), [("Deployment", "controller"), ("DaemonSet", "node")])
def test_components_run_existing_commands_as_bound_accounts(
    overridden: list[Obj], kind: str, command: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NODE_NAME", "node-a")  # the DaemonSet sets it from spec.nodeName
    (workload,) = [o for o in overridden if o["kind"] == kind]
    spec = workload["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    args = container["args"]
    assert args[:2] == ["agent", command]
    sub = agent.get_command(click.Context(agent), command)
    assert sub is not None
    ctx = sub.make_context(command, list(args[2:]))
    assert ctx.params["namespace"] == "backup"
    bound = {
        s["name"]
        for o in overridden
        if o["kind"] in ("ClusterRoleBinding", "RoleBinding")
        for s in o["subjects"]
    }
    assert spec["serviceAccountName"] in bound


@pytest.mark.parametrize(("kind", "command"), [("Deployment", "controller"), ("DaemonSet", "node")])
def test_metrics_port_is_the_one_the_component_serves(
    defaults: list[Obj], kind: str, command: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NODE_NAME", "node-a")
    (workload,) = [o for o in defaults if o["kind"] == kind]
    template = workload["spec"]["template"]
    (container,) = template["spec"]["containers"]
    sub = agent.get_command(click.Context(agent), command)
    assert sub is not None
    served = sub.make_context(command, list(container["args"][2:])).params["metrics_port"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["metrics"] == served
    assert template["metadata"]["annotations"]["prometheus.io/port"] == str(served)


def test_the_node_agent_is_told_its_node(defaults: list[Obj]) -> None:
    """`mover agent node` takes its node from NODE_NAME (the tests above set it by hand): the
    DaemonSet sets it from the pod's spec.nodeName."""
    node = one(defaults, "DaemonSet", "mover-node")
    (container,) = node["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert env["NODE_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}


def _rules(objs: list[Obj], account: str) -> list[tuple[str, Obj]]:
    """(the role's kind, rule) for every rule bound to the ServiceAccount."""
    found = []
    for binding in objs:
        if binding["kind"] not in ("ClusterRoleBinding", "RoleBinding"):
            continue
        if not any(s["name"] == account for s in binding["subjects"]):
            continue
        ref = binding["roleRef"]
        role = one(objs, ref["kind"], ref["name"])
        found += [(ref["kind"], rule) for rule in role["rules"]]
    return found


def test_rbac_names_only_existing_mover_resources(defaults: list[Obj]) -> None:
    served: set[str] = set()
    for crd in CRDS.glob("*.yaml"):
        doc = yaml.safe_load(crd.read_text())
        plural = doc["spec"]["names"]["plural"]
        served.add(plural)
        if any("status" in (v.get("subresources") or {}) for v in doc["spec"]["versions"]):
            served.add(f"{plural}/status")
    named = {
        resource
        for role in defaults
        if role["kind"] in ("ClusterRole", "Role")
        for rule in role["rules"]
        if "mover.dev" in rule["apiGroups"]
        for resource in rule["resources"]
    }
    assert named, "no rule names mover.dev resources"
    assert named <= served, named - served
    assert len(crd_schemas()) == 6


def test_node_agent_has_least_privilege(defaults: list[Obj]) -> None:
    rules = _rules(defaults, "mover-node")
    assert rules
    for role_kind, rule in rules:
        assert "*" not in rule["apiGroups"] + rule["resources"] + rule["verbs"], rule
        writes = set(rule["verbs"]) & {"create", "update", "patch", "delete", "deletecollection"}
        for resource in rule["resources"]:
            if resource in ("secrets",):
                assert role_kind == "Role" and rule["verbs"] == ["get"], rule
            if not writes:
                continue
            assert resource in {
                "volumebackups/status",
                "volumerestores/status",
                "persistentvolumeclaims",
                "persistentvolumes",
                "pods",
                "leases",
                "volumesnapshots",
                "volumesnapshotcontents",
            }, (resource, rule)
            if resource in ("leases", "pods", "persistentvolumeclaims", "volumesnapshots"):
                assert role_kind == "Role", rule  # only in its own namespace
    granted = {(r, v) for _, rule in rules for r in rule["resources"] for v in rule["verbs"]}
    # What the code does (agent/mover_k8s/node): each of these is needed.
    for needed in [
        ("volumebackups", "list"),
        ("volumebackups", "watch"),
        ("volumerestores/status", "patch"),
        ("repositories", "get"),
        ("secrets", "get"),
        ("volumesnapshots", "get"),
        ("persistentvolumeclaims", "create"),
        ("persistentvolumes", "delete"),
        ("pods", "delete"),
        ("leases", "create"),
        ("leases", "patch"),
    ]:
        assert needed in granted, needed
    assert ("volumebackups", "update") not in granted  # only their status


def test_controller_writes_only_mover_resources_and_what_it_restores(
    defaults: list[Obj], overridden: list[Obj]
) -> None:
    every = objects(EVERY_OPT_IN)
    for objs, restores in ((defaults, True), (overridden, False), (every, True)):
        for role_kind, rule in _rules(objs, "mover-controller"):
            verbs = set(rule["verbs"])
            if verbs <= {"get", "list", "watch"}:
                continue
            assert "deletecollection" not in verbs and "*" not in verbs, rule
            assert "impersonate" not in verbs, rule
            groups = set(rule["apiGroups"])
            if groups in ({"mover.dev"}, {"snapshot.storage.k8s.io"}):
                continue
            if rule["resources"] == ["leases"]:
                assert role_kind == "Role", rule
                continue
            if rule["resources"] == ["pods/exec"]:  # the Backups' hooks, with hooks.enabled
                assert objs is every and groups == {""} and verbs == {"get", "create"}, rule
                continue
            # Everything else is a restore rule: it never deletes.
            assert restores, rule
            assert "delete" not in verbs, rule
            # escalate and bind only with restore.clusterScoped (EVERY_OPT_IN).
            assert objs is every or not verbs & {"escalate", "bind"}, rule
    # Intended change (issue 15): pods/exec only with hooks.enabled, as get and create.
    for objs, hooks in ((defaults, False), (every, True)):
        execs = [r for _, r in _rules(objs, "mover-controller") if r["resources"] == ["pods/exec"]]
        assert bool(execs) == hooks
    # Intended change (issue 15): the read of every kind is `list` only; a `get` on `*` would
    # cover pods/exec, pods/attach and the proxies (tests/deploy/test_rbac_audit.py).
    reads = [r for _, r in _rules(defaults, "mover-controller") if r["resources"] == ["*"]]
    assert reads and all(r["verbs"] == ["list"] for r in reads)
