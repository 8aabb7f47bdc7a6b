"""The Helm chart (agent/chart) with real helm: it is the pinned version, `helm lint --strict`
passes, `helm template` renders objects that are valid for their kind with each set of values,
and the CRDs install from crds/ only.

helm is $MOVER_HELM, else `helm` on PATH (tests/deploy/helm.py); `bash scripts/get_helm.sh DIR`
installs it (.ci/run does). Without helm these tests skip, except under CI=true, where they
fail: CI must never pass without having run them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.helm import CHART, GET_HELM, HELM_VERSION, render, run_helm, with_values
from tests.deploy.kube_schema import ROOT, validate_all
from tests.deploy.test_chart import EVERY_OPT_IN, OVERRIDE

Obj = dict[str, Any]

# Values a cluster that keeps its backups on S3 with its own credentials, on dedicated nodes,
# would set: every other knob of values.yaml that OVERRIDE leaves alone.
S3_DEDICATED = """
image: {repository: ghcr.io/example/mover, tag: "0.1.0-rc.1"}
repository:
  name: offsite
  spec:
    url: s3://backups-eu/cluster-b
    passwordSecretRef: {name: offsite-password, key: pw}
    credentialsSecretRef:
      name: offsite-s3
      accessKeyIdKey: KEY_ID
      secretAccessKeyKey: SECRET
    s3: {endpoint: "https://minio.storage:9000", region: eu-central-1, pathStyle: true}
controller:
  replicas: 1
  resources: {requests: {cpu: "1", memory: 1Gi}, limits: {cpu: "2", memory: 4Gi}}
  nodeSelector: {kubernetes.io/os: linux, pool: backup}
  tolerations:
    - {key: dedicated, operator: Equal, value: backup, effect: NoExecute, tolerationSeconds: 300}
node:
  workers: "8"
  resources: {requests: {cpu: "2", memory: 1Gi}, limits: {memory: 8Gi}}
  nodeSelector: {kubernetes.io/os: linux}
  tolerations:
    - {key: dedicated, operator: Exists}
  blockAccess: false
  kubeletDir: /var/lib/k0s/kubelet
  capabilities: []
  hostPaths:
    - {name: local, path: /var/local-volumes, readOnly: false}
restore:
  rules:
    - apiGroups: ["", apps]
      resources: [configmaps, secrets, services, deployments, statefulsets]
      verbs: [create, update]
  createNamespaces: false
"""

VALUE_SETS = {
    "defaults": None,
    "override": OVERRIDE,
    "s3-dedicated": S3_DEDICATED,
    "every-opt-in": EVERY_OPT_IN,
}


def key(obj: Obj) -> tuple[str, str, str, str]:
    meta = obj["metadata"]
    return (obj["apiVersion"], obj["kind"], meta.get("namespace", ""), meta["name"])


def by_key(objects: Iterable[Obj]) -> dict[tuple[str, str, str, str], Obj]:
    found: dict[tuple[str, str, str, str], Obj] = {}
    for obj in objects:
        assert key(obj) not in found, f"rendered twice: {key(obj)}"
        found[key(obj)] = obj
    return found


def test_helm_is_the_pinned_version() -> None:
    assert run_helm("version", "--template", "{{.Version}}").strip() == HELM_VERSION


def test_helm_lint_strict_passes() -> None:
    out = run_helm("lint", "--strict", str(CHART))
    assert "1 chart(s) linted, 0 chart(s) failed" in out, out
    assert "[ERROR]" not in out and "[WARNING]" not in out, out


@pytest.mark.parametrize("values", ["override", "s3-dedicated", "every-opt-in"])
def test_helm_lint_passes_with_values(values: str) -> None:
    out = with_values(VALUE_SETS[values], "lint", "--strict", str(CHART))
    assert "0 chart(s) failed" in out, out


@pytest.mark.parametrize("values", list(VALUE_SETS))
def test_helm_renders_valid_objects(values: str) -> None:
    namespace, release = ("mover-system", "mover") if values == "defaults" else ("backup", "dr")
    rendered = render(VALUE_SETS[values], namespace, release, crds=True)
    assert validate_all(rendered) == []
    by_key(rendered)  # no object twice
    kinds = {o["kind"] for o in rendered}
    assert {"CustomResourceDefinition", "Deployment", "DaemonSet", "Repository"} <= kinds


def test_crds_install_from_crds_dir_only() -> None:
    """What agent/chart/README.md says: the CRDs are crds/ (installed by `helm install`, left
    out of `helm template` unless --include-crds, never templated)."""
    plain = render()
    assert "CustomResourceDefinition" not in {o["kind"] for o in plain}
    crds = [o for o in render(crds=True) if o["kind"] == "CustomResourceDefinition"]
    files = sorted((CHART / "crds").glob("*.yaml"))
    assert len(crds) == len(files) == 6
    assert [o["metadata"]["name"] for o in crds] == [
        yaml.safe_load(f.read_text())["metadata"]["name"] for f in files
    ]
    assert not list((CHART / "templates").glob("*crd*")), "a CRD template would be upgraded"


# One test of each kind that renders the chart: through helm.py in a fixture, in a test, and
# from tests/k8s (the audit's renders).
NEED_HELM = [
    "tests/deploy/test_helm.py::test_helm_is_the_pinned_version",
    "tests/deploy/test_chart.py::test_the_node_agent_is_told_its_node",
    "tests/deploy/test_rbac_audit.py::test_every_request_the_code_makes_is_allowed[defaults]",
]


def test_ci_cannot_skip_without_helm(tmp_path: Path) -> None:
    """Under CI=true a missing helm fails the tests that render the chart (an error where a
    fixture renders it); elsewhere they skip, saying how to install it."""
    env = {k: v for k, v in os.environ.items() if k != "MOVER_HELM"}
    env["PATH"] = str(tmp_path)  # no helm there
    for ci in ("true", ""):
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *NEED_HELM],
            capture_output=True,
            text=True,
            cwd=ROOT,
            env={**env, "CI": ci},
            timeout=120,
        )
        assert GET_HELM in proc.stdout, proc.stdout
        if ci:
            assert proc.returncode == 1 and "passed" not in proc.stdout, proc.stdout
            assert proc.stdout.count("CI=true: helm not found") >= len(NEED_HELM), proc.stdout
        else:
            assert proc.returncode == 0, proc.stdout
            assert f"{len(NEED_HELM)} skipped" in proc.stdout, proc.stdout
