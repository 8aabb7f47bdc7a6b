"""The layering the design fixes: mover never imports the Kubernetes side or its client, and
only mover_k8s.k8s imports `kubernetes`."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def imported(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return {name.split(".")[0] for name in names}


def test_mover_never_imports_the_kubernetes_side() -> None:
    offenders = [
        str(p.relative_to(ROOT))
        for p in (ROOT / "mover").rglob("*.py")
        if imported(p) & {"mover_k8s", "kubernetes", "kmock"}
    ]
    assert offenders == []


def test_only_the_k8s_layer_imports_the_client() -> None:
    package = ROOT / "agent" / "mover_k8s"
    importers = sorted(
        str(p.relative_to(package)) for p in package.rglob("*.py") if "kubernetes" in imported(p)
    )
    assert importers == ["k8s/client.py"]
