"""mover's CRDs: where they are (an installed wheel, or a source checkout) and as objects."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from mover.errors import MoverError
from mover_k8s import api
from mover_k8s.k8s.types import Obj

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable


def crds_dir() -> Traversable:
    """Where mover's CRDs are: mover_k8s/crds in an installed wheel (setup.py copies them there
    from the Helm chart's crds/ when it builds one), else the chart's crds/ of the source
    checkout this module runs from (an editable install): agent/chart/crds, their only copy."""
    packaged = resources.files("mover_k8s") / "crds"
    if packaged.is_dir():
        return packaged
    source = Path(__file__).resolve().parents[2] / "chart" / "crds"
    if source.is_dir():
        return source
    raise MoverError(
        f"mover's CRDs are missing: neither {packaged} (an installed wheel) nor {source} (a source "
        "checkout) exists; reinstall mover from a wheel built with setup.py, which packages "
        "agent/chart/crds"
    )


def load_crds() -> list[Obj]:
    """The CRDs as objects."""
    import yaml

    found = crds_dir()
    return [dict(yaml.safe_load((found / f"{rt.plural}.yaml").read_text())) for rt in api.OURS]
