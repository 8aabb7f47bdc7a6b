"""The Helm chart (agent/chart), rendered by scripts/render_chart.py: it renders with its
defaults and with overrides, every object is valid for its kind, the components run commands
that exist, and the RBAC is the least privilege the code needs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from mover_k8s.cli import agent
from tests.deploy.kube_schema import ROOT, crd_schemas, validate_all

CHART = ROOT / "agent" / "chart"
RENDER = ROOT / "scripts" / "render_chart.py"
SOURCES = ROOT / "agent" / "mover_k8s" / "crds"

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
rbac:
  restoreRules: []
"""


def render(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(RENDER), str(CHART), *args], capture_output=True, text=True
    )


def objects(*args: str) -> list[Obj]:
    proc = render(*args)
    assert proc.returncode == 0, proc.stderr
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


def one(objs: list[Obj], kind: str, name: str) -> Obj:
    (found,) = [o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name]
    return found


@pytest.fixture(scope="module")
def defaults() -> list[Obj]:
    return objects()


@pytest.fixture(scope="module")
def overridden(tmp_path_factory: pytest.TempPathFactory) -> list[Obj]:
    values = tmp_path_factory.mktemp("values") / "override.yaml"
    values.write_text(OVERRIDE)
    return objects("-f", str(values), "-n", "backup", "--name", "dr")


def test_dashboard_in_the_chart_equals_its_source() -> None:
    """The Grafana dashboard ships in the chart (agent/chart/dashboards/, for a Grafana sidecar
    or an import); the source the metrics tests check is agent/dashboards/mover.json."""
    copy = CHART / "dashboards" / "mover.json"
    source = ROOT / "agent" / "dashboards" / "mover.json"
    assert copy.read_bytes() == source.read_bytes(), (
        "agent/chart/dashboards/mover.json differs from agent/dashboards/mover.json: "
        "cp agent/dashboards/mover.json agent/chart/dashboards/"
    )


def test_crd_copies_equal_their_sources() -> None:
    copies = sorted(p.name for p in (CHART / "crds").glob("*.yaml"))
    assert copies == sorted(p.name for p in SOURCES.glob("*.yaml"))
    for name in copies:
        assert (CHART / "crds" / name).read_bytes() == (SOURCES / name).read_bytes(), (
            f"agent/chart/crds/{name} differs from agent/mover_k8s/crds/{name}: "
            "cp agent/mover_k8s/crds/*.yaml agent/chart/crds/"
        )


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
    assert one(overridden, "ClusterRole", "mover-controller-restore")["rules"] == []
    for binding in [o for o in overridden if o["kind"] in ("ClusterRoleBinding", "RoleBinding")]:
        assert {s["namespace"] for s in binding["subjects"]} == {"backup"}


def test_a_bad_value_is_caught(tmp_path: Path) -> None:
    """The checks can fail: an empty repository URL breaks the CRD's schema, a string where
    the Deployment wants a number breaks its model."""
    values = tmp_path / "bad.yaml"
    values.write_text('repository: {spec: {url: ""}}\ncontroller: {replicas: "two"}\n')
    errors = validate_all(objects("-f", str(values)))
    assert any("Repository/default" in e and "url" in e for e in errors), errors
    assert any("Deployment/mover-controller.spec.replicas" in e for e in errors), errors


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("kind: A\napiVersion: v1\nx: {{ .Values.nothing }}\n", "names no value"),
        ("kind: A\napiVersion: v1\nx: {{ if .Values.a }}y{{ end }}\n", "unsupported"),
        ("kind: A\napiVersion: v1\nx: {{ .Values.a }}\n", "toJson"),
        ("kind: A\napiVersion: v1\nx: [\n", "invalid YAML"),
    ],
)
def test_render_refuses_what_it_cannot_render(tmp_path: Path, template: str, message: str) -> None:
    (tmp_path / "templates").mkdir()
    (tmp_path / "Chart.yaml").write_text("apiVersion: v2\nname: t\nversion: 0.0.1\n")
    (tmp_path / "values.yaml").write_text("a: {b: 1}\n")
    (tmp_path / "templates" / "t.yaml").write_text(template)
    proc = subprocess.run(
        [sys.executable, str(RENDER), str(tmp_path)], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert proc.stdout == ""


def test_values_merge_as_helm_does(tmp_path: Path) -> None:
    (tmp_path / "templates").mkdir()
    (tmp_path / "Chart.yaml").write_text("apiVersion: v2\nname: t\nversion: 0.0.1\n")
    (tmp_path / "values.yaml").write_text("m: {a: 1, b: {c: 2}, d: [1]}\nflag: true\n")
    (tmp_path / "templates" / "t.yaml").write_text(
        "apiVersion: v1\nkind: T\nm: {{ toJson .Values.m }}\nf: {{ .Values.flag }}\n"
        "q: {{ .Values.flag | quote }}\n"
    )
    (tmp_path / "o.yaml").write_text("m: {b: {e: 3}, d: [2], a: null}\nflag: false\n")
    proc = subprocess.run(
        [sys.executable, str(RENDER), str(tmp_path), "-f", str(tmp_path / "o.yaml")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    (doc,) = yaml.safe_load_all(proc.stdout)
    assert doc == {
        "apiVersion": "v1",
        "kind": "T",
        "m": {"b": {"c": 2, "e": 3}, "d": [2]},
        "f": False,
        "q": "false",
    }


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
    for crd in SOURCES.glob("*.yaml"):
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
            }, (resource, rule)
            if resource == "leases":
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
    for objs, restores in ((defaults, True), (overridden, False)):
        for role_kind, rule in _rules(objs, "mover-controller"):
            verbs = set(rule["verbs"])
            if verbs <= {"get", "list", "watch"}:
                continue
            assert "deletecollection" not in verbs and "*" not in verbs, rule
            groups = set(rule["apiGroups"])
            if groups in ({"mover.dev"}, {"snapshot.storage.k8s.io"}):
                continue
            if rule["resources"] == ["leases"]:
                assert role_kind == "Role", rule
                continue
            if rule["resources"] == ["pods/exec"]:  # the Backups' hooks
                assert groups == {""} and verbs == {"create"}, rule
                continue
            # Everything else is a restore rule: it never deletes.
            assert restores, rule
            assert "delete" not in verbs, rule
    execs = [r for _, r in _rules(defaults, "mover-controller") if r["resources"] == ["pods/exec"]]
    assert len(execs) == 1
    reads = [r for _, r in _rules(defaults, "mover-controller") if r["resources"] == ["*"]]
    assert any(set(r["verbs"]) == {"get", "list", "watch"} for r in reads)
