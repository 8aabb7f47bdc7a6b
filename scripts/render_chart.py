"""Render mover's Helm chart (agent/chart) without helm, as `helm template --include-crds` would.

    python3 scripts/render_chart.py [CHART] [-f VALUES.yaml ...] [-n NAMESPACE] [--name RELEASE]

prints the CRDs (the chart's crds/) and the rendered templates as one YAML stream.

The chart's templates use a small subset of Go templates on purpose, so that this script and
`helm template` give the same objects and the chart can be checked where helm is not installed:

- `{{ PATH }}`: a scalar (string, number, boolean) as Go prints it;
- `{{ PATH | quote }}`: a scalar as a double-quoted string;
- `{{ toJson PATH }}`: any value as JSON (valid YAML in flow style: maps, lists, null);
- `{{ if COND }}...{{ else }}...{{ end }}` (`else` optional), where COND is PATH, `not PATH`,
  `and PATH PATH...` or `or PATH PATH...`, true as Go's templates take it (false, 0, "", an
  empty list or map and null are false);
- `{{ range PATH }}...{{ end }}` over a list: inside, `.` is the item and `$` the top;

where PATH is `.Values.a.b...`, `.Release.Name`, `.Release.Namespace`, `.Chart.Name`,
`.Chart.Version` or `.Chart.AppVersion` (relative to `.`), `.` itself, or `$` / `$.Values...`
(from the top). `{{- ` and ` -}}` trim the whitespace before and after the action, as in Go.
Anything else between `{{ }}` is an error, and so is a PATH that names no value (helm would
print `<no value>`, and fail `helm lint --strict`: a chart bug, caught here), in a condition
or a range too.

Numbers print as helm prints them: helm reads every number of a values file as a float64, so
`{{ PATH }}` and `quote` give Go's `%v` of it (1000000 is `1e+06`, 2.0 is `2`) and `toJson`
gives Go's JSON of it (1000000, 0.00001). tests/deploy/test_helm.py compares the output with
real helm's.

YAML is read as helm and kubectl read it (sigs.k8s.io/yaml, YAML 1.1 as go-yaml v2 resolves
it), not as PyYAML's defaults: `y`/`n` are booleans, `1e-05`, `12e3` and `08` are numbers,
`1:20` and `2001-12-14` are strings (`HelmLoader`); the output quotes every string that helm
would read as something else (`HelmDumper`).

Values files are merged over values.yaml as helm merges them: maps key by key, anything else
replaced, and a null removes the key.

Exit codes: 0 rendered; 2 bad input (a missing file, invalid YAML, an unsupported construct,
a missing value), with one line on stderr.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar

import yaml

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CHART = ROOT / "agent" / "chart"

# An action, with Go's trim markers: `{{- ` trims the whitespace before it, ` -}}` after it.
ACTION = re.compile(r"\{\{(-\s)?(.*?)(\s-)?\}\}", re.DOTALL)
_NAME = r"\.[A-Za-z_][A-Za-z0-9_]*"
PATH = rf"(?:\$?(?:{_NAME})+|\$|\.)"
PLAIN = re.compile(rf"^\s*({PATH})\s*$")
QUOTED = re.compile(rf"^\s*({PATH})\s*\|\s*quote\s*$")
TO_JSON = re.compile(rf"^\s*toJson\s+({PATH})\s*$")
IF = re.compile(rf"^\s*if\s+(?:(not)\s+({PATH})|(and|or)((?:\s+{PATH}){{2,}})|({PATH}))\s*$")
RANGE = re.compile(rf"^\s*range\s+({PATH})\s*$")
ELSE = re.compile(r"^\s*else\s*$")
END = re.compile(r"^\s*end\s*$")


_STANDARD_TAGS = {f"tag:yaml.org,2002:{t}" for t in ("bool", "int", "float", "timestamp")}
_GO_BOOL = re.compile(
    r"^(?:y|Y|yes|Yes|YES|n|N|no|No|NO|true|True|TRUE|false|False|FALSE"
    r"|on|On|ON|off|Off|OFF)$"
)
_GO_TRUE = {"y", "Y", "yes", "Yes", "YES", "true", "True", "TRUE", "on", "On", "ON"}
# go-yaml v2 tries strconv.ParseInt(base 0), then a float, on any plain scalar that starts
# like a number, after dropping every `_`; these are the shapes those accept.
_GO_INT = re.compile(r"[-+]?(?:0[xX][0-9a-fA-F]+|0[oO][0-7]+|0[bB][01]+|0[0-7]*|[1-9][0-9]*)")
_GO_FLOAT = re.compile(r"[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?")
_GO_SPECIAL_FLOAT = re.compile(r"^(?:[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$")
_NUMBERISH = re.compile(r"^[-+.0-9][-+.0-9a-fA-FxXoO_]*$")
_NUMBER_TAG = "tag:mover.dev,2025:go-number"


def _go_scalar(text: str) -> int | float | str:
    """A plain scalar that starts like a number, as go-yaml v2 resolves it."""
    plain = text.replace("_", "")
    if _GO_INT.fullmatch(plain):
        sign = -1 if plain.startswith("-") else 1
        digits = plain.lstrip("+-")
        if digits[1:2] in ("x", "X", "o", "O", "b", "B"):
            value = sign * int(digits, 0)
        elif digits.startswith("0"):  # a leading 0 is octal, as in C
            value = sign * int(digits, 8)
        else:
            value = sign * int(digits)
        if -(2**63) <= value < 2**64:
            return value
    if _GO_FLOAT.fullmatch(plain):
        return float(plain)
    return text


def _resolvers_without_standard() -> dict[str, list[tuple[str, re.Pattern[str]]]]:
    return {
        first: [(tag, rx) for tag, rx in resolvers if tag not in _STANDARD_TAGS]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }


class HelmLoader(yaml.SafeLoader):  # type: ignore[misc]  # PyYAML ships no type stubs
    """PyYAML's safe loader with go-yaml v2's scalar resolution (helm's and kubectl's)."""

    yaml_implicit_resolvers: ClassVar = _resolvers_without_standard()


class HelmDumper(yaml.SafeDumper):  # type: ignore[misc]  # as above
    """Quotes a string whenever helm would read it, unquoted, as something else."""

    yaml_implicit_resolvers: ClassVar = _resolvers_without_standard()


for _cls in (HelmLoader, HelmDumper):
    _cls.add_implicit_resolver("tag:yaml.org,2002:bool", _GO_BOOL, list("yYnNtTfFoO"))
    _cls.add_implicit_resolver("tag:yaml.org,2002:float", _GO_SPECIAL_FLOAT, list("-+."))
    _cls.add_implicit_resolver(_NUMBER_TAG, _NUMBERISH, list("-+.0123456789"))


def _represent_number(dumper: yaml.SafeDumper, number: float) -> yaml.ScalarNode:
    # Plain, as Go's JSON prints it (PyYAML's 1.0e-05 would need an explicit tag here).
    if isinstance(number, float) and not math.isfinite(number):
        return dumper.represent_float(number)
    return dumper.represent_scalar(_NUMBER_TAG, go_json(number, "output"))


HelmDumper.add_representer(int, _represent_number)
HelmDumper.add_representer(float, _represent_number)
HelmLoader.add_constructor(
    "tag:yaml.org,2002:bool",
    lambda loader, node: loader.construct_scalar(node) in _GO_TRUE,
)
HelmLoader.add_constructor(
    _NUMBER_TAG, lambda loader, node: _go_scalar(loader.construct_scalar(node))
)


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
        data = yaml.load(path.read_text(), Loader=HelmLoader)
    except OSError as exc:
        raise RenderError(f"{path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise RenderError(f"{path}: not valid YAML: {exc}".replace("\n", " ")) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise RenderError(f"{path}: must be a YAML mapping, not {type(data).__name__}")
    return data


def _lookup(scope: Mapping[str, Any], path: str, where: str, dot: Any = None) -> Any:
    """PATH's value: from `dot` (the top, `scope`, outside a range), or from the top for `$`."""
    if path.startswith("$"):
        value: Any = scope
        path_rest = path[1:]
    else:
        value = scope if dot is None else dot
        path_rest = path
    if path_rest in ("", "."):
        return value
    for part in path_rest.lstrip(".").split("."):
        if not isinstance(value, Mapping) or part not in value:
            raise RenderError(f"{where}: {path} names no value")
        value = value[part]
    return value


def _digits(value: float) -> tuple[str, int]:
    """The shortest decimal digits that read back as `value` (as Go's and Python's float
    printing both find them) and the decimal point's position: 0.25 is ("25", 0)."""
    _, digits, exponent = Decimal(repr(abs(value))).normalize().as_tuple()
    assert isinstance(exponent, int)  # finite: the callers handle inf and nan
    text = "".join(map(str, digits))
    return text, len(text) + exponent


def _fixed(digits: str, point: int) -> str:
    if point <= 0:
        return "0." + "0" * -point + digits
    if point >= len(digits):
        return digits + "0" * (point - len(digits))
    return digits[:point] + "." + digits[point:]


def _exponent(digits: str, point: int, width: int) -> str:
    mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
    exp = point - 1
    return f"{mantissa}e{'-' if exp < 0 else '+'}{abs(exp):0{width}d}"


def go_number(value: float) -> str:
    """Go's `%v` of a float64 (strconv's shortest `%g`, exponent from 1e+06 and below 1e-04),
    which is how a helm template prints any number from a values file."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    sign = "-" if math.copysign(1.0, value) < 0 else ""
    if value == 0:
        return sign + "0"
    digits, point = _digits(value)
    if point - 1 < -4 or point - 1 >= 6:
        return sign + _exponent(digits, point, 2)
    return sign + _fixed(digits, point)


def go_json(value: Any, where: str) -> str:
    """Go's encoding/json of a helm value (sprig's toJson): keys sorted, numbers as float64,
    an exponent only below 1e-6 or from 1e21."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        number = float(value)
        if not math.isfinite(number):
            raise RenderError(f"{where}: {value} has no JSON form (helm renders it empty)")
        sign = "-" if math.copysign(1.0, number) < 0 else ""
        if number == 0:
            return sign + "0"
        digits, point = _digits(number)
        if abs(number) < 1e-6 or abs(number) >= 1e21:
            return sign + _exponent(digits, point, 1)
        return sign + _fixed(digits, point)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, Mapping):
        items = sorted((str(k), v) for k, v in value.items())
        return "{" + ",".join(f"{json.dumps(k)}:{go_json(v, where)}" for k, v in items) + "}"
    if isinstance(value, list):
        return "[" + ",".join(go_json(item, where) for item in value) + "]"
    raise RenderError(f"{where}: a {type(value).__name__} has no JSON form")


def _scalar(value: Any, path: str, where: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return go_number(float(value))
    if isinstance(value, str):
        return value
    raise RenderError(f"{where}: {path} is a {type(value).__name__}: write {{{{ toJson {path} }}}}")


def _truthy(value: Any) -> bool:
    """Go's text/template truth: false, 0, "", empty lists and maps, and nil are false."""
    if value is None:
        return False
    if isinstance(value, bool | int | float | str | list | dict):
        return bool(value)
    return True


@dataclass
class _If:
    where: str
    condition: re.Match[str]
    then: list[Any] = field(default_factory=list)
    otherwise: list[Any] | None = None


@dataclass
class _Range:
    path: str
    body: list[Any] = field(default_factory=list)


def _parse(text: str, where: str) -> list[Any]:
    """The template as a tree: strings (text), re.Match (an expression action), _If, _Range."""
    pieces: list[Any] = []
    last = 0
    for match in ACTION.finditer(text):
        before = text[last : match.start()]
        if match.group(1):  # `{{- `
            before = before.rstrip(" \t\r\n")
        pieces.append(before)
        pieces.append(match)
        last = match.end()
    pieces.append(text[last:])
    # ` -}}`: trim the start of the text after the action.
    for i, piece in enumerate(pieces):
        if isinstance(piece, re.Match) and piece.group(3) and i + 1 < len(pieces):
            pieces[i + 1] = pieces[i + 1].lstrip(" \t\r\n")

    root: list[Any] = []
    stack: list[tuple[Any, list[Any]]] = [(None, root)]
    for piece in pieces:
        if isinstance(piece, str):
            if piece:
                stack[-1][1].append(piece)
            continue
        body = piece.group(2)
        if found := IF.match(body):
            node = _If(where, found)
            stack[-1][1].append(node)
            stack.append((node, node.then))
        elif found := RANGE.match(body):
            loop = _Range(found.group(1))
            stack[-1][1].append(loop)
            stack.append((loop, loop.body))
        elif ELSE.match(body):
            owner = stack[-1][0]
            if not isinstance(owner, _If) or owner.otherwise is not None:
                raise RenderError(f"{where}: {{{{ else }}}} outside an if")
            owner.otherwise = []
            stack[-1] = (owner, owner.otherwise)
        elif END.match(body):
            if len(stack) == 1:
                raise RenderError(f"{where}: {{{{ end }}}} closes nothing")
            stack.pop()
        elif PLAIN.match(body) or QUOTED.match(body) or TO_JSON.match(body):
            stack[-1][1].append(piece)
        else:
            raise RenderError(f"{where}: unsupported template action {piece.group(0)!r}")
    if len(stack) != 1:
        raise RenderError(f"{where}: an if or range has no {{{{ end }}}}")
    return root


def _condition(found: re.Match[str], scope: Mapping[str, Any], dot: Any, where: str) -> bool:
    negated, negated_path, junction, paths, path = found.groups()
    if negated:
        return not _truthy(_lookup(scope, negated_path, where, dot))
    if junction:
        values = [_truthy(_lookup(scope, p, where, dot)) for p in paths.split()]
        return all(values) if junction == "and" else any(values)
    return _truthy(_lookup(scope, path, where, dot))


def _expression(body: str, scope: Mapping[str, Any], dot: Any, where: str) -> str:
    if found := PLAIN.match(body):
        path = found.group(1)
        return _scalar(_lookup(scope, path, where, dot), path, where)
    if found := QUOTED.match(body):
        path = found.group(1)
        return json.dumps(_scalar(_lookup(scope, path, where, dot), path, where))
    found = TO_JSON.match(body)
    assert found is not None  # _parse let only these three through
    return go_json(_lookup(scope, found.group(1), where, dot), where)


def _evaluate(nodes: list[Any], scope: Mapping[str, Any], dot: Any, where: str) -> str:
    out: list[str] = []
    for node in nodes:
        if isinstance(node, str):
            out.append(node)
        elif isinstance(node, _If):
            if _condition(node.condition, scope, dot, where):
                out.append(_evaluate(node.then, scope, dot, where))
            elif node.otherwise is not None:
                out.append(_evaluate(node.otherwise, scope, dot, where))
        elif isinstance(node, _Range):
            items = _lookup(scope, node.path, where, dot)
            if items is None:
                continue
            if not isinstance(items, list):
                raise RenderError(f"{where}: range over {node.path}, which is not a list")
            out += [_evaluate(node.body, scope, item, where) for item in items]
        else:
            out.append(_expression(node.group(2), scope, dot, where))
    return "".join(out)


def render_text(text: str, scope: Mapping[str, Any], where: str) -> str:
    """One template's text with every action replaced (the subset in the module docstring)."""
    return _evaluate(_parse(text, where), scope, scope, where)


def _documents(text: str, where: str) -> list[dict[str, Any]]:
    try:
        docs = list(yaml.load_all(text, Loader=HelmLoader))
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
    sys.stdout.write(yaml.dump_all(objects, Dumper=HelmDumper, sort_keys=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
