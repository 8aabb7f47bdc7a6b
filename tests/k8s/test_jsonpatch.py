"""mover_k8s.jsonpatch: RFC 6902's examples (appendix A), RFC 6901's pointer examples, and the
edges: escaping, array indexes and `-`, atomicity, JSON equality, the checks made up front."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from mover_k8s import jsonpatch
from mover_k8s.jsonpatch import InvalidPatch, PatchError, TestFailed


def patched(doc: Any, patch: list[Any]) -> Any:
    before = copy.deepcopy(doc)
    result = jsonpatch.apply(doc, jsonpatch.parse(patch))
    assert doc == before  # never changed in place
    return result


def fails(doc: Any, patch: list[Any]) -> PatchError:
    before = copy.deepcopy(doc)
    with pytest.raises(PatchError) as caught:
        jsonpatch.apply(doc, jsonpatch.parse(patch))
    assert doc == before
    return caught.value


# -- RFC 6902, appendix A ---------------------------------------------------------------------


def test_a1_adding_an_object_member() -> None:
    assert patched({"foo": "bar"}, [{"op": "add", "path": "/baz", "value": "qux"}]) == {
        "baz": "qux",
        "foo": "bar",
    }


def test_a2_adding_an_array_element() -> None:
    doc = {"foo": ["bar", "baz"]}
    assert patched(doc, [{"op": "add", "path": "/foo/1", "value": "qux"}]) == {
        "foo": ["bar", "qux", "baz"]
    }


def test_a3_removing_an_object_member() -> None:
    doc = {"baz": "qux", "foo": "bar"}
    assert patched(doc, [{"op": "remove", "path": "/baz"}]) == {"foo": "bar"}


def test_a4_removing_an_array_element() -> None:
    doc = {"foo": ["bar", "qux", "baz"]}
    assert patched(doc, [{"op": "remove", "path": "/foo/1"}]) == {"foo": ["bar", "baz"]}


def test_a5_replacing_a_value() -> None:
    doc = {"baz": "qux", "foo": "bar"}
    assert patched(doc, [{"op": "replace", "path": "/baz", "value": "boo"}]) == {
        "baz": "boo",
        "foo": "bar",
    }


def test_a6_moving_a_value() -> None:
    doc = {"foo": {"bar": "baz", "waldo": "fred"}, "qux": {"corge": "grault"}}
    assert patched(doc, [{"op": "move", "from": "/foo/waldo", "path": "/qux/thud"}]) == {
        "foo": {"bar": "baz"},
        "qux": {"corge": "grault", "thud": "fred"},
    }


def test_a7_moving_an_array_element() -> None:
    doc = {"foo": ["all", "grass", "cows", "eat"]}
    assert patched(doc, [{"op": "move", "from": "/foo/1", "path": "/foo/3"}]) == {
        "foo": ["all", "cows", "eat", "grass"]
    }


def test_a8_testing_a_value_success() -> None:
    doc = {"baz": "qux", "foo": ["a", 2, "c"]}
    patch = [
        {"op": "test", "path": "/baz", "value": "qux"},
        {"op": "test", "path": "/foo/1", "value": 2},
    ]
    assert patched(doc, patch) == doc


def test_a9_testing_a_value_error() -> None:
    error = fails({"baz": "qux"}, [{"op": "test", "path": "/baz", "value": "bar"}])
    assert isinstance(error, TestFailed)


def test_a10_adding_a_nested_member_object() -> None:
    doc = {"foo": "bar"}
    assert patched(doc, [{"op": "add", "path": "/child", "value": {"grandchild": {}}}]) == {
        "foo": "bar",
        "child": {"grandchild": {}},
    }


def test_a11_unrecognized_elements_are_refused_not_ignored() -> None:
    """RFC 6902 ignores members it does not know; mover refuses them (a typo would otherwise
    change the meaning silently), as its docs say."""
    patch = [{"op": "add", "path": "/baz", "value": "qux", "xyz": 123}]
    with pytest.raises(InvalidPatch, match=r"patch\[0\]: unknown field xyz for add"):
        jsonpatch.parse(patch)


def test_a12_adding_to_a_nonexistent_target() -> None:
    error = fails({"foo": "bar"}, [{"op": "add", "path": "/baz/bat", "value": "qux"}])
    assert not isinstance(error, TestFailed)
    assert str(error) == "patch[0] add /baz/bat: no member 'baz' in the object at the top level"


def test_a14_escape_ordering() -> None:
    doc = {"/": 9, "~1": 10}
    assert patched(doc, [{"op": "test", "path": "/~01", "value": 10}]) == doc


def test_a15_comparing_strings_and_numbers() -> None:
    error = fails({"/": 9, "~1": 10}, [{"op": "test", "path": "/~01", "value": "10"}])
    assert isinstance(error, TestFailed)


def test_a16_adding_an_array_value() -> None:
    doc = {"foo": ["bar"]}
    assert patched(doc, [{"op": "add", "path": "/foo/-", "value": ["abc", "def"]}]) == {
        "foo": ["bar", ["abc", "def"]]
    }


# -- RFC 6901, section 5 ----------------------------------------------------------------------

POINTER_DOC = {
    "foo": ["bar", "baz"],
    "": 0,
    "a/b": 1,
    "c%d": 2,
    "e^f": 3,
    "g|h": 4,
    "i\\j": 5,
    'k"l': 6,
    " ": 7,
    "m~n": 8,
}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", POINTER_DOC),
        ("/foo", ["bar", "baz"]),
        ("/foo/0", "bar"),
        ("/", 0),
        ("/a~1b", 1),
        ("/c%d", 2),
        ("/e^f", 3),
        ("/g|h", 4),
        ("/i\\j", 5),
        ('/k"l', 6),
        ("/ ", 7),
        ("/m~0n", 8),
    ],
)
def test_pointers_of_rfc_6901(text: str, expected: Any) -> None:
    assert jsonpatch.get(POINTER_DOC, jsonpatch.parse_pointer(text)) == expected


def test_escape_and_pointer_round_trip() -> None:
    steps = ("metadata", "annotations", "example.com/a~b")
    text = jsonpatch.pointer(steps)
    assert text == "/metadata/annotations/example.com~1a~0b"
    assert jsonpatch.parse_pointer(text) == steps
    assert jsonpatch.parse_pointer("/~01") == ("~1",)  # not "/"


# -- the edges --------------------------------------------------------------------------------


def test_a_label_with_a_slash_is_added_through_its_escape() -> None:
    doc = {"metadata": {"labels": {"app": "shop"}}}
    patch = [{"op": "add", "path": "/metadata/labels/example.com~1team", "value": "web"}]
    assert patched(doc, patch)["metadata"]["labels"] == {"app": "shop", "example.com/team": "web"}


def test_array_indexes_and_the_end() -> None:
    doc = {"a": [1, 2, 3]}
    assert patched(doc, [{"op": "add", "path": "/a/3", "value": 4}]) == {"a": [1, 2, 3, 4]}
    assert patched(doc, [{"op": "add", "path": "/a/0", "value": 0}]) == {"a": [0, 1, 2, 3]}
    assert patched(doc, [{"op": "replace", "path": "/a/2", "value": 9}]) == {"a": [1, 2, 9]}
    assert patched(doc, [{"op": "copy", "from": "/a/0", "path": "/a/-"}]) == {"a": [1, 2, 3, 1]}
    assert str(fails(doc, [{"op": "add", "path": "/a/4", "value": 4}])) == (
        "patch[0] add /a/4: index 4 is out of range for the array at /a (length 3)"
    )
    assert "index 3 is out of range" in str(fails(doc, [{"op": "remove", "path": "/a/3"}]))
    assert "'01' is not an index" in str(
        fails(doc, [{"op": "replace", "path": "/a/01", "value": 0}])
    )
    assert "'-1' is not an index" in str(fails(doc, [{"op": "remove", "path": "/a/-1"}]))
    error = fails(doc, [{"op": "remove", "path": "/a/-"}])
    assert "- (after the last element) names no element of the array at /a" in str(error)
    assert isinstance(fails(doc, [{"op": "test", "path": "/a/-", "value": 3}]), TestFailed)


def test_a_member_named_like_an_index_is_a_member() -> None:
    doc = {"a": {"0": "zero"}}
    assert patched(doc, [{"op": "replace", "path": "/a/0", "value": "none"}]) == {
        "a": {"0": "none"}
    }


def test_replace_keeps_the_member_in_its_place() -> None:
    doc = {"a": 1, "b": 2, "c": 3}
    assert list(patched(doc, [{"op": "replace", "path": "/a", "value": 0}])) == ["a", "b", "c"]


def test_paths_that_are_not_there() -> None:
    doc = {"spec": {"replicas": 1, "ports": [80]}}
    cases = {
        "replace": "no member 'replicaz' in the object at /spec",
        "remove": "no member 'replicaz' in the object at /spec",
    }
    for op, message in cases.items():
        entry = {"op": op, "path": "/spec/replicaz", "value": 2}
        if op == "remove":
            del entry["value"]
        assert str(fails(doc, [entry])) == f"patch[0] {op} /spec/replicaz: {message}"
    assert str(fails(doc, [{"op": "add", "path": "/spec/replicas/x", "value": 1}])) == (
        "patch[0] add /spec/replicas/x: the value at /spec/replicas is a number, which holds "
        "nothing"
    )
    assert "no member 'nope'" in str(fails(doc, [{"op": "copy", "from": "/nope", "path": "/x"}]))
    assert "no member 'nope'" in str(fails(doc, [{"op": "move", "from": "/nope", "path": "/x"}]))
    assert "cannot be removed" in str(fails(doc, [{"op": "remove", "path": ""}]))


def test_the_whole_document() -> None:
    assert patched({"a": 1}, [{"op": "replace", "path": "", "value": [1]}]) == [1]
    assert patched({"a": 1}, [{"op": "add", "path": "", "value": {"b": 2}}]) == {"b": 2}
    assert patched({"a": 1}, [{"op": "test", "path": "", "value": {"a": 1.0}}]) == {"a": 1}


def test_move_and_copy() -> None:
    doc = {"a": {"b": [1, {"c": 2}]}}
    copied = patched(doc, [{"op": "copy", "from": "/a/b/1", "path": "/d"}])
    assert copied == {"a": {"b": [1, {"c": 2}]}, "d": {"c": 2}}
    copied["d"]["c"] = 3
    assert copied["a"]["b"][1] == {"c": 2}  # a copy, not the same object
    assert patched(doc, [{"op": "move", "from": "/a/b", "path": "/a/b"}]) == doc
    assert patched(doc, [{"op": "move", "from": "/a/b", "path": "/a"}]) == {"a": [1, {"c": 2}]}


def test_a_patch_applies_whole_or_not_at_all() -> None:
    doc = {"a": 1, "b": [1]}
    patch = [
        {"op": "replace", "path": "/a", "value": 2},
        {"op": "add", "path": "/b/-", "value": 2},
        {"op": "remove", "path": "/c"},
    ]
    error = fails(doc, patch)
    assert error.index == 2 and error.op.op == "remove"
    assert doc == {"a": 1, "b": [1]}


def test_an_added_value_is_not_shared_between_documents() -> None:
    ops = jsonpatch.parse([{"op": "add", "path": "/l", "value": {"k": []}}])
    first = jsonpatch.apply({}, ops)
    first["l"]["k"].append(1)
    assert jsonpatch.apply({}, ops) == {"l": {"k": []}}


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        (1, 1.0, True),
        (1, True, False),
        (0, False, False),
        (None, False, False),
        ("1", 1, False),
        ([1, 2], [1, 2], True),
        ([1, 2], [2, 1], False),
        ({"a": 1, "b": [True]}, {"b": [True], "a": 1.0}, True),
        ({"a": 1}, {"a": 1, "b": None}, False),
        ({"a": None}, {}, False),
    ],
)
def test_json_equality(a: Any, b: Any, same: bool) -> None:
    assert jsonpatch.equal(a, b) is same and jsonpatch.equal(b, a) is same


def test_test_on_a_missing_path_fails_as_a_test() -> None:
    error = fails({"a": {}}, [{"op": "test", "path": "/a/b/c", "value": 1}])
    assert isinstance(error, TestFailed)
    assert str(error) == "patch[0] test /a/b/c: no value there"


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"op": "add"}, "patch: a list of operations ({op, path, value}), not an object"),
        (["add"], "patch[0]: an operation ({op, path, value}), not a string"),
        ([{"path": "/a"}], "patch[0].op: missing; one of add, remove, replace, move, copy, test"),
        ([{"op": "increment", "path": "/a"}], "patch[0].op: 'increment'; one of add, remove"),
        ([{"op": "add", "path": "/a"}], "patch[0]: add needs value"),
        ([{"op": "replace", "value": 1}], "patch[0]: replace needs path"),
        ([{"op": "copy", "path": "/a"}], "patch[0]: copy needs from"),
        ([{"op": "remove", "path": "/a", "value": 1}], "patch[0]: unknown field value for remove"),
        ([{"op": "add", "path": "a", "value": 1}], "patch[0].path: 'a' is not a JSON Pointer"),
        ([{"op": "add", "path": "/a~2", "value": 1}], "~ must be followed by 0 (~) or 1 (/)"),
        ([{"op": "add", "path": "/a~", "value": 1}], "~ must be followed by 0 (~) or 1 (/)"),
        ([{"op": "add", "path": 3, "value": 1}], "patch[0].path: 3 is not a JSON Pointer"),
        ([{"op": "move", "from": "/a~", "path": "/b"}], "patch[0].from: '/a~' is not a JSON"),
        ([{"op": "move", "from": "/a", "path": "/a/b"}], "cannot move /a into its own child /a/b"),
        ([{"op": "add", "path": "/a", "value": float("nan")}], "patch[0].value: nan is not a JSON"),
        ([{"op": "add", "path": "/a", "value": {1: 2}}], "patch[0].value: key 1 is not a string"),
        ([{"op": "add", "path": "/a", "value": {"x": {1, 2}}}], "patch[0].value.x: {1, 2} (set)"),
    ],
)
def test_what_is_not_a_patch_is_refused_up_front(patch: Any, message: str) -> None:
    with pytest.raises(InvalidPatch) as caught:
        jsonpatch.parse(patch)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_null_is_a_value() -> None:
    assert patched({"a": 1}, [{"op": "replace", "path": "/a", "value": None}]) == {"a": None}
    assert patched({"a": None}, [{"op": "test", "path": "/a", "value": None}]) == {"a": None}
