"""JSON Patch (RFC 6902) over JSON Pointers (RFC 6901), for restore transforms.

A patch is checked once (`parse`: each operation's members, its pointers' syntax) and then
applied to any number of documents (`apply`), each time atomically: the document given is never
changed; either every operation applies and a new document is returned, or `PatchError` says
which operation failed and why, and nothing is returned.

- Pointers: `""` is the whole document; `/a/b` steps through member `a`, then `b`; `~1` stands
  for `/` and `~0` for `~` in a step (`/metadata/annotations/example.com~1team`); a `~`
  followed by anything else is not a pointer. In an array a step is an index (`0`, `12`; no
  leading zeros, no sign); `-` names the place after the last element: `add` appends there,
  every other operation fails on it.
- `add` puts a value at a path whose parent exists (a member is set or replaced, an array
  element is inserted; index up to the length, or `-`); `remove` and `replace` need the target
  to exist; `move` and `copy` take the value at `from` (which must exist; `move` may not move a
  value into itself) and add it at `path`; `test` compares the value at `path` with `value`.
- Equality (`test`): JSON's, not Python's: `1` equals `1.0` but not `true`; objects are equal
  with the same members whatever their order; arrays element by element.
- Unlike RFC 6902, which ignores members it does not know, `parse` refuses them (a typo such
  as `valu:` would otherwise silently add null).

Pure Python, no dependency: a patch's failure names the operation, its path and the step that
failed, which the restore report and the CLI pass on as they are.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

OPS = ("add", "remove", "replace", "move", "copy", "test")
_MEMBERS = {
    "add": {"value"},
    "remove": set(),
    "replace": {"value"},
    "move": {"from"},
    "copy": {"from"},
    "test": {"value"},
}
_INDEX = re.compile(r"0|[1-9][0-9]*")
_MISSING = object()


class PatchError(ValueError):
    """An operation that does not apply to the document (the document is not changed)."""

    def __init__(self, index: int, op: Operation, message: str) -> None:
        super().__init__(f"patch[{index}] {op.op} {op.path}: {message}")
        self.index = index
        self.op = op


class TestFailed(PatchError):
    """A `test` operation found no value at its path, or another value."""

    __test__ = False  # not a pytest test class


class InvalidPatch(ValueError):
    """A patch that is not one (checked before any document is seen)."""


def escape(step: str) -> str:
    """A member name as a pointer step: `~` as `~0`, `/` as `~1`."""
    return step.replace("~", "~0").replace("/", "~1")


def parse_pointer(text: Any) -> tuple[str, ...]:
    """The steps of a JSON Pointer; InvalidPatch if `text` is not one."""
    if not isinstance(text, str):
        raise InvalidPatch(f"{text!r} is not a JSON Pointer (a string like /spec/replicas)")
    if text == "":
        return ()
    if not text.startswith("/"):
        raise InvalidPatch(f"{text!r} is not a JSON Pointer: it must be empty or start with /")
    steps = text[1:].split("/")
    for step in steps:
        bad = re.search(r"~(?![01])", step)
        if bad:
            raise InvalidPatch(
                f"{text!r} is not a JSON Pointer: ~ must be followed by 0 (~) or 1 (/)"
            )
    return tuple(s.replace("~1", "/").replace("~0", "~") for s in steps)


def pointer(steps: Sequence[str]) -> str:
    return "".join("/" + escape(s) for s in steps)


@dataclass(frozen=True)
class Operation:
    op: str
    path: str
    steps: tuple[str, ...]
    value: Any = None
    source: tuple[str, ...] = ()  # `from`, parsed


def parse(patch: Any, where: str = "patch") -> list[Operation]:
    """The operations of `patch` (a list of {op, path, value | from}), checked; InvalidPatch
    naming `where[i]` and what is wrong otherwise."""
    if not isinstance(patch, list):
        raise InvalidPatch(f"{where}: a list of operations ({{op, path, value}}), not {_a(patch)}")
    ops: list[Operation] = []
    for index, entry in enumerate(patch):
        at = f"{where}[{index}]"
        if not isinstance(entry, dict):
            raise InvalidPatch(f"{at}: an operation ({{op, path, value}}), not {_a(entry)}")
        op = entry.get("op")
        if op not in OPS:
            shown = f"{op!r}" if op is not None else "missing"
            raise InvalidPatch(f"{at}.op: {shown}; one of {', '.join(OPS)}")
        allowed = {"op", "path"} | _MEMBERS[op]
        unknown = sorted(str(k) for k in entry if k not in allowed)
        if unknown:
            raise InvalidPatch(
                f"{at}: unknown field {', '.join(unknown)} for {op} "
                f"(it takes {', '.join(sorted(allowed))})"
            )
        for member in sorted(allowed):
            if member not in entry:
                raise InvalidPatch(f"{at}: {op} needs {member}")
        try:
            steps = parse_pointer(entry["path"])
        except InvalidPatch as exc:
            raise InvalidPatch(f"{at}.path: {exc}") from None
        source: tuple[str, ...] = ()
        if "from" in _MEMBERS[op]:
            try:
                source = parse_pointer(entry["from"])
            except InvalidPatch as exc:
                raise InvalidPatch(f"{at}.from: {exc}") from None
            if op == "move" and len(source) < len(steps) and steps[: len(source)] == source:
                raise InvalidPatch(
                    f"{at}: cannot move {entry['from']} into its own child {entry['path']}"
                )
        if "value" in _MEMBERS[op]:
            _check_json(entry["value"], f"{at}.value")
        ops.append(Operation(op, entry["path"], steps, entry.get("value"), source))
    return ops


def _a(value: Any) -> str:
    return {
        dict: "an object",
        list: "a list",
        str: "a string",
        bool: "a boolean",
        int: "a number",
        float: "a number",
        type(None): "null",
    }.get(type(value), type(value).__name__)


def _check_json(value: Any, where: str) -> None:
    """Only what JSON can hold (YAML also reads dates, sets, NaN...)."""
    if value is None or isinstance(value, bool | int | str):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidPatch(f"{where}: {value!r} is not a JSON number")
        return
    if isinstance(value, list):
        for i, item in enumerate(value):
            _check_json(item, f"{where}[{i}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidPatch(f"{where}: key {key!r} is not a string (quote it)")
            _check_json(item, f"{where}.{key}")
        return
    raise InvalidPatch(
        f"{where}: {value!s} ({type(value).__name__}) is not a JSON value; quote it to make "
        "it a string"
    )


def equal(a: Any, b: Any) -> bool:
    """JSON equality (RFC 6902 section 4.6)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a is b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(equal(a[k], b[k]) for k in a)
    if type(a) is not type(b):
        return False
    return bool(a == b)


class _Fail(Exception):
    """Raised inside one operation; `apply` turns it into a PatchError."""


def _at(steps: Sequence[str]) -> str:
    return f"at {pointer(steps)}" if steps else "at the top level"


def _index(step: str, array: list[Any], at: Sequence[str], end_ok: bool) -> int:
    if step == "-":
        if end_ok:
            return len(array)
        raise _Fail(f"- (after the last element) names no element of the array {_at(at)}")
    if not _INDEX.fullmatch(step):
        raise _Fail(f"{step!r} is not an index of the array {_at(at)}")
    index = int(step)
    if index > len(array) or (index == len(array) and not end_ok):
        raise _Fail(f"index {index} is out of range for the array {_at(at)} (length {len(array)})")
    return index


def _child(node: Any, step: str, at: Sequence[str]) -> Any:
    if isinstance(node, dict):
        if step not in node:
            raise _Fail(f"no member {step!r} in the object {_at(at)}")
        return node[step]
    if isinstance(node, list):
        return node[_index(step, node, at, end_ok=False)]
    raise _Fail(f"the value {_at(at)} is {_a(node)}, which has no {step!r}")


def get(doc: Any, steps: Sequence[str]) -> Any:
    """The value at `steps`; ValueError (with why) if there is none."""
    try:
        return _get(doc, steps)
    except _Fail as exc:
        raise ValueError(str(exc)) from None


def _get(doc: Any, steps: Sequence[str]) -> Any:
    node = doc
    for depth, step in enumerate(steps):
        node = _child(node, step, steps[:depth])
    return node


def _parent(doc: Any, steps: Sequence[str]) -> Any:
    node = doc
    for depth, step in enumerate(steps[:-1]):
        node = _child(node, step, steps[:depth])
    return node


def _add(doc: Any, steps: Sequence[str], value: Any) -> Any:
    if not steps:
        return value
    parent, last = _parent(doc, steps), steps[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        parent.insert(_index(last, parent, steps[:-1], end_ok=True), value)
    else:
        raise _Fail(f"the value {_at(steps[:-1])} is {_a(parent)}, which holds nothing")
    return doc


def _replace(doc: Any, steps: Sequence[str], value: Any) -> Any:
    """In place: a member keeps its place among the others, an element its index."""
    if not steps:
        return value
    parent, last = _parent(doc, steps), steps[-1]
    _child(parent, last, steps[:-1])  # it must exist
    if isinstance(parent, dict):
        parent[last] = value
    else:
        parent[_index(last, parent, steps[:-1], end_ok=False)] = value
    return doc


def _remove(doc: Any, steps: Sequence[str]) -> Any:
    if not steps:
        raise _Fail("the whole document cannot be removed")
    parent, last = _parent(doc, steps), steps[-1]
    value = _child(parent, last, steps[:-1])
    if isinstance(parent, dict):
        del parent[last]
    else:
        del parent[_index(last, parent, steps[:-1], end_ok=False)]
    return value


def apply(doc: Any, patch: Sequence[Operation]) -> Any:
    """A new document: `doc` with `patch` applied (`doc` is not changed). PatchError (or its
    TestFailed) names the first operation that did not apply."""
    result = copy.deepcopy(doc)
    for index, op in enumerate(patch):
        try:
            if op.op == "add":
                result = _add(result, op.steps, copy.deepcopy(op.value))
            elif op.op == "remove":
                _remove(result, op.steps)
            elif op.op == "replace":
                result = _replace(result, op.steps, copy.deepcopy(op.value))
            elif op.op == "move":
                if op.source == op.steps:
                    _get(result, op.source)
                    continue
                result = _add(result, op.steps, _remove(result, op.source))
            elif op.op == "copy":
                value = copy.deepcopy(_get(result, op.source))
                result = _add(result, op.steps, value)
            else:  # test
                found = _value_or_missing(result, op.steps)
                if found is _MISSING:
                    raise TestFailed(index, op, "no value there")
                if not equal(found, op.value):
                    raise TestFailed(index, op, "the value there is another one")
        except _Fail as exc:
            raise PatchError(index, op, str(exc)) from None
    return result


def _value_or_missing(doc: Any, steps: Sequence[str]) -> Any:
    try:
        return _get(doc, steps)
    except _Fail:
        return _MISSING
