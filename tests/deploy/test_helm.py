"""The Helm chart (agent/chart) with real helm: `helm lint` passes, `helm template` renders
objects that are valid for their kind, and scripts/render_chart.py renders the very same
objects for the same values (so test_chart.py's checks hold for what helm installs).

helm is $MOVER_HELM, else `helm` on PATH; `bash scripts/get_helm.sh DIR` installs it (.ci/run
does). Without helm these tests skip, except under CI=true, where they fail: CI must never
pass without having run them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.kube_schema import ROOT, validate_all
from tests.deploy.test_chart import EVERY_OPT_IN, OVERRIDE

sys.path.insert(0, str(ROOT / "scripts"))
import render_chart  # a script, not a package: importable only from scripts/

CHART = ROOT / "agent" / "chart"
HELM_VERSION = "v3.17.3"  # scripts/get_helm.sh's

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

# Scalars whose YAML or Go printing differs from PyYAML's and Python's defaults.
TRICKY = """
controller:
  replicas: 1000000
  interval: 1e-05
node:
  workers: "08"
  nodeSelector: {zone: "y", flag: n, rack: 1_024, t: 2001-12-14}
"""

VALUE_SETS = {
    "defaults": None,
    "override": OVERRIDE,
    "s3-dedicated": S3_DEDICATED,
    "every-opt-in": EVERY_OPT_IN,
}


def helm_binary() -> str | None:
    """$MOVER_HELM if set (a missing file there is an error, not a skip), else helm on PATH."""
    configured = os.environ.get("MOVER_HELM")
    if configured:
        assert Path(configured).is_file(), f"MOVER_HELM={configured}: no such file"
        return configured
    return shutil.which("helm")


@pytest.fixture(scope="module")
def helm() -> str:
    found = helm_binary()
    if found is None:
        message = (
            "helm not found ($MOVER_HELM unset, no helm on PATH): "
            "bash scripts/get_helm.sh DIR && export MOVER_HELM=DIR/helm"
        )
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true: {message}", pytrace=False)
        pytest.skip(message)
    return found


def run_helm(helm: str, *args: str) -> str:
    # HELM_* state directories in a temporary place: helm template reads no repository, but
    # it would create ~/.cache/helm and ~/.config/helm otherwise.
    env = {**os.environ, "HELM_CACHE_HOME": "/tmp/mover-helm/cache"}
    env |= {"HELM_CONFIG_HOME": "/tmp/mover-helm/config", "HELM_DATA_HOME": "/tmp/mover-helm/data"}
    proc = subprocess.run([helm, *args], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, f"helm {' '.join(args)}: {proc.stderr}"
    return proc.stdout


def parse(text: str) -> list[Obj]:
    # As kubectl reads helm's output (go-yaml), not as PyYAML's defaults would.
    return [doc for doc in yaml.load_all(text, Loader=render_chart.HelmLoader) if doc]


def key(obj: Obj) -> tuple[str, str, str, str]:
    meta = obj["metadata"]
    return (obj["apiVersion"], obj["kind"], meta.get("namespace", ""), meta["name"])


def by_key(objects: Iterable[Obj]) -> dict[tuple[str, str, str, str], Obj]:
    found: dict[tuple[str, str, str, str], Obj] = {}
    for obj in objects:
        assert key(obj) not in found, f"rendered twice: {key(obj)}"
        found[key(obj)] = obj
    return found


def typed(value: Any) -> Any:
    """`value` with every number's type kept in the comparison: 2 and 2.0 are equal in Python,
    yet helm and the renderer must print the same one (an int field refuses "2.0")."""
    if isinstance(value, dict):
        return {k: typed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [typed(v) for v in value]
    if isinstance(value, bool | int | float):
        return (type(value).__name__, value)
    return value


def values_args(tmp_path: Path, text: str | None) -> list[str]:
    if text is None:
        return []
    path = tmp_path / "values.yaml"
    path.write_text(text)
    return ["-f", str(path)]


def test_helm_is_the_pinned_version(helm: str) -> None:
    assert run_helm(helm, "version", "--template", "{{.Version}}").strip() == HELM_VERSION


def test_helm_lint_strict_passes(helm: str) -> None:
    out = run_helm(helm, "lint", "--strict", str(CHART))
    assert "1 chart(s) linted, 0 chart(s) failed" in out, out
    assert "[ERROR]" not in out and "[WARNING]" not in out, out


@pytest.mark.parametrize("values", ["override", "s3-dedicated", "every-opt-in"])
def test_helm_lint_passes_with_values(helm: str, tmp_path: Path, values: str) -> None:
    out = run_helm(helm, "lint", "--strict", str(CHART), *values_args(tmp_path, VALUE_SETS[values]))
    assert "0 chart(s) failed" in out, out


@pytest.mark.parametrize("values", list(VALUE_SETS))
def test_helm_renders_valid_objects_equal_to_render_chart(
    helm: str, tmp_path: Path, values: str
) -> None:
    args = values_args(tmp_path, VALUE_SETS[values])
    namespace, release = ("mover-system", "mover") if values == "defaults" else ("backup", "dr")
    rendered = parse(
        run_helm(helm, "template", release, str(CHART), "-n", namespace, "--include-crds", *args)
    )
    assert validate_all(rendered) == []
    kinds = {o["kind"] for o in rendered}
    assert {"CustomResourceDefinition", "Deployment", "DaemonSet", "Repository"} <= kinds

    ours = render_chart.render(CHART, [Path(a) for a in args[1:]], namespace, release)
    helm_objects, our_objects = by_key(rendered), by_key(ours)
    assert sorted(helm_objects) == sorted(our_objects)
    for k, obj in helm_objects.items():
        assert typed(obj) == typed(our_objects[k]), f"{k} differs from render_chart.py's"


def test_tricky_scalars_render_as_helm_renders_them(helm: str, tmp_path: Path) -> None:
    """Numbers helm prints in Go's float64 form (1000000 is 1e+06), YAML 1.1 scalars that
    go-yaml and PyYAML read differently (n, 1e-05, 08, 1_024): render_chart.py agrees with helm
    on each, including where that makes an object invalid (replicas: 1e+06)."""
    args = values_args(tmp_path, TRICKY)
    rendered = by_key(parse(run_helm(helm, "template", "mover", str(CHART), "-n", "m", *args)))
    ours = by_key(render_chart.render(CHART, [Path(args[1])], "m", "mover"))
    assert sorted(rendered) == sorted(
        k for k, o in ours.items() if o["kind"] != "CustomResourceDefinition"
    )
    for k, obj in rendered.items():
        assert typed(obj) == typed(ours[k]), k
    deployment = next(o for o in rendered.values() if o["kind"] == "Deployment")
    # Printed 1e+06: a float to kubectl, which the API server refuses for an int32.
    assert typed(deployment["spec"]["replicas"]) == ("float", 1e6)
    assert deployment["spec"]["template"]["spec"]["containers"][0]["args"][-1] == "1e-05"
    daemonset = next(o for o in rendered.values() if o["kind"] == "DaemonSet")
    pod = daemonset["spec"]["template"]["spec"]
    assert pod["containers"][0]["args"][-1] == "08"
    assert pod["nodeSelector"] == {"zone": "y", "flag": False, "rack": 1024, "t": "2001-12-14"}
    errors = validate_all(rendered.values())
    assert any("Deployment/mover-controller.spec.replicas" in e for e in errors), errors


def test_crds_install_from_crds_dir_only(helm: str) -> None:
    """What agent/chart/README.md says: the CRDs are crds/ (installed by `helm install`, left
    out of `helm template` unless --include-crds, never templated), so render_chart.py's
    output is `helm template --include-crds`'s."""
    plain = parse(run_helm(helm, "template", "mover", str(CHART), "-n", "mover-system"))
    assert "CustomResourceDefinition" not in {o["kind"] for o in plain}
    with_crds = parse(
        run_helm(helm, "template", "mover", str(CHART), "-n", "mover-system", "--include-crds")
    )
    crds = [o for o in with_crds if o["kind"] == "CustomResourceDefinition"]
    files = sorted((CHART / "crds").glob("*.yaml"))
    assert len(crds) == len(files) == 6
    assert [o["metadata"]["name"] for o in crds] == [
        yaml.safe_load(f.read_text())["metadata"]["name"] for f in files
    ]
    assert not list((CHART / "templates").glob("*crd*")), "a CRD template would be upgraded"


def test_ci_cannot_skip_without_helm(tmp_path: Path) -> None:
    """Under CI=true a missing helm fails the helm tests; elsewhere they skip."""
    env = {k: v for k, v in os.environ.items() if k != "MOVER_HELM"}
    env["PATH"] = str(tmp_path)  # no helm there
    test = f"{Path(__file__).relative_to(ROOT)}::test_helm_is_the_pinned_version"
    for ci, outcome in (("true", "1 error"), ("", "1 skipped")):
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test],
            capture_output=True,
            text=True,
            cwd=ROOT,
            env={**env, "CI": ci},
            timeout=120,
        )
        assert outcome in proc.stdout, proc.stdout
        if ci:
            assert "CI=true: helm not found" in proc.stdout, proc.stdout


# What helm v3.17.3 printed for these values (`{{ .Values.n }}` and `{{ toJson .Values.all }}`),
# so that render_chart.py's number printing is checked where helm is not installed too.
@pytest.mark.parametrize(
    ("number", "printed", "as_json"),
    [
        (1000000, "1e+06", "1000000"),
        (123456, "123456", "123456"),
        (1234567, "1.234567e+06", "1234567"),
        (0.0001, "0.0001", "0.0001"),
        (0.00001, "1e-05", "0.00001"),
        (2.0, "2", "2"),
        (-0.0, "-0", "-0"),
        (1e23, "1e+23", "1e+23"),
        (3e-10, "3e-10", "3e-10"),
        (12345678901, "1.2345678901e+10", "12345678901"),
        (1e20, "1e+20", "100000000000000000000"),
        (0.000001, "1e-06", "0.000001"),
        (0.0000001, "1e-07", "1e-7"),
    ],
)
def test_numbers_print_as_helm_printed_them(number: float, printed: str, as_json: str) -> None:
    assert render_chart.go_number(number) == printed
    assert render_chart.go_json(number, "test") == as_json


def test_values_read_as_helm_reads_them() -> None:
    text = "a: y\nb: 'y'\nc: 1e-05\nd: 08\ne: 1:20\nf: 2001-12-14\ng: 0o17\nh: 1_024\ni: off\n"
    assert yaml.load(text, Loader=render_chart.HelmLoader) == {
        "a": True,
        "b": "y",
        "c": 1e-05,
        "d": 8.0,
        "e": "1:20",
        "f": "2001-12-14",
        "g": 15,
        "h": 1024,
        "i": False,
    }
    dumped = yaml.dump(["y", "1e-05", "08", "on", 1e-05], Dumper=render_chart.HelmDumper)
    assert yaml.load(dumped, Loader=render_chart.HelmLoader) == ["y", "1e-05", "08", "on", 1e-05]
