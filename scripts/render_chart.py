"""Render mover's Helm chart (agent/chart) without helm, as `helm template` would.

    python3 scripts/render_chart.py [CHART] [-f VALUES.yaml ...] [-n NAMESPACE] [--name RELEASE]

prints the CRDs (the chart's crds/) and the rendered templates as one YAML stream.

The chart's templates use a small subset of Go templates on purpose, so that this script and
`helm template` give the same objects and the chart can be checked where helm is not installed:

- `{{ PATH }}`: a scalar (string, number, boolean) as Go prints it;
- `{{ PATH | quote }}`: a scalar as a double-quoted string;
- `{{ toJson PATH }}`: any value as JSON (valid YAML in flow style: maps, lists, null);

where PATH is `.Values.a.b...`, `.Release.Name`, `.Release.Namespace`, `.Chart.Name`,
`.Chart.Version` or `.Chart.AppVersion`. Anything else between `{{ }}` is an error, and so is a
PATH that names no value (helm would print `<no value>`: a chart bug, caught here).

Values files are merged over values.yaml as helm merges them: maps key by key, anything else
replaced, and a null removes the key.

Exit codes: 0 rendered; 2 bad input (a missing file, invalid YAML, an unsupported construct,
a missing value), with one line on stderr.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CHART = ROOT / "agent" / "chart"

ACTION = re.compile(r"\{\{-?(.*?)-?\}\}", re.DOTALL)
PATH = r"\.[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*"
PLAIN = re.compile(rf"^\s*({PATH})\s*$")
QUOTED = re.compile(rf"^\s*({PATH})\s*\|\s*quote\s*$")
TO_JSON = re.compile(rf"^\s*toJson\s+({PATH})\s*$")


class RenderError(Exception):
    """The chart, a values file or a template cannot be rendered; the message says where."""


def merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Helm's values merge: maps merged key by key, other values replaced, null deletes."""
    merged = dict(base)
    for key, value in override.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _load_mapping(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise RenderError(f"{path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise RenderError(f"{path}: not valid YAML: {exc}".replace("\n", " ")) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise RenderError(f"{path}: must be a YAML mapping, not {type(data).__name__}")
    return data


def _lookup(scope: Mapping[str, Any], path: str, where: str) -> Any:
    value: Any = scope
    for part in path.lstrip(".").split("."):
        if not isinstance(value, Mapping) or part not in value:
            raise RenderError(f"{where}: {path} names no value")
        value = value[part]
    return value


def _scalar(value: Any, path: str, where: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, int | float | str):
        return str(value)
    raise RenderError(f"{where}: {path} is a {type(value).__name__}: write {{{{ toJson {path} }}}}")


def render_text(text: str, scope: Mapping[str, Any], where: str) -> str:
    """One template's text with every action replaced (the subset in the module docstring)."""

    def action(match: re.Match[str]) -> str:
        body = match.group(1)
        if found := PLAIN.match(body):
            path = found.group(1)
            return _scalar(_lookup(scope, path, where), path, where)
        if found := QUOTED.match(body):
            path = found.group(1)
            return json.dumps(_scalar(_lookup(scope, path, where), path, where))
        if found := TO_JSON.match(body):
            return json.dumps(_lookup(scope, found.group(1), where), sort_keys=True)
        raise RenderError(f"{where}: unsupported template action {match.group(0)!r}")

    return ACTION.sub(action, text)


def _documents(text: str, where: str) -> list[dict[str, Any]]:
    try:
        docs = list(yaml.safe_load_all(text))
    except yaml.YAMLError as exc:
        raise RenderError(f"{where}: renders to invalid YAML: {exc}".replace("\n", " ")) from None
    objects: list[dict[str, Any]] = []
    for doc in docs:
        if doc is None:
            continue
        if not isinstance(doc, dict) or "kind" not in doc or "apiVersion" not in doc:
            raise RenderError(f"{where}: a document is not a Kubernetes object")
        objects.append(doc)
    return objects


def render(
    chart: Path,
    values_files: list[Path] | None = None,
    namespace: str = "mover-system",
    release: str = "mover",
) -> list[dict[str, Any]]:
    """The chart's CRDs, then its templates in file-name order, as objects."""
    meta = _load_mapping(chart / "Chart.yaml")
    values = _load_mapping(chart / "values.yaml")
    for path in values_files or []:
        values = merge(values, _load_mapping(path))
    scope = {
        "Values": values,
        "Release": {"Name": release, "Namespace": namespace},
        "Chart": {
            "Name": meta.get("name"),
            "Version": meta.get("version"),
            "AppVersion": meta.get("appVersion"),
        },
    }
    objects: list[dict[str, Any]] = []
    for crd in sorted((chart / "crds").glob("*.yaml")):
        objects += _documents(crd.read_text(), str(crd))  # helm does not template crds/
    templates = sorted((chart / "templates").glob("*.yaml"))
    if not templates:
        raise RenderError(f"{chart}: no templates/*.yaml")
    for template in templates:
        objects += _documents(
            render_text(template.read_text(), scope, str(template)), str(template)
        )
    return objects


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("chart", nargs="?", type=Path, default=DEFAULT_CHART)
    parser.add_argument("-f", "--values", type=Path, action="append", default=[])
    parser.add_argument("-n", "--namespace", default="mover-system")
    parser.add_argument("--name", default="mover", help="the release name")
    args = parser.parse_args(argv)
    try:
        objects = render(args.chart, args.values, args.namespace, args.name)
    except RenderError as exc:
        print(f"render_chart: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(yaml.safe_dump_all(objects, sort_keys=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
