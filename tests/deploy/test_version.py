"""One version: mover.__version__ (mover/__init__.py). pyproject.toml reads it, the chart's
Chart.yaml repeats it (helm needs a literal there) and the chart's image follows it; the docs
and examples name no other."""

from __future__ import annotations

import re
import tomllib

import yaml

import mover
from tests.deploy.helm import CHART, render
from tests.deploy.kube_schema import ROOT

# A reference to a release of mover: an image (mover:0.1.0, REGISTRY/mover:0.1.0) or a file
# name (mover-0.1.0-cp311-...whl).
RELEASE = re.compile(r"\bmover[:-]v?(\d+\.\d+\.\d+)(?![\d.]*\d)")


def test_pyproject_reads_the_version_from_mover() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in project["project"]
    assert "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "mover.__version__"}


def test_the_chart_is_the_version_of_mover() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["version"] == chart["appVersion"] == mover.__version__, (
        f"agent/chart/Chart.yaml: version and appVersion must be mover.__version__ "
        f"({mover.__version__})"
    )


def test_the_chart_runs_the_image_of_its_version() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["image"]["tag"] == "", "an empty tag is the chart's appVersion"
    images = {
        container["image"]
        for obj in render()
        if obj["kind"] in ("Deployment", "DaemonSet")
        for container in obj["spec"]["template"]["spec"]["containers"]
    }
    assert images == {f"mover:{mover.__version__}"}


def test_docs_and_examples_name_no_other_version() -> None:
    files = [
        ROOT / "Dockerfile",
        *ROOT.glob("*.md"),
        *(ROOT / "docs").rglob("*.md"),
        *(ROOT / "agent").rglob("*.md"),
        *(ROOT / "agent" / "examples").rglob("*.yaml"),
        *(CHART / "templates").rglob("*"),
        CHART / "values.yaml",
    ]
    found = {
        f"{path.relative_to(ROOT)}: {match.group(0)}"
        for path in files
        for match in RELEASE.finditer(path.read_text())
        if match.group(1) != mover.__version__
    }
    assert found == set()
    mentions = [p for p in files if RELEASE.search(p.read_text())]
    assert ROOT / "Dockerfile" in mentions and ROOT / "README.md" in mentions
