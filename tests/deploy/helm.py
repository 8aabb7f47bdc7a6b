"""The chart's tests render it with real helm: the pinned version that scripts/get_helm.sh
installs (.ci/run does), found as $MOVER_HELM, else `helm` on PATH.

Without helm a test that needs it skips, saying how to get it; under CI=true it fails instead:
CI must never pass without having rendered the chart. Renders are cached per values, namespace
and release, so the audit's hundreds of cases run helm a dozen times.
"""

from __future__ import annotations

import copy
import functools
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.kube_schema import ROOT

CHART = ROOT / "agent" / "chart"
HELM_VERSION = "v3.17.3"  # scripts/get_helm.sh's
GET_HELM = "bash scripts/get_helm.sh DIR && export MOVER_HELM=DIR/helm"

Obj = dict[str, Any]


def helm_binary() -> str | None:
    """$MOVER_HELM if set (a missing file there is an error, not a skip), else helm on PATH."""
    configured = os.environ.get("MOVER_HELM")
    if configured:
        assert Path(configured).is_file(), f"MOVER_HELM={configured}: no such file"
        return configured
    return shutil.which("helm")


def helm() -> str:
    """helm, or skip the calling test (fail it under CI=true) with how to install it."""
    found = helm_binary()
    if found is None:
        message = f"helm not found ($MOVER_HELM unset, no helm on PATH): {GET_HELM}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true: {message}", pytrace=False)
        pytest.skip(message)
    return found


def run_helm(*args: str) -> str:
    """helm's output for ARGS; a failure fails the test with helm's error."""
    # HELM_* state directories in a temporary place: helm template reads no repository, but
    # it would create ~/.cache/helm and ~/.config/helm otherwise.
    env = {**os.environ, "HELM_CACHE_HOME": "/tmp/mover-helm/cache"}
    env |= {"HELM_CONFIG_HOME": "/tmp/mover-helm/config", "HELM_DATA_HOME": "/tmp/mover-helm/data"}
    proc = subprocess.run([helm(), *args], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, f"helm {' '.join(args)}: {proc.stderr}"
    return proc.stdout


def with_values(values: str | None, *args: str) -> str:
    """run_helm(ARGS) with a values file of this text appended (-f), unless None."""
    if values is None:
        return run_helm(*args)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "values.yaml"
        path.write_text(values)
        return run_helm(*args, "-f", str(path))


@functools.cache
def _render(values: str | None, namespace: str, release: str, crds: bool) -> tuple[Obj, ...]:
    args = ["template", release, str(CHART), "-n", namespace, *(["--include-crds"] * crds)]
    return tuple(doc for doc in yaml.safe_load_all(with_values(values, *args)) if doc)


def render(
    values: str | None = None,
    namespace: str = "mover-system",
    release: str = "mover",
    *,
    crds: bool = False,
) -> list[Obj]:
    """`helm template RELEASE agent/chart -n NAMESPACE` with a values file of this text (None:
    the chart's defaults), as objects: the templates, and the CRDs too with crds=True
    (--include-crds). Each call gets its own copy of the cached render."""
    return copy.deepcopy(list(_render(values, namespace, release, crds)))
