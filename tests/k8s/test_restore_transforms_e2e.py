"""Restore transforms end to end: the app backed up by the real controller and node agent, then
restored with transform rules (a Deployment's replicas and image changed, a label added, a
custom resource's field changed; a rule whose test fails left out), through `mover app restore
--transform FILE` and through a Restore object; every restored object is compared with the
capture field by field and differs only by the namespace and the transformed fields. Bad
transforms: one line, exit 2, nothing created; a patch that does not apply fails the Restore
before anything is written."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from mover_k8s import api
from mover_k8s.cli import load_crds

from .conftest import SYSTEM, WIDGET, Env, Obj, deploy_app, restore_body
from .test_e2e import cluster_state, take_backup
from .test_restore_fidelity_e2e import (
    ABSENT,
    field_differences,
    mover,
    restore_status_schema,
    undeclared,
)

RULES = """\
transforms:
  - name: scale-up
    resource: deployments.apps
    namespaces: [shop]          # the captured namespace (the restored one would do too)
    nameRegex: ^shop$
    patch:
      - {op: test, path: /spec/replicas, value: 1}
      - {op: replace, path: /spec/replicas, value: 3}
  - name: new-image
    kind: Deployment
    group: apps
    labelSelector: {matchLabels: {app: shop}}
    patch:
      - {op: replace, path: /spec/template/spec/containers/0/image, value: "shop:2.0"}
      - {op: add, path: /metadata/labels/restored.example.com~1from, value: nightly}
  - name: not-this-one          # its test fails: it changes nothing
    kind: ConfigMap
    patch:
      - {op: test, path: /data/greeting, value: bonjour}
      - {op: remove, path: /data}
  - name: green-widgets
    resource: widgets.example.com
    patch:
      - {op: replace, path: /spec/colour, value: green}
"""

COMPARED = [
    (api.CONFIG_MAP, "app-config"),
    (api.CONFIG_MAP, "other-config"),
    (api.SECRET, "app-secret"),
    (api.DEPLOYMENT, "shop"),
    (WIDGET, "gizmo"),
]
# What the rules change, by object: path -> (captured, restored).
TRANSFORMED: dict[tuple[str, str], dict[str, tuple[Any, Any]]] = {
    ("Deployment", "shop"): {
        "spec.replicas": (1, 3),
        "spec.template.spec.containers[0].image": ("shop:1.0", "shop:2.0"),
        'metadata.labels["restored.example.com/from"]': (ABSENT, "nightly"),
    },
    ("Widget", "gizmo"): {"spec.colour": ("red", "green")},
}


def objects_in(env: Env, ns: str) -> dict[tuple[str, str], Obj]:
    return {(rt.kind, name): env.kube.get(rt, ns, name) for rt, name in COMPARED}


def transformed_of(restore: Obj) -> set[tuple[str, str, str, str]]:
    return {
        (e["rule"], e["kind"], e["namespace"], e["name"])
        for e in restore["status"]["report"].get("transformed") or []
    }


def spec_schema() -> Obj:
    crd = next(c for c in load_crds() if c["spec"]["names"]["kind"] == "Restore")
    schema: Obj = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    return schema


@pytest.mark.parametrize("route", ["cli", "object"])
def test_transforms_change_only_what_they_say(env: Env, tmp_path: Path, route: str) -> None:
    kube = env.kube
    deploy_app(kube, "shop")
    target = f"shop-{route}"
    rules_file = tmp_path / "transforms.yaml"
    rules_file.write_text(RULES)
    with env.running():
        take_backup(env)
        captured = objects_in(env, "shop")
        if route == "cli":
            proc = mover(
                env,
                tmp_path,
                "app",
                "restore",
                "moved",
                "--from-backup",
                "nightly",
                "--namespace-mapping",
                f"shop={target}",
                "--transform",
                str(rules_file),
                "--wait",
            )
            assert proc.returncode == 0, proc.stdout + proc.stderr
            restore = kube.get(api.RESTORE, SYSTEM, "moved")
        else:
            body = restore_body(
                "moved",
                backup="nightly",
                namespaceMapping={"shop": target},
                transforms=yaml.safe_load(RULES)["transforms"],
            )
            kube.create(api.RESTORE, body)
            restore = env.wait_phase(api.RESTORE, "moved")
    assert restore["status"]["phase"] == "Completed", restore["status"]
    assert restore["spec"]["transforms"] == yaml.safe_load(RULES)["transforms"]
    created = objects_in(env, target)
    for key, original in captured.items():
        expected = {"metadata.namespace": ("shop", target), **TRANSFORMED.get(key, {})}
        assert field_differences(original, created[key]) == expected, key
    # The Deployment was held back until the volumes' data was in (then transformed again).
    results = {(e["kind"], e["name"]): e["result"] for e in restore["status"]["report"]["objects"]}
    assert results[("Deployment", "shop")] == "created"
    assert transformed_of(restore) == {
        ("scale-up", "Deployment", target, "shop"),
        ("new-image", "Deployment", target, "shop"),
        ("green-widgets", "Widget", target, "gizmo"),
    }
    assert restore["status"]["report"]["transformedCount"] == 3
    assert undeclared(restore["status"], restore_status_schema(), "status") == []
    assert undeclared(restore["spec"], spec_schema(), "spec") == []  # nothing pruned
    if route == "cli":
        lines = proc.stdout.splitlines()
        assert "Transformed (3): objects a transform rule changed" in lines
        assert f"  scale-up: Deployment {target}/shop" in lines
        assert f"  green-widgets: Widget {target}/gizmo" in lines


BAD = [
    ("missing", None, "cannot read it: No such file or directory"),
    ("not-yaml", "transforms: [\n  - a\n", "not YAML: expected the node content, but found '-'"),
    ("not-json", '{"transforms": [}', "not JSON: Expecting value: line 1 column 17"),
    ("no-rules", "rules: []\n", "unknown field rules (the file holds transforms: [rules])"),
    (
        "unknown-field",
        "transforms:\n- kinds: [Deployment]\n  patch: [{op: remove, path: /a}]\n",
        "transforms[0]: unknown field kinds (a rule has name, resource, kind, group, ",
    ),
    (
        "bad-regex",
        "transforms:\n- nameRegex: 'web-('\n  patch: [{op: remove, path: /a}]\n",
        "transforms[0].nameRegex: 'web-(' is not a regular expression: missing ), ",
    ),
    (
        "bad-op",
        "transforms:\n- patch: [{op: increment, path: /spec/replicas}]\n",
        "transforms[0].patch[0].op: 'increment'; one of add, remove, replace, move, copy, test",
    ),
    (
        "bad-pointer",
        "transforms:\n- patch: [{op: add, path: metadata/labels/a, value: b}]\n",
        "transforms[0].patch[0].path: 'metadata/labels/a' is not a JSON Pointer: it must be "
        "empty or start with /",
    ),
    (
        "bad-escape",
        "transforms:\n- patch: [{op: add, path: /metadata/labels/a~b, value: b}]\n",
        "~ must be followed by 0 (~) or 1 (/)",
    ),
    (
        "no-value",
        "transforms:\n- patch: [{op: replace, path: /spec/replicas}]\n",
        "transforms[0].patch[0]: replace needs value",
    ),
    (
        "date",
        "transforms:\n- patch: [{op: add, path: /metadata/labels/day, value: 2024-01-31}]\n",
        "transforms[0].patch[0].value: 2024-01-31 (date) is not a JSON value; quote it",
    ),
]


@pytest.mark.parametrize(("text", "message"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_transforms_are_one_line_exit_2_and_create_nothing(
    env: Env, tmp_path: Path, text: str | None, message: str
) -> None:
    path = tmp_path / "transforms.yaml"
    if text is not None:
        path.write_text(text)
    before = cluster_state(env.kube)
    proc = mover(
        env, tmp_path, "app", "restore", "r", "--from-backup", "nightly", "--transform", str(path)
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"mover: error: --transform {path}: "), lines[0]
    assert message in lines[0], lines[0]
    assert env.kube.list(api.RESTORE, SYSTEM) == []
    assert cluster_state(env.kube) == before


def test_transforms_that_cannot_apply_fail_the_restore_before_any_write(
    env: Env, tmp_path: Path
) -> None:
    kube = env.kube
    deploy_app(kube, "shop")
    typo = tmp_path / "typo.json"
    typo.write_text(
        '[{"name": "typo", "kind": "Deployment",'
        ' "patch": [{"op": "replace", "path": "/spec/replicaz", "value": 2}]}]'
    )
    with env.running():
        take_backup(env)
        before = cluster_state(kube)
        # Past the CLI (e.g. kubectl apply): checked by the controller the same way.
        bad_op = [{"patch": [{"op": "increment", "path": "/spec/replicas"}]}]
        kube.create(
            api.RESTORE,
            restore_body(
                "bad-op", backup="nightly", namespaceMapping={"shop": "shop-x"}, transforms=bad_op
            ),
        )
        failed = env.wait_phase(api.RESTORE, "bad-op")
        # Well formed, but /spec/replicaz is not there to replace.
        proc = mover(
            env,
            tmp_path,
            "app",
            "restore",
            "typo",
            "--from-backup",
            "nightly",
            "--namespace-mapping",
            "shop=shop-typo",
            "--transform",
            str(typo),
            "--wait",
        )
    ready = {c["type"]: c for c in failed["status"]["conditions"]}["Ready"]
    assert failed["status"]["phase"] == "Failed"
    assert ready["reason"] == "InvalidTransform"
    assert ready["message"] == (
        "spec.transforms[0].patch[0].op: 'increment'; one of add, remove, replace, move, copy, test"
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    restore = kube.get(api.RESTORE, SYSTEM, "typo")
    ready = {c["type"]: c for c in restore["status"]["conditions"]}["Ready"]
    assert restore["status"]["phase"] == "Failed" and ready["reason"] == "TransformFailed"
    assert ready["message"] == (
        "transform 'typo' (transforms[0]) does not apply to Deployment shop-typo/shop: patch[0] "
        "replace /spec/replicaz: no member 'replicaz' in the object at /spec (guard it with a "
        "test op, or narrow the rule)"
    )
    assert "TransformFailed" in proc.stderr and "shop-typo/shop" in proc.stderr
    assert not restore["status"].get("report")
    assert cluster_state(kube) == before  # not even the namespace
