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
    # restore.rules: [] and createNamespaces: false: the controller writes nothing it restores.
    apps = one(overridden, "ClusterRole", "mover-controller-apps")["rules"]
    assert [r["resources"] for r in apps if set(r["verbs"]) - {"get", "list", "watch"}] == [
        ["volumesnapshots"]
    ]
    assert "mover-controller-restore-cluster" not in {o["metadata"]["name"] for o in overridden}
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
        ('kind: A\napiVersion: v1\nx: {{ template "t" . }}\n', "unsupported"),
        ("kind: A\napiVersion: v1\nx: {{ if .Values.a }}y\n", "has no {{ end }}"),
        ("kind: A\napiVersion: v1\nx: y{{ end }}\n", "closes nothing"),
        ("kind: A\napiVersion: v1\nx: {{ else }}\n", "outside an if"),
        ("kind: A\napiVersion: v1\nx: {{ if .Values.b }}{{ end }}\n", "names no value"),
        ("kind: A\napiVersion: v1\nx: {{ range .Values.a }}{{ end }}\n", "not a list"),
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


def test_conditions_ranges_and_trimming_render_as_go_templates(tmp_path: Path) -> None:
    """The control structures the chart uses: if/else/end with not, and, or (Go's truth:
    empty lists and maps, 0 and "" are false), range over a list with `.` and `$`, and the
    `{{- ` / ` -}}` trim markers. tests/deploy/test_helm.py compares the chart rendered with
    them to helm's output."""
    (tmp_path / "templates").mkdir()
    (tmp_path / "Chart.yaml").write_text("apiVersion: v2\nname: t\nversion: 0.0.1\n")
    (tmp_path / "values.yaml").write_text(
        "enabled: true\ndisabled: false\nnone: []\nzero: 0\nempty: {}\n"
        "items: [{name: a, path: /x}, {name: b, path: /y}]\n"
    )
    (tmp_path / "templates" / "t.yaml").write_text(
        "apiVersion: v1\nkind: T\nm:\n"
        "{{- if .Values.enabled }}\n  a: 1\n{{- else }}\n  a: 2\n{{- end }}\n"
        "{{- if .Values.disabled }}\n  b: 1\n{{- else }}\n  b: 2\n{{- end }}\n"
        "{{- if or .Values.none .Values.zero .Values.empty }}\n  c: 1\n{{- end }}\n"
        "{{- if and .Values.enabled .Values.items }}\n  d: 1\n{{- end }}\n"
        "{{- if not .Values.none }}\n  e: {{ $.Release.Name }}\n{{- end }}\n"
        "l:\n{{- range .Values.items }}\n  - {nm: {{ .name }}, p: /h{{ .path }}, "
        "r: {{ $.Release.Namespace }}, j: {{ toJson . }}}\n{{- end }}\n"
        "t: [ {{- .Values.zero -}} ]\n"
    )
    proc = subprocess.run(
        [sys.executable, str(RENDER), str(tmp_path), "-n", "ns", "--name", "rel"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    (doc,) = yaml.safe_load_all(proc.stdout)
    assert doc == {
        "apiVersion": "v1",
        "kind": "T",
        "m": {"a": 1, "b": 2, "d": 1, "e": "rel"},
        "l": [
            {"nm": "a", "p": "/h/x", "r": "ns", "j": {"name": "a", "path": "/x"}},
            {"nm": "b", "p": "/h/y", "r": "ns", "j": {"name": "b", "path": "/y"}},
        ],
        "t": [0],
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
    defaults: list[Obj], overridden: list[Obj], tmp_path: Path
) -> None:
    values = tmp_path / "opt-in.yaml"
    values.write_text(EVERY_OPT_IN)
    every = objects("-f", str(values))
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
