"""Validate manifests as the API server would, offline.

Built-in kinds are checked against the official `kubernetes` client's models (generated from
the Kubernetes OpenAPI spec): every field must exist on its model, every value must have the
field's type, and the model's required fields must be there (the client's own validation, by
deserializing into the model). mover's custom resources are checked against the OpenAPI schema
of their CRD with jsonschema. Kinds of other projects that the examples use (a Flux
Kustomization) are checked against a schema of the fields used, written from their docs.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]  # no stubs among the test dependencies
import kubernetes.client
import yaml

ROOT = Path(__file__).resolve().parents[2]
CRD_DIR = ROOT / "agent" / "chart" / "crds"  # the only copy (setup.py packages it)

BUILT_IN = {
    ("v1", "ServiceAccount"): "V1ServiceAccount",
    ("v1", "Namespace"): "V1Namespace",
    ("v1", "ConfigMap"): "V1ConfigMap",
    ("v1", "Service"): "V1Service",
    ("apps/v1", "Deployment"): "V1Deployment",
    ("apps/v1", "DaemonSet"): "V1DaemonSet",
    ("batch/v1", "Job"): "V1Job",
    ("rbac.authorization.k8s.io/v1", "ClusterRole"): "V1ClusterRole",
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"): "V1ClusterRoleBinding",
    ("rbac.authorization.k8s.io/v1", "Role"): "V1Role",
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): "V1RoleBinding",
    ("apiextensions.k8s.io/v1", "CustomResourceDefinition"): "V1CustomResourceDefinition",
}

# Flux's kustomize-controller Kustomization (kustomize.toolkit.fluxcd.io/v1): the fields the
# examples use, as its API reference documents them; unknown fields are rejected as a typo.
FLUX_KUSTOMIZATION: dict[str, Any] = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "kustomize.toolkit.fluxcd.io/v1"},
        "kind": {"const": "Kustomization"},
        "metadata": {"type": "object", "required": ["name"]},
        "spec": {
            "type": "object",
            "required": ["interval", "prune", "sourceRef"],
            "additionalProperties": False,
            "properties": {
                "interval": {"type": "string", "pattern": r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"},
                "retryInterval": {"type": "string"},
                "timeout": {"type": "string"},
                "path": {"type": "string"},
                "prune": {"type": "boolean"},
                "wait": {"type": "boolean"},
                "force": {"type": "boolean"},
                "targetNamespace": {"type": "string"},
                "sourceRef": {
                    "type": "object",
                    "required": ["kind", "name"],
                    "additionalProperties": False,
                    "properties": {
                        "kind": {"enum": ["OCIRepository", "GitRepository", "Bucket"]},
                        "name": {"type": "string"},
                        "namespace": {"type": "string"},
                    },
                },
                "dependsOn": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["name"],
                        "additionalProperties": False,
                        "properties": {"name": {"type": "string"}, "namespace": {"type": "string"}},
                    },
                },
                "postBuild": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "substitute": {
                            "type": "object",
                            "additionalProperties": {"type": "string"},
                        }
                    },
                },
            },
        },
    },
}

_LIST = re.compile(r"^list\[(.+)\]$", re.IGNORECASE)
_DICT = re.compile(r"^dict\((?:str), (.+)\)$|^dict\[str, (.+)\]$", re.IGNORECASE)


def crd_schemas(crd_dir: Path = CRD_DIR) -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> the openAPIV3Schema of each served version of our CRDs."""
    schemas: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted(crd_dir.glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            if version.get("served"):
                schemas[(f"{group}/{version['name']}", kind)] = version["schema"]["openAPIV3Schema"]
    return schemas


def _check(value: Any, type_name: str, where: str, errors: list[str]) -> None:
    if value is None:
        return  # null means unset, as for the API server
    if found := _LIST.match(type_name):
        if not isinstance(value, list):
            errors.append(f"{where}: expected a list, got {type(value).__name__}")
            return
        for i, item in enumerate(value):
            _check(item, found.group(1), f"{where}[{i}]", errors)
        return
    if found := _DICT.match(type_name):
        if not isinstance(value, dict):
            errors.append(f"{where}: expected a map, got {type(value).__name__}")
            return
        for key, item in value.items():
            if not isinstance(key, str):
                errors.append(f"{where}: key {key!r} is not a string")
            _check(item, found.group(1) or found.group(2), f"{where}.{key}", errors)
        return
    simple: dict[str, tuple[type, ...]] = {
        "str": (str,),
        "int": (int,),
        "float": (int, float),
        "bool": (bool,),
        "datetime": (str,),
        "date": (str,),
    }
    if type_name == "object":
        return
    if type_name in simple:
        ok = isinstance(value, simple[type_name])
        if type_name in ("int", "float") and isinstance(value, bool):
            ok = False
        if not ok:
            errors.append(f"{where}: expected {type_name}, got {type(value).__name__} {value!r}")
        return
    model = getattr(kubernetes.client, type_name)
    if not isinstance(value, dict):
        errors.append(f"{where}: expected a {type_name} object, got {type(value).__name__}")
        return
    fields = {json_name: attr for attr, json_name in model.attribute_map.items()}
    for key, item in value.items():
        if key not in fields:
            errors.append(f"{where}: unknown field {key!r} in {type_name}")
            continue
        _check(item, model.openapi_types[fields[key]], f"{where}.{key}", errors)


def _selector_matches(obj: dict[str, Any], errors: list[str]) -> None:
    spec = obj.get("spec") or {}
    wanted = (spec.get("selector") or {}).get("matchLabels") or {}
    labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
    for key, value in wanted.items():
        if labels.get(key) != value:
            errors.append(f"{obj['kind']}: selector {key}={value} does not match its template")


def _pruned(value: Any, schema: dict[str, Any], where: str, errors: list[str]) -> None:
    """Fields the schema does not declare: the API server drops them silently (pruning), so a
    typo would be lost; here it is an error."""
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return
    if isinstance(value, dict) and "properties" in schema:
        for key, item in value.items():
            if key not in schema["properties"]:
                errors.append(f"{where}.{key}: unknown field (the API server would drop it)")
            else:
                _pruned(item, schema["properties"][key], f"{where}.{key}", errors)
    elif isinstance(value, dict) and isinstance(schema.get("additionalProperties"), dict):
        for key, item in value.items():
            _pruned(item, schema["additionalProperties"], f"{where}.{key}", errors)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            _pruned(item, schema["items"], f"{where}[{i}]", errors)


def validate(obj: dict[str, Any], schemas: dict[tuple[str, str], dict[str, Any]]) -> list[str]:
    """Every reason the API server would refuse `obj` that this check knows; [] if none."""
    api_version, kind = obj.get("apiVersion", ""), obj.get("kind", "")
    name = (obj.get("metadata") or {}).get("name", "?")
    where = f"{kind}/{name}"
    errors: list[str] = []
    if (api_version, kind) in BUILT_IN:
        model_name = BUILT_IN[(api_version, kind)]
        _check(obj, model_name, where, errors)
        if not errors:
            try:  # the client's own checks: required fields, enums it knows
                kubernetes.client.ApiClient()._ApiClient__deserialize(obj, model_name)  # type: ignore[attr-defined]
            except ValueError as exc:
                errors.append(f"{where}: {exc}")
        if kind in ("Deployment", "DaemonSet"):
            _selector_matches(obj, errors)
    elif (api_version, kind) in schemas:
        validator = jsonschema.Draft7Validator(schemas[(api_version, kind)])
        errors += [f"{where}: {e.json_path}: {e.message}" for e in validator.iter_errors(obj)]
        body = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata")}
        _pruned(body, schemas[(api_version, kind)], where, errors)
    elif (api_version, kind) == ("kustomize.toolkit.fluxcd.io/v1", "Kustomization"):
        validator = jsonschema.Draft7Validator(FLUX_KUSTOMIZATION)
        errors += [f"{where}: {e.json_path}: {e.message}" for e in validator.iter_errors(obj)]
    else:
        errors.append(f"{where}: no schema known for {api_version} {kind}")
    return errors


def validate_all(objects: Iterable[dict[str, Any]]) -> list[str]:
    schemas = crd_schemas()
    return [error for obj in objects for error in validate(obj, schemas)]
