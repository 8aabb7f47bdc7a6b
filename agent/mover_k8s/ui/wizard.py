"""The restore wizard: a form becomes a Restore spec, and a preview says what that Restore
would create, skip and change before anything is written.

The preview runs the controller's own planning (mover_k8s.restore_plan: order, stripping,
skips, mappings, Service addresses, namespace references, then the transforms) on the objects
the Backup captured, read back from its repository with the user's rights, and looks each
planned object up in the cluster (with the user's rights too): there, it is skipped
(`existingResourcePolicy: skip`) or replaced (`update`), and the fields that differ are listed;
absent, it is created. What the preview cannot know is said, not guessed: an object the user
may not read shows as "unknown". The controller checks everything again when the Restore runs
(its checks are the authority; the preview is advice to a person).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from mover import api as mover_api
from mover.errors import MoverError, UsageError
from mover_k8s import api, transforms
from mover_k8s.capture import cluster_id
from mover_k8s.diff import compare, normalise
from mover_k8s.errors import KubeError, NotFound, SpecError
from mover_k8s.k8s.client import Kube, Obj
from mover_k8s.restore_plan import (
    Filters,
    Options,
    check_mappings,
    cluster_ips_of,
    fidelity_report,
    make_plan,
)
from mover_k8s.ui import views
from mover_k8s.ui.access import RESTORE_INTO, Session

CHANGES_SHOWN = 12  # fields listed per changed object


@dataclass
class Form:
    """The wizard's fields, as posted (and shown again on the preview page)."""

    backup: str
    name: str = ""
    mode: str = "full"
    existing: str = "skip"
    namespaces: dict[str, str] = field(default_factory=dict)  # captured -> target
    classes: dict[str, str] = field(default_factory=dict)
    transforms: str = ""  # YAML or JSON text
    preserve_node_ports: bool = False
    rewrite_references: bool = False

    @classmethod
    def parse(cls, fields: dict[str, str]) -> Form:
        form = cls(
            backup=fields.get("backup", "").strip(),
            name=fields.get("name", "").strip(),
            mode=fields.get("mode", "full"),
            existing=fields.get("existing", "skip"),
            transforms=fields.get("transforms", ""),
            preserve_node_ports=fields.get("preserveNodePorts") == "on",
            rewrite_references=fields.get("rewriteNamespaceReferences") == "on",
        )
        for key, value in fields.items():
            if key.startswith("ns:"):
                form.namespaces[key[3:]] = value.strip()
            elif key.startswith("sc:"):
                form.classes[key[3:]] = value.strip()
        return form

    def spec(self) -> Obj:
        """The Restore spec; UsageError naming the field when the form is wrong."""
        if self.mode not in api.MODES:
            raise UsageError(f"mode {self.mode!r} is not one of {', '.join(api.MODES)}")
        if self.existing not in ("skip", "update"):
            raise UsageError(f"existing objects: {self.existing!r} is not skip or update")
        spec: Obj = {
            "backup": self.backup,
            "mode": self.mode,
            "existingResourcePolicy": self.existing,
            "namespaceMapping": {k: v for k, v in self.namespaces.items() if v and v != k},
            "storageClassMapping": {k: v for k, v in self.classes.items() if v and v != k},
        }
        rules = parse_transforms(self.transforms)
        if rules:
            spec["transforms"] = rules
        if self.preserve_node_ports:
            spec["preserveNodePorts"] = True
        if self.rewrite_references:
            spec["rewriteNamespaceReferences"] = True
        return spec


def parse_transforms(text: str) -> list[Any]:
    """Transform rules from the form's text, as `--transform FILE` reads them: a list, or
    `transforms: [...]`; checked (transforms.parse_rules)."""
    import yaml

    if not text.strip():
        return []
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise UsageError(f"transforms: not YAML or JSON: {str(exc).splitlines()[0]}") from None
    if isinstance(data, dict) and set(data) == {"transforms"}:
        data = data["transforms"]
    if not isinstance(data, list):
        raise UsageError("transforms: write a list of rules (or transforms: [rules])")
    try:
        json.dumps(data)
        transforms.parse_rules(data, "transforms")
    except (TypeError, ValueError):
        raise UsageError("transforms: a value JSON cannot hold (quote dates)") from None
    except SpecError as exc:
        raise UsageError(str(exc)) from None
    return data


def target_namespaces(spec: Obj, captured: list[str]) -> list[str]:
    mapping = spec.get("namespaceMapping") or {}
    return sorted({str(mapping.get(n, n)) for n in captured})


def _where(obj: Obj) -> Obj:
    meta = obj.get("metadata") or {}
    return {
        "kind": obj.get("kind", ""),
        "namespace": meta.get("namespace", ""),
        "name": meta.get("name", ""),
    }


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True) if value is not None else "(absent)"
    return text if len(text) <= 80 else text[:79] + "…"


def preview(session: Session, backup: Obj, spec: Obj) -> Obj:
    """What a Restore of `backup` with `spec` would do: {"create", "skip", "exists", "replace",
    "unknown", "volumes", "fidelity", "forbidden", "error"}; "error" (a string) instead of a
    plan when the spec cannot apply (a mapping the backup does not hold, a transform that does
    not apply...), as the controller would fail the Restore."""
    result: Obj = {
        "create": [],
        "skip": [],
        "exists": [],
        "replace": [],
        "unknown": [],
        "volumes": [],
        "fidelity": {},
        "forbidden": [],
        "error": "",
    }
    try:
        manifest, doc = views.read_backup(session, backup)
        captured = list(doc.get("namespaces") or [])
        namespaces = dict(spec.get("namespaceMapping") or {})
        check_mappings(namespaces, captured)
        objects: list[Obj] = list(doc.get("objects") or [])
        mode = str(spec["mode"])
        actor = session.actor
        rules = transforms.parse_rules(spec.get("transforms"), "spec.transforms")
        transform = None
        if rules and mode != "data-only":
            plurals: dict[tuple[str, str], str] = {}
            if any(rule.resource is not None for rule in rules):
                served = [(rt.group, rt.kind, rt.plural) for rt in actor.discover()]
                plurals = transforms.plurals_of(objects, served)
            transform = transforms.Transforms(tuple(rules), plurals)
        plan = make_plan(
            objects,
            list(manifest.get("volumes") or []),
            mode,
            Filters.of(spec),
            namespaces,
            dict(spec.get("storageClassMapping") or {}),
            _options(actor, spec, doc, mode),
            transform,
        )
    except MoverError as exc:  # a bad spec (SpecError, UsageError), the API, the repository
        result["error"] = str(exc)
        return result
    result["forbidden"] = [
        n for n in target_namespaces(spec, captured) if not session.may(RESTORE_INTO, n)
    ]
    policy = spec.get("existingResourcePolicy") or "skip"
    for step in plan.steps:
        entry = _where(step.prepared)
        if step.skip:
            result["skip"].append({**_where(step.original), "reason": step.skip})
            continue
        entry["transformed"] = step.transformed
        entry["dropped"] = len(step.dropped)
        entry["references"] = len(step.references)
        existing, why = _existing(actor, step.prepared)
        if why:
            result["unknown"].append({**entry, "reason": why})
        elif existing is None:
            result["create"].append(entry)
        else:
            changes = compare(normalise(step.prepared), normalise(existing))
            entry["changes"] = [
                {"path": c.path, "backup": _short(c.desired), "cluster": _short(c.live)}
                for c in changes[:CHANGES_SHOWN]
            ]
            entry["changeCount"] = len(changes)
            result["replace" if policy == "update" else "exists"].append(entry)
    for volume in plan.volumes:
        ns = str(namespaces.get(volume.get("namespace", ""), volume.get("namespace", "")))
        claim = str(volume.get("pvc", ""))
        where = "a new claim made by this restore"
        if mode == "data-only":
            try:
                found = actor.find(api.PVC, ns, claim)
            except KubeError as exc:
                found, where = None, f"unknown: {exc}"
            else:
                where = "the existing claim" if found else "no such claim here: this volume fails"
        result["volumes"].append(
            {
                "namespace": ns,
                "pvc": claim,
                "size": mover_api.format_size(int(volume.get("size") or 0)),
                "into": where,
            }
        )
    result["fidelity"] = fidelity_report(plan)
    return result


def _options(kube: Kube, spec: Obj, doc: Obj, mode: str) -> Options:
    """As the controller decides (restores.py `_options`): whether the backup was captured on
    this cluster, and then the cluster IPs in use. Unknown (not readable) counts as another
    cluster, so the preview may show a kept clusterIP as dropped; the Restore decides."""
    recorded = str(doc.get("clusterId") or "")
    try:
        same = mode != "data-only" and bool(recorded) and recorded == cluster_id(kube)
        used = cluster_ips_of(kube.list(api.SERVICE)) if same else {}
    except KubeError:
        same, used = False, {}
    return Options.of(spec, same, used)


def _existing(kube: Kube, obj: Obj) -> tuple[Obj | None, str]:
    """(the object in the cluster or None, "" ) or (None, why it cannot be known)."""
    meta = obj.get("metadata") or {}
    try:
        rt = kube.resource_for(str(obj.get("apiVersion") or ""), str(obj.get("kind") or ""))
    except NotFound:
        return None, ""  # a kind not served yet: its CRD is restored first
    except KubeError as exc:
        return None, f"cannot discover its kind: {exc}"
    try:
        return kube.find(rt, meta.get("namespace") if rt.namespaced else None, meta["name"]), ""
    except KubeError as exc:
        if exc.status == 403:
            return None, "you may not read it"
        return None, str(exc)


def create_restore(session: Session, mover_namespace: str, name: str, spec: Obj) -> Obj:
    """Make the Restore, with the user's own rights."""
    body = {
        "apiVersion": api.API_VERSION,
        "kind": "Restore",
        "metadata": {
            "name": name,
            "namespace": mover_namespace,
            "annotations": {REQUESTED_BY: session.user.name},
        },
        "spec": spec,
    }
    return session.actor.create(api.RESTORE, body)


REQUESTED_BY = f"{api.GROUP}/requested-by"
