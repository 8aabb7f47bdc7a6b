"""The CRDs: valid apiextensions v1 documents with schemas, the status subresource, printer
columns and conditions in the usual form; served once installed."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from mover.errors import MoverError
from mover_k8s import api
from mover_k8s.cli import crds
from mover_k8s.cli.crds import crds_dir, load_crds

from .conftest import SYSTEM, Env

CONDITION_FIELDS = {"type", "status", "reason", "message", "lastTransitionTime"}


def version_of(crd: dict[str, Any]) -> dict[str, Any]:
    versions = crd["spec"]["versions"]
    assert len(versions) == 1
    version: dict[str, Any] = versions[0]
    return version


@pytest.mark.parametrize("rt", api.OURS, ids=lambda rt: rt.kind)
def test_crd_document(rt: api.ResourceType) -> None:
    crd = next(c for c in load_crds() if c["spec"]["names"]["kind"] == rt.kind)
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    assert crd["metadata"]["name"] == f"{rt.plural}.{api.GROUP}"
    assert crd["spec"]["group"] == api.GROUP and crd["spec"]["scope"] == "Namespaced"
    assert crd["spec"]["names"]["plural"] == rt.plural
    version = version_of(crd)
    assert version["name"] == api.VERSION and version["served"] and version["storage"]
    assert version["subresources"] == {"status": {}}
    columns = {c["name"]: c for c in version["additionalPrinterColumns"]}
    assert "Age" in columns and all(c["jsonPath"].startswith(".") for c in columns.values())
    schema = version["schema"]["openAPIV3Schema"]
    assert schema["type"] == "object" and "spec" in schema["required"]
    spec = schema["properties"]["spec"]
    assert spec["required"] and set(spec["required"]) <= set(spec["properties"])
    conditions = schema["properties"]["status"]["properties"]["conditions"]
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    assert set(conditions["items"]["required"]) == CONDITION_FIELDS
    assert conditions["items"]["properties"]["status"]["enum"] == ["True", "False", "Unknown"]


def test_restore_modes_and_work_item_progress_are_in_the_schemas() -> None:
    crds = {
        c["spec"]["names"]["kind"]: version_of(c)["schema"]["openAPIV3Schema"] for c in load_crds()
    }
    mode = crds["Restore"]["properties"]["spec"]["properties"]["mode"]
    assert tuple(mode["enum"]) == api.MODES and mode["default"] == "full"
    for kind in ("VolumeBackup", "VolumeRestore"):
        progress = crds[kind]["properties"]["status"]["properties"]["progress"]["properties"]
        assert {"bytesDone", "bytesTotal", "bytesPerSecond", "etaSeconds"} <= set(progress)
        assert crds[kind]["properties"]["spec"]["properties"]["cancel"]["type"] == "boolean"


CHART_CRDS = Path(__file__).resolve().parents[2] / "agent" / "chart" / "crds"


def test_a_source_checkout_reads_the_charts_crds() -> None:
    """The Helm chart's crds/ is the only copy; a wheel carries it as mover_k8s/crds (setup.py,
    tests/deploy/test_packaging.py), a source checkout reads it in place."""
    assert Path(str(crds_dir())) == CHART_CRDS
    assert load_crds() == [
        yaml.safe_load((CHART_CRDS / f"{rt.plural}.yaml").read_text()) for rt in api.OURS
    ]
    assert len(list(CHART_CRDS.glob("*.yaml"))) == len(api.OURS)


def test_an_installed_wheel_reads_its_packaged_crds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "crds").mkdir()
    monkeypatch.setattr(crds, "resources", SimpleNamespace(files=lambda package: tmp_path))
    assert crds_dir() == tmp_path / "crds"


def test_missing_crds_say_where_they_were_looked_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = SimpleNamespace(files=lambda package: tmp_path / "site")
    monkeypatch.setattr(crds, "resources", site)
    monkeypatch.setattr(crds, "__file__", str(tmp_path / "src" / "mover_k8s" / "cli" / "crds.py"))
    with pytest.raises(MoverError, match="mover's CRDs are missing") as found:
        crds_dir()
    assert str(tmp_path / "site" / "crds") in str(found.value)
    assert str(tmp_path / "src" / "chart" / "crds") in str(found.value)


def test_installed_crds_are_served(env: Env) -> None:
    served = {(rt.group, rt.kind): rt for rt in env.kube.discover(refresh=True)}
    for rt in api.OURS:
        found = served[(api.GROUP, rt.kind)]
        assert found.namespaced and "status" in found.subresources
    repository = env.kube.get(api.REPOSITORY, SYSTEM, "default")
    assert repository["spec"]["passwordSecretRef"]["name"] == "default-password"


def structural_problems(node: Any, path: str) -> list[str]:
    """What an API server would refuse in a structural schema: a node without a type, a
    default of the wrong type, an enum value of the wrong type."""
    problems = []
    kinds = {"object": dict, "array": list, "string": str, "integer": int, "boolean": bool}
    if "type" not in node and not node.get("x-kubernetes-preserve-unknown-fields"):
        problems.append(f"{path}: no type")
    expected = kinds.get(node.get("type", ""), object)
    if "default" in node and not isinstance(node["default"], expected):
        problems.append(f"{path}: default {node['default']!r} is not {node['type']}")
    for value in node.get("enum") or []:
        if not isinstance(value, expected):
            problems.append(f"{path}: enum value {value!r} is not {node['type']}")
    for name, child in (node.get("properties") or {}).items():
        problems += structural_problems(child, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        problems += structural_problems(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        problems += structural_problems(node["additionalProperties"], f"{path}{{}}")
    return problems


def test_schemas_are_structural() -> None:
    problems = [
        problem
        for crd in load_crds()
        for problem in structural_problems(
            version_of(crd)["schema"]["openAPIV3Schema"], crd["spec"]["names"]["kind"]
        )
    ]
    assert problems == []
