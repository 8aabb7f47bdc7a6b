"""The product's rooms stay small (issue 16): no module of mover or mover_k8s over 600 lines
and no function over 100 (a nested function counts inside its parent), generated code aside.
ruff's size checks (pyproject.toml) bound branches, statements and arguments; this bounds what
they do not see, such as long literals and docstrings."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = [ROOT / "mover", ROOT / "agent" / "mover_k8s"]
MAX_MODULE, MAX_FUNCTION = 600, 100


def sources() -> list[Path]:
    return sorted(
        p for package in PACKAGES for p in package.rglob("*.py") if not p.name.endswith("_pb2.py")
    )


def test_no_module_is_over_600_lines() -> None:
    found = sources()
    assert len(found) > 100  # the packages were found
    long = {
        str(p.relative_to(ROOT)): n
        for p in found
        if (n := len(p.read_text().splitlines())) > MAX_MODULE
    }
    assert long == {}


def test_no_function_is_over_100_lines() -> None:
    long = {}
    for path in sources():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > MAX_FUNCTION:
                    long[f"{path.relative_to(ROOT)}:{node.lineno} {node.name}"] = lines
    assert long == {}
