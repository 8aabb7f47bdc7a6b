"""mover_k8s.transforms on its own: which objects a rule selects (kind and group, resource,
namespaces, name regex, labels), rules in order, a failing test op as a condition, a patch that
does not apply as an error naming rule and object, the checks made up front, the transform file,
and the place of transforms in make_plan (after the mappings and the fidelity rules) and in the
report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mover_k8s import transforms
from mover_k8s.errors import SpecError
from mover_k8s.restore_plan import REPORT_LIMIT, Filters, Options, fidelity_report, make_plan
from mover_k8s.transforms import Transforms, parse_rules

from .conftest import Obj

PLURALS = {("apps", "Deployment"): "deployments", ("example.com", "Widget"): "widgets"}
REPLICAS = [{"op": "replace", "path": "/spec/replicas", "value": 5}]


def deployment(name: str = "web", ns: str | None = "shop", **labels: str) -> Obj:
    meta: Obj = {"name": name, "labels": dict(labels)}
    if ns:
        meta["namespace"] = ns
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta,
        "spec": {"replicas": 1, "template": {"spec": {"containers": [{"image": "web:1"}]}}},
    }


def thing(api_version: str, kind: str, name: str = "x", ns: str | None = "shop") -> Obj:
    meta: Obj = {"name": name}
    if ns:
        meta["namespace"] = ns
    return {"apiVersion": api_version, "kind": kind, "metadata": meta, "spec": {"replicas": 1}}


def selects(rule: dict[str, Any], obj: Obj, captured_ns: str | None = None) -> bool:
    parsed = parse_rules([dict(rule, patch=REPLICAS)])
    t = Transforms(tuple(parsed), PLURALS)
    ns = (obj.get("metadata") or {}).get("namespace")
    return t.selects(parsed[0], obj, captured_ns if captured_ns is not None else ns)


def run(rules: list[Any], obj: Obj, original: Obj | None = None) -> tuple[Obj, list[str]]:
    return Transforms(tuple(parse_rules(rules)), PLURALS)(obj, original or obj)


# -- selection --------------------------------------------------------------------------------


def test_no_selection_field_selects_every_object() -> None:
    assert selects({}, deployment()) and selects({}, thing("v1", "Namespace", ns=None))


@pytest.mark.parametrize(
    ("rule", "obj", "expected"),
    [
        ({"resource": "deployments.apps"}, deployment(), True),
        ({"resource": "deployments"}, deployment(), True),  # any group
        ({"resource": "deployments.extensions"}, deployment(), False),
        ({"resource": "statefulsets.apps"}, deployment(), False),
        ({"resource": "widgets.example.com"}, thing("example.com/v1", "Widget"), True),
        ({"resource": "configmaps"}, thing("v1", "ConfigMap"), True),  # guessed plural
        (
            {"resource": "networkpolicies.networking.k8s.io"},
            thing("networking.k8s.io/v1", "NetworkPolicy"),
            True,
        ),
        (
            {"resource": "ingresses.networking.k8s.io"},
            thing("networking.k8s.io/v1", "Ingress"),
            True,
        ),
        ({"kind": "Deployment"}, deployment(), True),
        ({"kind": "deployment"}, deployment(), True),  # any case
        ({"kind": "Deployment", "group": "apps"}, deployment(), True),
        ({"kind": "Deployment", "group": "extensions"}, deployment(), False),
        ({"kind": "ConfigMap", "group": ""}, thing("v1", "ConfigMap"), True),  # core group
        ({"kind": "ConfigMap", "group": ""}, thing("example.com/v1", "ConfigMap"), False),
        ({"kind": "StatefulSet"}, deployment(), False),
    ],
)
def test_kind_group_and_resource(rule: dict[str, Any], obj: Obj, expected: bool) -> None:
    assert selects(rule, obj) is expected


def test_namespaces_match_the_captured_or_the_restored_one_and_no_cluster_object() -> None:
    restored = deployment(ns="shop-copy")
    assert selects({"namespaces": ["shop"]}, restored, captured_ns="shop")
    assert selects({"namespaces": ["shop-copy"]}, restored, captured_ns="shop")
    assert not selects({"namespaces": ["other", "more"]}, restored, captured_ns="shop")
    assert not selects({"namespaces": ["shop"]}, thing("v1", "Namespace", "shop", ns=None))


def test_name_regex_is_searched_unanchored() -> None:
    assert selects({"nameRegex": "eb"}, deployment("web"))
    assert selects({"nameRegex": "^web$"}, deployment("web"))
    assert not selects({"nameRegex": "^web$"}, deployment("web-2"))
    assert selects({"nameRegex": "^(web|api)-[0-9]+$"}, deployment("api-12"))


def test_label_selector() -> None:
    web = deployment(app="shop", tier="front")
    assert selects({"labelSelector": {"matchLabels": {"app": "shop"}}}, web)
    assert not selects({"labelSelector": {"matchLabels": {"app": "shop", "tier": "back"}}}, web)
    expr = {"key": "tier", "operator": "In", "values": ["front", "edge"]}
    assert selects({"labelSelector": {"matchExpressions": [expr]}}, web)
    absent = {"key": "canary", "operator": "DoesNotExist"}
    assert selects({"labelSelector": {"matchExpressions": [absent]}}, web)
    assert not selects({"labelSelector": {"matchExpressions": [absent]}}, deployment(canary="y"))


def test_every_field_a_rule_has_must_match() -> None:
    rule = {
        "resource": "deployments.apps",
        "namespaces": ["shop"],
        "nameRegex": "^web",
        "labelSelector": {"matchLabels": {"app": "shop"}},
    }
    assert selects(rule, deployment("web", app="shop"))
    assert not selects(rule, deployment("web", app="other"))
    assert not selects(rule, deployment("api", app="shop"))
    assert not selects(rule, deployment("web", "other", app="shop"))


# -- applying ---------------------------------------------------------------------------------


def test_rules_apply_in_order_each_to_what_the_one_before_left() -> None:
    rules = [
        {
            "name": "label",
            "patch": [{"op": "add", "path": "/metadata/labels/scaled", "value": "yes"}],
        },
        {"name": "scale", "labelSelector": {"matchLabels": {"scaled": "yes"}}, "patch": REPLICAS},
        {
            "name": "double",
            "patch": [
                {"op": "test", "path": "/spec/replicas", "value": 5},
                {"op": "replace", "path": "/spec/replicas", "value": 10},
            ],
        },
    ]
    original = deployment()
    result, changed = run(rules, original)
    assert result["spec"]["replicas"] == 10 and result["metadata"]["labels"] == {"scaled": "yes"}
    assert changed == ["label", "scale", "double"]
    assert original["spec"]["replicas"] == 1  # not changed in place


def test_a_failing_test_skips_the_whole_rule_for_that_object() -> None:
    rules = [
        {
            "name": "only-gp2",
            "patch": [
                {"op": "add", "path": "/metadata/labels/touched", "value": "yes"},
                {"op": "test", "path": "/spec/storageClassName", "value": "gp2"},
                {"op": "replace", "path": "/spec/storageClassName", "value": "gp3"},
            ],
        }
    ]
    pvc = thing("v1", "PersistentVolumeClaim")
    pvc["metadata"]["labels"] = {}
    pvc["spec"] = {"storageClassName": "standard"}
    result, changed = run(rules, pvc)
    assert result == pvc and changed == []  # the label of the first op is not there either
    pvc["spec"]["storageClassName"] = "gp2"
    result, changed = run(rules, pvc)
    assert result["spec"]["storageClassName"] == "gp3" and changed == ["only-gp2"]
    # A test on a path the object does not have is a failed test too.
    del pvc["spec"]["storageClassName"]
    assert run(rules, pvc) == (pvc, [])


def test_a_rule_that_changes_nothing_is_not_reported() -> None:
    same = [{"patch": [{"op": "replace", "path": "/spec/replicas", "value": 1}]}]
    assert run(same, deployment())[1] == []
    # JSON equality: 1.0 is 1; true is not.
    assert (
        run([{"patch": [{"op": "replace", "path": "/spec/replicas", "value": 1.0}]}], deployment())[
            1
        ]
        == []
    )
    assert run(
        [{"patch": [{"op": "replace", "path": "/spec/replicas", "value": True}]}], deployment()
    )[1] == ["transforms[0]"]


def test_a_patch_that_does_not_apply_names_the_rule_and_the_object() -> None:
    rules = [
        {"name": "fine", "patch": REPLICAS},
        {
            "name": "typo",
            "kind": "Deployment",
            "patch": [{"op": "replace", "path": "/spec/replicaz", "value": 2}],
        },
    ]
    with pytest.raises(SpecError) as caught:
        run(rules, deployment("web", "shop-copy"))
    assert caught.value.reason == "TransformFailed"
    assert str(caught.value) == (
        "transform 'typo' (transforms[1]) does not apply to Deployment shop-copy/web: patch[0] "
        "replace /spec/replicaz: no member 'replicaz' in the object at /spec (guard it with a "
        "test op, or narrow the rule)"
    )
    unnamed = [{"patch": [{"op": "remove", "path": "/metadata/labels/x"}]}]
    with pytest.raises(
        SpecError, match=r"^transform transforms\[0\] does not apply to Namespace shop:"
    ):
        run(
            unnamed,
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop", "labels": {}}},
        )


@pytest.mark.parametrize(
    "op",
    [
        {"op": "replace", "path": "/metadata/name", "value": "other"},
        {"op": "replace", "path": "/metadata/namespace", "value": "other"},
        {"op": "replace", "path": "/kind", "value": "StatefulSet"},
        {"op": "remove", "path": "/metadata"},
    ],
)
def test_a_patch_may_not_change_what_the_object_is(op: dict[str, Any]) -> None:
    with pytest.raises(
        SpecError, match="changes the kind, name or namespace of Deployment shop/web"
    ):
        run([{"patch": [op]}], deployment())


def test_guess_plural_and_the_plurals_of_a_backup() -> None:
    assert [
        transforms.guess_plural(k)
        for k in ("ConfigMap", "Ingress", "NetworkPolicy", "Gateway", "Box")
    ] == [
        "configmaps",
        "ingresses",
        "networkpolicies",
        "gateways",
        "boxes",
    ]
    crd = {
        "kind": "CustomResourceDefinition",
        "spec": {"group": "example.com", "names": {"kind": "Octopus", "plural": "octopi"}},
    }
    plurals = transforms.plurals_of([crd], [("", "Endpoints", "endpoints")])
    assert plurals == {("example.com", "Octopus"): "octopi", ("", "Endpoints"): "endpoints"}
    t = Transforms(
        tuple(parse_rules([{"resource": "octopi.example.com", "patch": REPLICAS}])), plurals
    )
    assert t(thing("example.com/v1", "Octopus"), {})[1] == ["transforms[0]"]


# -- checked up front -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        ({"patch": []}, "spec.transforms: a list of rules"),
        (["x"], "spec.transforms[0]: a rule ("),
        (
            [{"kinds": ["Deployment"], "patch": REPLICAS}],
            "spec.transforms[0]: unknown field kinds (a rule has name, resource, kind",
        ),
        ([{"kind": "Deployment"}], "spec.transforms[0]: a rule needs patch"),
        ([{"patch": []}], "spec.transforms[0].patch: no operation"),
        ([{"name": "", "patch": REPLICAS}], "spec.transforms[0].name: a non-empty string"),
        (
            [{"name": "a", "patch": REPLICAS}, {"name": "a", "patch": REPLICAS}],
            "spec.transforms[1].name: 'a' names spec.transforms[0] already",
        ),
        (
            [{"resource": "Deployments.apps", "patch": REPLICAS}],
            "spec.transforms[0].resource: 'Deployments.apps' is not PLURAL.GROUP",
        ),
        (
            [{"resource": "deployments.apps", "kind": "Deployment", "patch": REPLICAS}],
            "resource or kind (with group), not both",
        ),
        ([{"group": "apps", "patch": REPLICAS}], "spec.transforms[0]: group needs kind"),
        (
            [{"kind": "Deploy ment", "patch": REPLICAS}],
            "spec.transforms[0].kind: 'Deploy ment' is not a kind",
        ),
        (
            [{"kind": "Deployment", "group": 1, "patch": REPLICAS}],
            "spec.transforms[0].group: an API group",
        ),
        (
            [{"namespaces": "shop", "patch": REPLICAS}],
            "spec.transforms[0].namespaces: a list of non-empty strings",
        ),
        (
            [{"nameRegex": "web-(", "patch": REPLICAS}],
            "spec.transforms[0].nameRegex: 'web-(' is not a regular expression: missing ), "
            "unterminated subpattern at position 4",
        ),
        (
            [{"labelSelector": {"app": "web"}, "patch": REPLICAS}],
            "spec.transforms[0].labelSelector: unknown field app",
        ),
        (
            [{"labelSelector": {"matchLabels": {"app": 1}}, "patch": REPLICAS}],
            "spec.transforms[0].labelSelector.matchLabels: an object of label: value strings",
        ),
        (
            [
                {
                    "labelSelector": {"matchExpressions": [{"key": "a", "operator": "Is"}]},
                    "patch": REPLICAS,
                }
            ],
            "matchExpressions[0].operator: 'Is'; one of In, NotIn, Exists, DoesNotExist",
        ),
        (
            [
                {
                    "labelSelector": {"matchExpressions": [{"key": "a", "operator": "In"}]},
                    "patch": REPLICAS,
                }
            ],
            "matchExpressions[0].values: In needs values",
        ),
        (
            [
                {
                    "labelSelector": {
                        "matchExpressions": [{"key": "a", "operator": "Exists", "values": ["b"]}]
                    },
                    "patch": REPLICAS,
                }
            ],
            "Exists takes no values",
        ),
        (
            [{"patch": [{"op": "increment", "path": "/spec/replicas"}]}],
            "spec.transforms[0].patch[0].op: 'increment'; one of add, remove, replace, move, "
            "copy, test",
        ),
        (
            [{"patch": [REPLICAS[0], {"op": "add", "path": "spec/x", "value": 1}]}],
            "spec.transforms[0].patch[1].path: 'spec/x' is not a JSON Pointer: it must be empty "
            "or start with /",
        ),
        (
            [{"patch": [{"op": "add", "path": "/a~2b", "value": 1}]}],
            "spec.transforms[0].patch[0].path: '/a~2b' is not a JSON Pointer: ~ must be "
            "followed by 0 (~) or 1 (/)",
        ),
        (
            [{"patch": [{"op": "replace", "path": "/spec/replicas", "valeu": 1}]}],
            "spec.transforms[0].patch[0]: unknown field valeu for replace",
        ),
    ],
)
def test_what_is_wrong_is_said_by_its_place(rules: Any, message: str) -> None:
    with pytest.raises(SpecError) as caught:
        parse_rules(rules)
    assert caught.value.reason == "InvalidTransform"
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_no_rules() -> None:
    assert parse_rules(None) == [] and parse_rules([]) == []


# -- the file ---------------------------------------------------------------------------------

YAML_FILE = """\
# comments are fine
transforms:
  - name: smaller
    resource: deployments.apps
    patch:
      - {op: replace, path: /spec/replicas, value: 1}
      - op: add
        path: /metadata/labels/example.com~1restored
        value: "true"
"""


def test_a_file_in_yaml_or_json_as_an_object_or_a_list(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(YAML_FILE)
    rules = transforms.read_file(str(path))
    assert rules[0]["patch"][1]["value"] == "true" and len(parse_rules(rules)) == 1
    for data in ({"transforms": rules}, rules):
        path = tmp_path / "t.json"
        path.write_text(json.dumps(data, indent="\t"))  # tabs: JSON, not YAML
        assert transforms.read_file(str(path)) == rules


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "transforms: [\n  - a\n",
            "not YAML: expected the node content, but found '-' at line 2, column 3",
        ),
        ('{"transforms": [}', "not JSON: Expecting value: line 1 column 17 (char 16)"),
        ("", "holds no list of rules"),
        ("rules: []\n", "unknown field rules (the file holds transforms: [rules])"),
        ("{}", "no transforms field"),
        ("transforms: {name: x}\n", "holds no list of rules"),
        ("a: 1\n---\nb: 2\n", "not YAML: "),
    ],
)
def test_a_file_that_holds_no_rules(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(text)
    with pytest.raises(SpecError) as caught:
        transforms.read_file(str(path))
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_a_file_that_cannot_be_read(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="cannot read it: No such file or directory"):
        transforms.read_file(str(tmp_path / "missing.yaml"))
    (tmp_path / "bin").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(SpecError, match=r"not text \(YAML or JSON\)"):
        transforms.read_file(str(tmp_path / "bin"))


def test_a_yaml_date_is_not_a_json_value(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text("- patch: [{op: add, path: /metadata/labels/day, value: 2024-01-31}]\n")
    with pytest.raises(SpecError) as caught:
        parse_rules(transforms.read_file(str(path)), "transforms")
    assert str(caught.value) == (
        "transforms[0].patch[0].value: 2024-01-31 (date) is not a JSON value; quote it to make "
        "it a string"
    )


# -- in the plan ------------------------------------------------------------------------------


def plan_of(objects: list[Obj], rules: list[dict[str, Any]], **options: Any) -> Any:
    t = Transforms(tuple(parse_rules(rules)), PLURALS)
    return make_plan(
        objects,
        [],
        "full",
        Filters(),
        {"shop": "shop-copy"},
        {"fast": "standard"},
        Options(**options),
        t,
    )


def test_transforms_come_after_the_mappings_and_the_fidelity_rules() -> None:
    pvc = thing("v1", "PersistentVolumeClaim", "data")
    pvc["metadata"]["uid"] = "u1"
    pvc["spec"] = {"storageClassName": "fast", "volumeName": "pv-1"}
    config = thing("v1", "ConfigMap", "cfg")
    config["data"] = {"url": "http://db.shop.svc:5432"}
    rules = [
        {  # sees the mapped class and namespace, and no volumeName (stripped)
            "name": "class",
            "namespaces": ["shop-copy"],
            "patch": [
                {"op": "test", "path": "/spec/storageClassName", "value": "standard"},
                {"op": "add", "path": "/spec/volumeName", "value": "pinned"},
            ],
        },
        {  # sees the rewritten reference
            "name": "url",
            "kind": "ConfigMap",
            "patch": [
                {"op": "test", "path": "/data/url", "value": "http://db.shop-copy.svc:5432"},
                {"op": "replace", "path": "/data/url", "value": "http://db.example:5432"},
            ],
        },
    ]
    plan = plan_of([pvc, config], rules, rewrite_namespace_references=True)
    prepared = {s.prepared["kind"]: s.prepared for s in plan.steps}
    assert prepared["PersistentVolumeClaim"]["spec"] == {
        "storageClassName": "standard",
        "volumeName": "pinned",
    }
    assert prepared["ConfigMap"]["data"] == {"url": "http://db.example:5432"}
    assert prepared["ConfigMap"]["metadata"]["namespace"] == "shop-copy"
    report = fidelity_report(plan)
    assert report["transformed"] == [
        # in the plan's order: ConfigMaps before claims
        {
            "rule": "url",
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "namespace": "shop-copy",
            "name": "cfg",
        },
        {
            "rule": "class",
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "namespace": "shop-copy",
            "name": "data",
        },
    ]
    assert report["transformedCount"] == 2


def test_skipped_objects_are_not_transformed() -> None:
    sts = thing("apps/v1", "StatefulSet", "db")
    sts["metadata"]["uid"] = "sts-uid"
    pod = thing("v1", "Pod", "db-0")
    pod["metadata"]["ownerReferences"] = [
        {"kind": "StatefulSet", "name": "db", "uid": "sts-uid", "controller": True}
    ]
    # The Pod has no /spec/replicas: were it transformed, the restore would fail.
    plan = plan_of(
        [sts, pod], [{"patch": [{"op": "replace", "path": "/spec/replicas", "value": 2}]}]
    )
    steps = {s.prepared["kind"]: s for s in plan.steps}
    pod_step = steps["Pod"]
    assert pod_step.skip and pod_step.transformed == []
    del pod["spec"]
    plan = plan_of(
        [sts, pod], [{"patch": [{"op": "replace", "path": "/spec/replicas", "value": 2}]}]
    )
    assert [s.transformed for s in plan.steps if not s.skip] == [["transforms[0]"]]


def test_the_report_is_bounded() -> None:
    objects = [thing("v1", "ConfigMap", f"c{i:03d}") for i in range(REPORT_LIMIT + 5)]
    plan = plan_of(objects, [{"patch": [{"op": "add", "path": "/data", "value": {"a": "b"}}]}])
    report = fidelity_report(plan)
    assert (
        len(report["transformed"]) == REPORT_LIMIT
        and report["transformedCount"] == REPORT_LIMIT + 5
    )
    assert (
        fidelity_report(
            plan_of(objects[:1], [{"patch": [{"op": "test", "path": "/spec", "value": {}}]}])
        )
        == {}
    )
