"""The CRDs have one copy, the Helm chart's (agent/chart/crds): setup.py's build_py copies it
into the built mover_k8s/crds, so that a wheel carries it for `mover agent crds`, and an sdist
carries it for the wheel built from that."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from setuptools import Distribution

from tests.deploy.kube_schema import CRD_DIR, ROOT


def setup_module_() -> ModuleType:
    """setup.py as a module: it builds nothing unless run as __main__."""
    spec = importlib.util.spec_from_file_location("mover_setup", ROOT / "setup.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build_py(build_lib: Path, editable: bool = False) -> Any:
    """setup.py's build_py, ready to run into BUILD_LIB."""
    command = setup_module_().build_py(Distribution({"name": "t", "packages": []}))
    command.ensure_finalized()
    command.build_lib = str(build_lib)
    command.editable_mode = editable
    return command


def test_the_crds_have_one_copy() -> None:
    files = sorted(p.name for p in CRD_DIR.glob("*.yaml"))
    assert len(files) == 6
    assert not (ROOT / "agent" / "mover_k8s" / "crds").exists()
    # No other CustomResourceDefinition anywhere under agent/ (examples, the chart's templates).
    kind = re.compile(r"^kind:\s*CustomResourceDefinition\b", re.MULTILINE)
    others = [p for p in (ROOT / "agent").rglob("*.yaml") if p.parent != CRD_DIR]
    assert others and not [p for p in others if kind.search(p.read_text())]


def test_build_py_copies_the_chart_crds_into_the_package(tmp_path: Path) -> None:
    command = build_py(tmp_path)
    command.run()
    built = tmp_path / "mover_k8s" / "crds"
    assert sorted(p.name for p in built.iterdir()) == sorted(p.name for p in CRD_DIR.glob("*.yaml"))
    for path in CRD_DIR.glob("*.yaml"):
        assert (built / path.name).read_bytes() == path.read_bytes()
    assert set(map(str, built.iterdir())) <= set(command.get_outputs())


def test_an_editable_build_copies_nothing(tmp_path: Path) -> None:
    """An editable install reads agent/chart/crds in place (mover_k8s.cli.crds_dir)."""
    command = build_py(tmp_path, editable=True)
    command.run()
    assert not (tmp_path / "mover_k8s").exists()
    assert set(command.get_output_mapping().values()) >= {str(p) for p in CRD_DIR.glob("*.yaml")}


def test_an_sdist_carries_the_chart_crds(tmp_path: Path) -> None:
    sources = build_py(tmp_path).get_source_files()
    assert {f"agent/chart/crds/{p.name}" for p in CRD_DIR.glob("*.yaml")} <= set(sources)


def test_a_build_without_the_crds_says_where_they_should_be(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = setup_module_()
    monkeypatch.setattr(module, "ROOT", tmp_path)
    with pytest.raises(FileNotFoundError, match="agent/chart/crds"):
        module.crd_sources()


@pytest.mark.slow
def test_the_wheel_carries_the_crds_and_mover_reads_them_there(tmp_path: Path) -> None:
    """`pip wheel .` on a copy of the sources (pip fetches the build requirements); the wheel's
    mover_k8s/crds are the chart's, and mover_k8s imported from the unpacked wheel reads them
    there, not from a source checkout."""
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    # Cython's output (ext/cdc.c, ext/index_run.c) and built modules stay behind, as in git.
    ignore = shutil.ignore_patterns("__pycache__", "*.so", "cdc.c", "index_run.c")
    for tree in ("ext", "mover", "agent/mover_k8s", "agent/chart/crds"):
        shutil.copytree(ROOT / tree, source / tree, ignore=ignore)
    wheels = tmp_path / "wheels"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(wheels), str(source)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (wheel,) = wheels.glob("mover-*.whl")
    unpacked = tmp_path / "unpacked"
    with zipfile.ZipFile(wheel) as archive:
        for path in CRD_DIR.glob("*.yaml"):
            assert archive.read(f"mover_k8s/crds/{path.name}") == path.read_bytes()
        # The changed block tracking messages, with their types and their source.
        for name in (
            "snapshot_metadata_pb2.py",
            "snapshot_metadata_pb2.pyi",
            "snapshot_metadata.proto",
        ):
            cbt = ROOT / "agent" / "mover_k8s" / "cbt" / name
            assert archive.read(f"mover_k8s/cbt/{name}") == cbt.read_bytes()
        # `mover ui`'s templates and static files (package data).
        ui = ROOT / "agent" / "mover_k8s" / "ui"
        shipped = [*ui.glob("templates/*.html"), *ui.glob("static/*")]
        assert len(shipped) > 10
        for path in shipped:
            inside = f"mover_k8s/ui/{path.relative_to(ui).as_posix()}"
            assert archive.read(inside) == path.read_bytes(), inside
        archive.extractall(unpacked)
    code = "from mover_k8s import cli; print(cli.crds_dir(), len(cli.load_crds()))"
    found = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(unpacked)},
        cwd=tmp_path,
        timeout=120,
    )
    assert found.returncode == 0, found.stderr
    assert found.stdout.split() == [str(unpacked / "mover_k8s" / "crds"), "6"]
