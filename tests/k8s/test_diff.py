"""`mover app diff`: the live objects a Backup captured against a directory of manifests.

The rules are checked on the pure functions with hand-written expectations; the command runs as
a user runs it (a `mover` subprocess against the emulator) on the app every test backs up, with
a desired directory that differs from it in one field, one missing object and one extra one."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from mover.errors import UsageError
from mover_k8s import api
from mover_k8s.diff import (
    Changed,
    FieldChange,
    Ref,
    compare,
    diff,
    load_desired,
)
from mover_k8s.external import External, external_names
from mover_k8s.k8s.types import ResourceType

from .conftest import (
    SYSTEM,
    WIDGETS_CRD,
    Env,
    app_manifests,
    backup_body,
    deploy_app,
    restore_body,
    storage_class,
)
from .test_cli import as_json, mover

INGRESS = ResourceType(
    "networking.k8s.io", "v1", "ingresses", "Ingress", True, frozenset(), frozenset({"status"})
)

# -- the rules, on hand-written objects ------------------------------------------------------


def deployment(image: str = "shop:1.0", **extra: Any) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "shop", "namespace": "shop", "labels": {"app": "shop"}},
        "spec": {
            "replicas": 2,
            "template": {"spec": {"containers": [{"name": "shop", "image": image, **extra}]}},
        },
    }


def test_defaulted_fields_are_not_drift_but_changed_ones_are() -> None:
    desired = deployment()
    live = deployment(image="shop:1.1", imagePullPolicy="IfNotPresent")  # defaulted: ignored
    live["spec"]["strategy"] = {"type": "RollingUpdate"}  # defaulted
    live["spec"]["replicas"] = 5  # scaled by hand: drift
    live["metadata"].update(
        uid="u-1",
        resourceVersion="42",
        creationTimestamp="2026-01-01T00:00:00Z",
        generation=3,
        managedFields=[{"manager": "kubectl"}],
        annotations={"kubectl.kubernetes.io/last-applied-configuration": "{}"},
    )
    live["status"] = {"replicas": 5}
    report = diff([live], [desired])
    assert report.changed == [
        Changed(
            "Deployment",
            "shop",
            "shop",
            [
                FieldChange("spec.replicas", 2, 5),
                FieldChange(
                    "spec.template.spec.containers[name=shop].image", "shop:1.0", "shop:1.1"
                ),
            ],
        )
    ]
    assert report.only_in_cluster == report.only_in_git == [] and report.drift


def test_compare_paths_lists_and_absent_fields() -> None:
    desired = {
        "metadata": {"labels": {"app.kubernetes.io/name": "shop", "tier": "web"}},
        "spec": {"ports": [{"port": 80}], "args": ["a", "b"], "env": [{"name": "X", "value": "1"}]},
    }
    live = {
        "metadata": {"labels": {"app.kubernetes.io/name": "shop"}},
        "spec": {
            "ports": [{"port": 81, "protocol": "TCP"}],
            "args": ["a"],
            "env": [{"name": "X", "value": "1"}, {"name": "INJECTED", "value": "2"}],
        },
    }
    assert compare(desired, live) == [
        FieldChange("metadata.labels.tier", "web", None),
        FieldChange("spec.ports[0].port", 80, 81),
        FieldChange("spec.args", ["a", "b"], ["a"]),
        FieldChange("spec.env[name=INJECTED]", None, {"name": "INJECTED", "value": "2"}),
    ]
    assert compare({"metadata": {"labels": {"a.b/c": "x"}}}, {"metadata": {"labels": {}}}) == [
        FieldChange('metadata.labels["a.b/c"]', "x", None)
    ]
    assert compare({"spec": {}}, {}) == []  # an empty value in git is none


def test_matching_ignored_objects_namespaces_and_secrets() -> None:
    pod_owner = {"kind": "ReplicaSet", "name": "rs", "uid": "rs-uid", "controller": True}
    live = [
        deployment(),
        {"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {
            "name": "rs", "namespace": "shop", "uid": "rs-uid"}},
        {"apiVersion": "v1", "kind": "Pod", "metadata": {
            "name": "p", "namespace": "shop", "ownerReferences": [pod_owner]}},
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "namespace": "shop"},
         "data": {"token": base64.b64encode(b"live").decode()}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "shop"},
         "spec": {"clusterIP": "10.0.0.1", "ports": [{"port": 80}]}},
    ]  # fmt: skip
    live[2]["metadata"]["ownerReferences"][0]["uid"] = "rs-uid"
    desired = [
        dict(deployment(), apiVersion="apps/v1beta2"),  # another version: the same object
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},  # namespace defaulted
         "stringData": {"token": "from-git-value"}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
         "spec": {"clusterIP": "10.9.9.9", "ports": [{"port": 80}]}},  # assigned: ignored
    ]  # fmt: skip
    report = diff(live, desired, default_namespace="shop")
    assert report.only_in_cluster == [Ref("ReplicaSet", "shop", "rs")]
    assert [i.name for i in report.ignored] == ["p"]
    assert report.only_in_git == []
    ((secret,),) = [c.fields for c in report.changed]
    assert secret.path == "data.token"
    assert str(secret.desired).startswith("sha256:") and secret.desired != secret.live
    shown = json.dumps(report.as_dict())
    assert "from-git-value" not in shown and base64.b64encode(b"live").decode() not in shown
    assert report.same == 2
    with pytest.raises(UsageError, match="Deployment shop/shop is declared twice"):
        diff(live, [deployment(), deployment()])


def test_external_names_from_live_state() -> None:
    objects = [
        {"kind": "Service", "metadata": {"name": "lb", "namespace": "a", "annotations": {
            "external-dns.alpha.kubernetes.io/hostname": "shop.example.com, www.example.com"}},
         "spec": {"type": "LoadBalancer"},
         "status": {"loadBalancer": {"ingress": [{"hostname": "abc.elb.amazonaws.com"},
                                                 {"ip": "203.0.113.7"}]}}},
        {"kind": "Service", "metadata": {"name": "db", "namespace": "a"},
         "spec": {"type": "ExternalName", "externalName": "db.corp.example"}},
        {"kind": "Ingress", "metadata": {"name": "web", "namespace": "a"},
         "spec": {"rules": [{"host": "shop.example.com"}], "tls": [{"hosts": ["shop.example.com",
                                                                             "x.example.com"]}]}},
        {"kind": "ConfigMap", "metadata": {"name": "c", "namespace": "a"}, "data": {"k": "v"}},
    ]  # fmt: skip
    assert external_names(objects) == [
        External("Service", "a", "lb", "loadBalancerHostname", "abc.elb.amazonaws.com"),
        External("Service", "a", "lb", "loadBalancerIP", "203.0.113.7"),
        External("Service", "a", "lb", "externalDNS:hostname", "shop.example.com"),
        External("Service", "a", "lb", "externalDNS:hostname", "www.example.com"),
        External("Service", "a", "db", "externalName", "db.corp.example"),
        External("Ingress", "a", "web", "ingressHost", "shop.example.com"),
        External("Ingress", "a", "web", "ingressHost", "x.example.com"),
    ]


def test_load_desired_reads_a_tree_of_multi_document_files(tmp_path: Path) -> None:
    (tmp_path / "base" / "deep").mkdir(parents=True)
    (tmp_path / "base" / "all.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\n---\n"
        "apiVersion: v1\nkind: List\nitems:\n"
        "- {apiVersion: v1, kind: ConfigMap, metadata: {name: b}}\n"
    )
    (tmp_path / "base" / "deep" / "c.yml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n"
    )
    (tmp_path / "README.md").write_text("not a manifest")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "x.yaml").write_text("{{{ not read")
    names = [o["metadata"]["name"] for o in load_desired(tmp_path)]
    assert names == ["a", "b", "c"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("kind: [unclosed\n", "bad.yaml: line 2: not valid YAML"),
        ("- just\n- a list\n", "bad.yaml: a document is not a Kubernetes object"),
        ("apiVersion: v1\nkind: ConfigMap\nmetadata: {}\n", "bad.yaml: ConfigMap without"),
    ],
)
def test_load_desired_refuses_what_is_not_a_manifest(
    tmp_path: Path, content: str, message: str
) -> None:
    (tmp_path / "bad.yaml").write_text(content)
    with pytest.raises(UsageError, match=message):
        load_desired(tmp_path)


# -- through the CLI, against the emulator ----------------------------------------------------


def live_app(env: Env) -> None:
    """The shared app, plus what outside the cluster follows it: a LoadBalancer with its
    cloud hostname and an Ingress with an external-dns name."""
    deploy_app(env.kube, "shop")
    env.kube.create(
        api.SERVICE,
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {
                "name": "public",
                "namespace": "shop",
                "annotations": {"external-dns.alpha.kubernetes.io/hostname": "shop.example.com"},
            },
            "spec": {"type": "LoadBalancer", "ports": [{"port": 443}]},
        },
    )
    env.kube.patch_status(
        api.SERVICE,
        "shop",
        "public",
        {"loadBalancer": {"ingress": [{"hostname": "a1b2.elb.eu-west-1.amazonaws.com"}]}},
    )
    env.kube.create(
        INGRESS,
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "Ingress",
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"rules": [{"host": "www.shop.example"}]},
        },
    )


def desired_dir(root: Path) -> Path:
    """Git's view: the app's manifests (namespace left out, as kubectl -n would have it), with
    mode changed in one ConfigMap, other-config missing, and an extra ConfigMap."""
    root.mkdir()
    docs = []
    for _, manifest in app_manifests("shop"):
        body = json.loads(json.dumps(manifest))
        if body["metadata"]["name"] == "other-config":
            continue
        if body["metadata"]["name"] == "app-config":
            body["data"]["mode"] = "staging"
        body["metadata"].pop("namespace", None)
        docs.append(body)
    docs.append(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "new-config"}, "data": {}}
    )
    (root / "app.yaml").write_text(yaml.safe_dump_all(docs))
    # Everything else the capture holds, in a subdirectory, as its live objects are declared.
    rest = [
        WIDGETS_CRD,
        storage_class("fast"),
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "shop"}},
    ]
    rbac = "rbac.authorization.k8s.io/v1"
    subject = {"kind": "ServiceAccount", "name": "shop", "namespace": "shop"}
    role_ref = {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole"}
    rest += [
        {"apiVersion": rbac, "kind": "ClusterRole", "metadata": {"name": n}, "rules": []}
        for n in ("view", "shop-reader")
    ]
    rest += [
        {"apiVersion": rbac, "kind": "RoleBinding", "metadata": {"name": "shop-view"},
         "roleRef": dict(role_ref, name="view"), "subjects": [subject]},
        {"apiVersion": rbac, "kind": "ClusterRoleBinding", "metadata": {"name": "shop-reader"},
         "roleRef": dict(role_ref, name="shop-reader"), "subjects": [subject]},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "public"},
         "spec": {"type": "LoadBalancer", "ports": [{"port": 443}]}},
        {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "web"},
         "spec": {"rules": [{"host": "www.shop.example"}]}},
    ]  # fmt: skip
    (root / "cluster").mkdir()
    for i, doc in enumerate(rest):
        (root / "cluster" / f"{i}.yaml").write_text(yaml.safe_dump(doc))
    return root


def test_app_diff_reports_drift_and_external_names(env: Env, tmp_path: Path) -> None:
    live_app(env)
    with env.running(agent=False):
        env.kube.create(
            api.BACKUP, backup_body("audit", includedNamespaces=["shop"], snapshotVolumes=False)
        )
        backup = env.wait_phase(api.BACKUP, "audit")
    assert backup["status"]["phase"] == "Completed", backup["status"]
    desired = desired_dir(tmp_path / "git")
    report = as_json(
        mover(env, tmp_path, "app", "diff", "audit", "--desired", str(desired), "--json")
    )
    assert report["rootHash"] == backup["status"]["rootHash"]
    assert report["only_in_git"] == [
        {"kind": "ConfigMap", "namespace": "shop", "name": "new-config"}
    ]
    assert report["only_in_cluster"] == [
        {"kind": "ConfigMap", "namespace": "shop", "name": "other-config"}
    ]
    assert report["changed"] == [
        {
            "kind": "ConfigMap",
            "namespace": "shop",
            "name": "app-config",
            "fields": [{"path": "data.mode", "desired": "staging", "live": "production"}],
        }
    ]
    ignored = {(i["kind"], i["name"]) for i in report["ignored"]}
    assert {("ReplicaSet", "shop-5d9c"), ("Pod", "shop-5d9c-x7k2p")} <= ignored
    assert report["drift"] is True
    assert {(e["kind"], e["name"], e["type"], e["value"]) for e in report["external"]} == {
        ("Service", "public", "loadBalancerHostname", "a1b2.elb.eu-west-1.amazonaws.com"),
        ("Service", "public", "externalDNS:hostname", "shop.example.com"),
        ("Ingress", "web", "ingressHost", "www.shop.example"),
    }

    table = mover(env, tmp_path, "app", "diff", "audit", "--desired", str(desired))
    assert table.returncode == 0, table.stderr
    assert "1 only in the cluster, 1 only in git, 1 changed" in table.stdout
    assert "data.mode" in table.stdout and "a1b2.elb.eu-west-1.amazonaws.com" in table.stdout
    flagged = mover(env, tmp_path, "app", "diff", "audit", "--desired", str(desired), "--exit-code")
    assert flagged.returncode == 1
    assert flagged.stderr.strip().splitlines() == [
        "mover: error: drift: 1 only in the cluster, 1 only in git, 1 changed"
    ]

    # Git brought back in line with what ran: no drift, exit 0 even with --exit-code.
    app = yaml.safe_load_all((desired / "app.yaml").read_text())
    docs = [d for d in app if d["metadata"]["name"] != "new-config"]
    for d in docs:
        if d["metadata"]["name"] == "app-config":
            d["data"]["mode"] = "production"
    other = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "other-config"},
             "data": {"colour": "blue"}}  # fmt: skip
    (desired / "app.yaml").write_text(yaml.safe_dump_all([*docs, other]))
    clean = mover(env, tmp_path, "app", "diff", "audit", "--desired", str(desired), "--exit-code")
    assert clean.returncode == 0, clean.stderr
    assert "0 only in the cluster, 0 only in git, 0 changed" in clean.stdout


def test_app_diff_bad_input_is_one_line_exit_2(env: Env, tmp_path: Path) -> None:
    good = tmp_path / "good"
    good.mkdir()
    (good / "a.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "broken.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: [a\n")
    cases = [
        (
            ["--desired", str(tmp_path / "missing"), "b"],
            f"--desired {tmp_path / 'missing'}: no such",
        ),
        (["--desired", str(good), "nope"], "no Backup mover-system/nope; see `mover app list`"),
        (["--desired", str(bad), "b"], "broken.yaml: line 4: not valid YAML"),
    ]
    for args, message in cases:
        proc = mover(env, tmp_path, "app", "diff", *args)
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], proc.stderr
        assert proc.stdout == ""
    assert env.kube.list(api.BACKUP, SYSTEM) == []


def test_after_a_disaster_and_a_full_restore_git_sees_the_same_drift(
    make_env: Callable[[str], Env], tmp_path: Path
) -> None:
    """Issue 14: the cluster is lost; the app is restored in full on a new one from the
    repository, while git is unchanged. What `mover app diff` reports against the same git
    directory is exactly what it reported before: the restore neither adds drift (defaulted
    or assigned fields, lost metadata) nor hides any."""
    first = make_env("one")
    live_app(first)
    desired = desired_dir(tmp_path / "git")
    with first.running(agent=False):
        first.kube.create(
            api.BACKUP, backup_body("before", includedNamespaces=["shop"], snapshotVolumes=False)
        )
        assert first.wait_phase(api.BACKUP, "before")["status"]["phase"] == "Completed"
    before = as_json(
        mover(first, tmp_path, "app", "diff", "before", "--desired", str(desired), "--json")
    )
    assert before["drift"] is True  # the three differences test_app_diff_reports... names

    second = make_env("two")
    second.repository("primary", first.repo_dir)
    second.kube.create(api.STORAGE_CLASS, storage_class("fast"))
    with second.running():
        second.kube.create(api.RESTORE, restore_body("dr", backup="before", repository="primary"))
        restore = second.wait_phase(api.RESTORE, "dr")
        assert restore["status"]["phase"] == "Completed", restore["status"]
        second.kube.create(
            api.BACKUP, backup_body("after", includedNamespaces=["shop"], snapshotVolumes=False)
        )
        assert second.wait_phase(api.BACKUP, "after")["status"]["phase"] == "Completed"
    after = as_json(
        mover(second, tmp_path, "app", "diff", "after", "--desired", str(desired), "--json")
    )
    for part in ("only_in_git", "only_in_cluster", "changed", "drift"):
        assert after[part] == before[part], part
    # External names follow what the new cluster assigns: the load balancer has no hostname
    # yet; the names the objects declare came back.
    declared = {(e["kind"], e["name"], e["type"], e["value"]) for e in after["external"]}
    assert declared == {
        ("Service", "public", "externalDNS:hostname", "shop.example.com"),
        ("Ingress", "web", "ingressHost", "www.shop.example"),
    }
