"""Drift: what a Backup captured running (the live objects) against what git declares (a
directory of manifests). Pure functions over JSON objects, except `load_desired`, which reads
the directory.

Rules (docs/kubernetes.md, "Drift"):

- Objects are matched by API group, kind, namespace and name (not by version: git may write
  `apps/v1beta2` where the cluster serves `apps/v1`). A desired object without a namespace
  takes `default_namespace` (the Backup's one captured namespace, or --default-namespace) when
  its kind is namespaced in the capture.
- Ignored on both sides: what the cluster assigns (metadata uid, resourceVersion,
  creationTimestamp, generation, managedFields, selfLink, ownerReferences, status, and the
  fields a restore strips: a Service's clusterIP(s), a Pod's nodeName, a PVC's volumeName and
  data source, binding annotations; restore_plan.strip), and kubectl's last-applied annotation.
- Live objects that nothing in git is expected to declare are not "only in the cluster" but
  listed as `ignored` with the reason a restore skips them (objects a controller recreates,
  Endpoints, kube-root-ca.crt, the default ServiceAccount, tokens, Leases, PVs).
- Defaulted, not drift: a field present live but absent in the desired manifest (the API
  server, an admission webhook or a controller filled it in). Drift: a field present in the
  desired manifest whose live value differs, or which is absent live.
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


def load_desired(directory: Path) -> list[Obj]:
    """Every object in the YAML (or JSON) files under `directory`, recursively: multi-document
    files, `kind: List` expanded, empty documents skipped. Raises UsageError naming the file for
    anything that is not a Kubernetes object."""
    if not directory.is_dir():
        raise UsageError(f"--desired {directory}: no such directory")
    objects: list[Obj] = []
    files = sorted(
        p
        for p in directory.rglob("*")
        if p.is_file() and p.suffix in MANIFEST_SUFFIXES and ".git" not in p.parts
    )
    for path in files:
        shown = path.relative_to(directory)
        try:
            docs = list(yaml.safe_load_all(path.read_text()))
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" line {mark.line + 1}" if mark is not None else ""
            problem = getattr(exc, "problem", None) or "cannot parse"
            raise UsageError(f"{shown}:{where}: not valid YAML: {problem}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"{shown}: cannot read: {exc}") from None
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
    if result.get("kind") == "Secret" and isinstance(result.get("stringData"), dict):
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
                if want not in (None, {}, []):  # an empty value in git is the same as none
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
    live: dict[Key, Obj] = {}
    for obj in live_objects:
        reason = skip_reason(obj, captured_uids, "full")
        if reason is not None:
            k = key_of(obj)
            report.ignored.append(Ignored(k[1], k[2], k[3], reason))
            continue
        live[key_of(obj)] = obj
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
