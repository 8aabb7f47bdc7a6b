"""Restore transforms: rules that change the objects a restore creates, with JSON Patch.

A Restore's `spec.transforms` (or `mover app restore --transform FILE`, which puts the file's
rules there) is a list of rules:

    - name: smaller                    # optional; names the rule in the report and in errors
      resource: deployments.apps       # PLURAL.GROUP (PLURAL alone: any group), or
      # kind: Deployment               #   kind (any case) and, optionally, group ("" = core)
      # group: apps
      namespaces: [shop]               # the captured namespace or the one restored into
      nameRegex: "^web"                # Python syntax, searched (unanchored) in metadata.name
      labelSelector: {matchLabels: {tier: frontend}}   # and/or matchExpressions
      patch:                           # RFC 6902 operations (mover_k8s.jsonpatch)
        - {op: test, path: /spec/replicas, value: 3}
        - {op: replace, path: /spec/replicas, value: 1}

Every selection field is optional (none: every object); a rule selects an object when all the
ones it has match. Rules apply in their order to each object the restore would create, after
the mappings and the fidelity rules (restore_plan.make_plan), each to the object as the rules
before it left it: a label added by one rule is seen by the next one's labelSelector, a path it
added can be patched by the next. `namespaces` never matches a cluster-scoped object.

A rule's patch applies as a whole or not at all. When one of its `test` operations fails (no
value at its path, or another value) the rule is skipped for that object, as if it had not
selected it, and the object is left as it was before the rule (also by the operations ahead of
the test). Any other operation that does not apply (a path that is not there, an index out of
range, a parent that is not an object or array) fails the whole restore before anything is
written, naming the rule, the object and the operation. A patch may not change an object's
kind, name or namespace (mappings do that).

All of it is checked up front (`parse_rules`): unknown fields, a regex that does not compile, an
unknown op, a member an op lacks or does not take, a path or `from` that is not a JSON Pointer,
a value JSON cannot hold; a SpecError (`InvalidTransform`) names the first problem by its place,
e.g. `spec.transforms[0].patch[1].path`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mover_k8s import jsonpatch
from mover_k8s.errors import SpecError
from mover_k8s.restore_plan import _labels_match

Obj = dict[str, Any]

FIELDS = ("name", "resource", "kind", "group", "namespaces", "nameRegex", "labelSelector", "patch")
OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")
INVALID = "InvalidTransform"
FAILED = "TransformFailed"
_RESOURCE = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9.-]*[a-z0-9])?)?")
_KIND = re.compile(r"[A-Za-z][A-Za-z0-9]*")


def _invalid(where: str, message: str) -> SpecError:
    return SpecError(INVALID, f"{where}: {message}")


@dataclass(frozen=True)
class Rule:
    index: int
    name: str  # as given, or ""
    patch: tuple[jsonpatch.Operation, ...]
    resource: tuple[str, str | None] | None = None  # (plural, group or None: any)
    kind: str | None = None
    group: str | None = None  # with kind; None: any
    namespaces: tuple[str, ...] = ()
    name_regex: re.Pattern[str] | None = None
    selector: Obj | None = None

    @property
    def label(self) -> str:
        """How the report names it: its name, else its place."""
        return self.name or f"transforms[{self.index}]"

    @property
    def title(self) -> str:
        """How an error names it: its name and its place."""
        place = f"transforms[{self.index}]"
        return f"{self.name!r} ({place})" if self.name else place


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise _invalid(where, "a list of non-empty strings")
    return tuple(value)


def _selector(value: Any, where: str) -> Obj:
    if not isinstance(value, dict):
        raise _invalid(where, "an object with matchLabels and/or matchExpressions")
    unknown = sorted(str(k) for k in value if k not in ("matchLabels", "matchExpressions"))
    if unknown:
        raise _invalid(where, f"unknown field {', '.join(unknown)} (matchLabels, matchExpressions)")
    labels = value.get("matchLabels")
    if labels is not None and (
        not isinstance(labels, dict)
        or not all(isinstance(k, str) and isinstance(v, str) for k, v in labels.items())
    ):
        raise _invalid(f"{where}.matchLabels", "an object of label: value strings")
    expressions = value.get("matchExpressions")
    if expressions is not None and not isinstance(expressions, list):
        raise _invalid(f"{where}.matchExpressions", "a list of {key, operator, values}")
    for i, expr in enumerate(expressions or []):
        at = f"{where}.matchExpressions[{i}]"
        if not isinstance(expr, dict):
            raise _invalid(at, "an object {key, operator, values}")
        unknown = sorted(str(k) for k in expr if k not in ("key", "operator", "values"))
        if unknown:
            raise _invalid(at, f"unknown field {', '.join(unknown)} (key, operator, values)")
        if not isinstance(expr.get("key"), str) or not expr["key"]:
            raise _invalid(f"{at}.key", "a label name")
        if expr.get("operator") not in OPERATORS:
            raise _invalid(
                f"{at}.operator", f"{expr.get('operator')!r}; one of {', '.join(OPERATORS)}"
            )
        values = expr.get("values")
        if expr["operator"] in ("In", "NotIn"):
            if not values:
                raise _invalid(f"{at}.values", f"{expr['operator']} needs values")
            _strings(values, f"{at}.values")
        elif values:
            raise _invalid(f"{at}.values", f"{expr['operator']} takes no values")
    return value


def _rule(entry: Any, index: int, where: str) -> Rule:
    at = f"{where}[{index}]"
    if not isinstance(entry, dict):
        raise _invalid(at, "a rule ({name, resource | kind, namespaces, ..., patch})")
    unknown = sorted(str(k) for k in entry if k not in FIELDS)
    if unknown:
        raise _invalid(at, f"unknown field {', '.join(unknown)} (a rule has {', '.join(FIELDS)})")
    name = entry.get("name", "")
    if not isinstance(name, str) or ("name" in entry and not name.strip()):
        raise _invalid(f"{at}.name", "a non-empty string")
    rule = _target(entry, at)
    if "namespaces" in entry:
        rule["namespaces"] = _strings(entry["namespaces"], f"{at}.namespaces")
    if "nameRegex" in entry:
        rule["name_regex"] = _name_regex(entry["nameRegex"], f"{at}.nameRegex")
    if "labelSelector" in entry:
        rule["selector"] = _selector(entry["labelSelector"], f"{at}.labelSelector")
    return Rule(index, name, _patch(entry, at), **rule)


def _target(entry: dict[str, Any], at: str) -> dict[str, Any]:
    """The objects a rule names by type: {"resource": (plural, group or None)} or {"kind",
    "group"} (each when given)."""
    target: dict[str, Any] = {}
    if "resource" in entry:
        if "kind" in entry or "group" in entry:
            raise _invalid(at, "resource or kind (with group), not both")
        resource = entry["resource"]
        if not isinstance(resource, str) or not _RESOURCE.fullmatch(resource):
            raise _invalid(
                f"{at}.resource",
                f"{resource!r} is not PLURAL.GROUP (e.g. deployments.apps) or PLURAL (configmaps)",
            )
        plural, _, group = resource.partition(".")
        target["resource"] = (plural, group or None)
    elif "group" in entry and "kind" not in entry:
        raise _invalid(at, "group needs kind (or write resource: PLURAL.GROUP)")
    if "kind" in entry:
        kind = entry["kind"]
        if not isinstance(kind, str) or not _KIND.fullmatch(kind):
            raise _invalid(f"{at}.kind", f"{kind!r} is not a kind (e.g. Deployment)")
        target["kind"] = kind
        if "group" in entry:
            if not isinstance(entry["group"], str):
                raise _invalid(f"{at}.group", 'an API group (e.g. apps; "" for the core group)')
            target["group"] = entry["group"]
    return target


def _name_regex(text: Any, at: str) -> re.Pattern[str]:
    if not isinstance(text, str):
        raise _invalid(at, "a regular expression (a string)")
    try:
        return re.compile(text)
    except re.error as exc:
        raise _invalid(at, f"{text!r} is not a regular expression: {exc}") from None


def _patch(entry: dict[str, Any], at: str) -> tuple[jsonpatch.Operation, ...]:
    """The rule's JSON Patch, checked: at least one operation."""
    if "patch" not in entry:
        raise _invalid(at, "a rule needs patch (a list of JSON Patch operations)")
    try:
        patch = jsonpatch.parse(entry["patch"], f"{at}.patch")
    except jsonpatch.InvalidPatch as exc:
        raise SpecError(INVALID, str(exc)) from None
    if not patch:
        raise _invalid(f"{at}.patch", "no operation")
    return tuple(patch)


def parse_rules(value: Any, where: str = "spec.transforms") -> list[Rule]:
    """The rules of `value` (a list; None: none), checked; SpecError InvalidTransform naming the
    first problem by its place otherwise."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise _invalid(where, "a list of rules")
    rules = [_rule(entry, index, where) for index, entry in enumerate(value)]
    seen: dict[str, int] = {}
    for rule in rules:
        if rule.name in seen:
            raise _invalid(
                f"{where}[{rule.index}].name",
                f"{rule.name!r} names {where}[{seen[rule.name]}] already",
            )
        if rule.name:
            seen[rule.name] = rule.index
    return rules


def read_file(path: str) -> list[Any]:
    """The rules of a transform file (YAML or JSON): a list of rules, or an object whose only
    field is `transforms`, that list. SpecError (InvalidTransform) in one line otherwise; the
    rules are not checked yet (parse_rules)."""
    import yaml

    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError(INVALID, f"cannot read it: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise SpecError(INVALID, "not text (YAML or JSON)") from None
    try:
        data = json.loads(text)
    except ValueError as json_error:
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            if text.lstrip().startswith(("{", "[")):
                raise SpecError(INVALID, f"not JSON: {json_error}") from None
            mark = getattr(exc, "problem_mark", None)
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            place = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            raise SpecError(INVALID, f"not YAML: {problem}{place}") from None
    if isinstance(data, dict):
        unknown = sorted(str(k) for k in data if k != "transforms")
        if unknown or "transforms" not in data:
            raise SpecError(
                INVALID,
                f"unknown field {', '.join(unknown)} (the file holds transforms: [rules])"
                if unknown
                else "no transforms field (the file holds transforms: [rules])",
            )
        data = data["transforms"]
    if not isinstance(data, list):
        raise SpecError(INVALID, "holds no list of rules (write transforms: [rules])")
    return data


def guess_plural(kind: str) -> str:
    """A kind's resource name where the cluster cannot say (its CRD not served yet)."""
    word = kind.lower()
    if word.endswith(("s", "x", "z", "ch", "sh")):
        return word + "es"
    if word.endswith("y") and len(word) > 1 and word[-2] not in "aeiou":
        return word[:-1] + "ies"
    return word + "s"


def plurals_of(
    objects: list[Obj], served: list[tuple[str, str, str]]
) -> dict[tuple[str, str], str]:
    """(group, kind) -> plural: from what the cluster serves (group, kind, plural), and from the
    CRDs among the captured `objects` (for kinds this restore makes served)."""
    found: dict[tuple[str, str], str] = {}
    for obj in objects:
        if obj.get("kind") == "CustomResourceDefinition":
            spec = obj.get("spec") or {}
            names = spec.get("names") or {}
            if names.get("kind") and names.get("plural"):
                found[(str(spec.get("group") or ""), str(names["kind"]))] = str(names["plural"])
    for group, kind, plural in served:
        found[(group, kind)] = plural
    return found


def _describe(obj: Obj) -> str:
    meta = obj.get("metadata") or {}
    ns = meta.get("namespace")
    return (
        f"{obj.get('kind')} {ns}/{meta.get('name')}"
        if ns
        else f"{obj.get('kind')} {meta.get('name')}"
    )


def _identity(obj: Any) -> tuple[Any, Any, Any]:
    meta = obj.get("metadata") if isinstance(obj, dict) else None
    if not isinstance(meta, dict):
        return (None, None, None)
    return (obj.get("kind"), meta.get("name"), meta.get("namespace"))


@dataclass(frozen=True)
class Transforms:
    """The rules of a restore, with the plural of each kind (for `resource`); called by
    make_plan with each object as prepared and as captured."""

    rules: tuple[Rule, ...]
    plurals: Mapping[tuple[str, str], str] = field(default_factory=dict)

    def plural(self, group: str, kind: str) -> str:
        return self.plurals.get((group, kind)) or guess_plural(kind)

    def selects(self, rule: Rule, obj: Obj, captured_namespace: str | None) -> bool:
        kind = str(obj.get("kind") or "")
        group = str(obj.get("apiVersion") or "").rpartition("/")[0]
        meta = obj.get("metadata") or {}
        if rule.resource is not None:
            plural, want_group = rule.resource
            if want_group is not None and want_group != group:
                return False
            if plural != self.plural(group, kind):
                return False
        if rule.kind is not None and rule.kind.lower() != kind.lower():
            return False
        if rule.group is not None and rule.group != group:
            return False
        if rule.namespaces:
            here = {meta.get("namespace"), captured_namespace} - {None, ""}
            if not here & set(rule.namespaces):
                return False
        if rule.name_regex is not None and not rule.name_regex.search(str(meta.get("name") or "")):
            return False
        return not (
            rule.selector is not None and not _labels_match(meta.get("labels") or {}, rule.selector)
        )

    def __call__(self, prepared: Obj, original: Obj) -> tuple[Obj, list[str]]:
        """`prepared` through every rule that selects it: (the result, the labels of the rules
        that changed it). SpecError TransformFailed if a patch does not apply."""
        captured_namespace = (original.get("metadata") or {}).get("namespace")
        obj, changed = prepared, []
        for rule in self.rules:
            if not self.selects(rule, obj, captured_namespace):
                continue
            try:
                result = jsonpatch.apply(obj, rule.patch)
            except jsonpatch.TestFailed:
                continue  # a condition: the rule is not for this object
            except jsonpatch.PatchError as exc:
                raise SpecError(
                    FAILED,
                    f"transform {rule.title} does not apply to {_describe(obj)}: {exc} "
                    "(guard it with a test op, or narrow the rule)",
                ) from None
            if _identity(result) != _identity(obj):
                raise SpecError(
                    FAILED,
                    f"transform {rule.title} changes the kind, name or namespace of "
                    f"{_describe(obj)}; a transform may not (namespaceMapping moves objects)",
                )
            if not jsonpatch.equal(result, obj):
                changed.append(rule.label)
            obj = result
        return obj, changed
