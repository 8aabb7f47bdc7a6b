"""Restore fidelity end to end: a StatefulSet app (a headless Service, volumeClaimTemplates, a
NodePort Service, a ConfigMap and a Secret that name the database by its Service DNS name, Helm's
release Secret, GitOps tracking metadata) backed up by the real controller and node agent and
restored; every restored object is compared with what was captured, field by field, and may
differ only as docs/kubernetes.md (Restoring) says."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mover.objects.repository import Repository
from mover.pipeline.replicate import init_target, replicate
from mover.storage.stack import open_backend
from mover_k8s import api, store
from mover_k8s.cli import load_crds
from mover_k8s.controller.restore.plan import Planner
from mover_k8s.errors import KubeError
from mover_k8s.k8s.client import Kube, ResourceType
from mover_k8s.repo_access import Repositories

from .conftest import (
    PASSWORD,
    SYSTEM,
    Env,
    Obj,
    backup_body,
    fill_volume,
    read_bytes,
    restore_body,
    storage_class,
    volume_path,
)
from .test_restore_fidelity import GITOPS_ANNOTATIONS, GITOPS_LABELS, helm_release_secret

STATEFUL_SET = ResourceType(
    "apps", "v1", "statefulsets", "StatefulSet", True, frozenset(), api.STATUS
)
PRIMARY = "postgres-0.postgres.shop.svc.cluster.local"
DATABASE_URL = "postgres://app:hunter2@postgres.shop.svc:5432/orders"
WEB_IP = "10.96.0.40"
WEB_NODE_PORT = 30080
CLAIM = "data-postgres-0"  # the claim the StatefulSet controller makes from its template

# Every object the app is made of, and what a restore makes of it.
RESTORED: list[tuple[ResourceType, str]] = [
    (api.NAMESPACE, "shop"),
    (api.CONFIG_MAP, "db-config"),
    (api.SECRET, "db-credentials"),
    (api.SECRET, "sh.helm.release.v1.shop.v1"),
    (api.SERVICE, "postgres"),
    (api.SERVICE, "web"),
    (STATEFUL_SET, "postgres"),
    (api.PVC, CLAIM),
]


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def tracked(name: str, ns: str, **labels: str) -> Obj:
    """Metadata as a GitOps tool leaves it (Argo CD, Flux, Helm)."""
    return {
        "name": name,
        "namespace": ns,
        "labels": dict(GITOPS_LABELS, **labels),
        "annotations": dict(GITOPS_ANNOTATIONS),
    }


def deploy_postgres(kube: Kube, ns: str = "shop") -> bytes:
    """The app as it runs (what the cluster assigned written in: the web Service's clusterIP and
    nodePort, the claim of the StatefulSet's template, its pod); returns its volume's data."""
    if kube.find(api.STORAGE_CLASS, None, "fast") is None:
        kube.create(api.STORAGE_CLASS, storage_class("fast"))
    kube.create(api.NAMESPACE, {"metadata": {"name": ns, "labels": {"team": "shop"}}})
    labels = {"app": "postgres"}
    kube.create(
        api.CONFIG_MAP,
        {
            "metadata": tracked("db-config", ns),
            "data": {"PRIMARY_HOST": PRIMARY, "greeting": "the shop is open"},
        },
    )
    kube.create(
        api.SECRET,
        {
            "metadata": tracked("db-credentials", ns),
            "type": "Opaque",
            "data": {"url": b64(DATABASE_URL), "password": b64("hunter2")},
        },
    )
    release = helm_release_secret(ns)
    del release["metadata"]["uid"]
    kube.create(api.SECRET, release)
    kube.create(
        api.SERVICE,
        {
            "metadata": tracked("postgres", ns, **labels),
            "spec": {
                "clusterIP": "None",
                "clusterIPs": ["None"],
                "selector": labels,
                "ports": [{"name": "pg", "port": 5432, "targetPort": 5432}],
            },
        },
    )
    kube.create(
        api.SERVICE,
        {
            "metadata": tracked("web", ns, app="web"),
            "spec": {
                "type": "NodePort",
                "clusterIP": WEB_IP,
                "clusterIPs": [WEB_IP],
                "selector": {"app": "web"},
                "ports": [
                    {"name": "http", "port": 80, "targetPort": 8080, "nodePort": WEB_NODE_PORT}
                ],
            },
        },
    )
    template_spec = {
        "containers": [
            {
                "name": "postgres",
                "image": "postgres:16",
                "env": [{"name": "PRIMARY_HOST", "value": PRIMARY}],
                "volumeMounts": [{"name": "data", "mountPath": "/var/lib/postgresql/data"}],
            }
        ]
    }
    claim_spec = {
        "accessModes": ["ReadWriteOnce"],
        "storageClassName": "fast",
        "resources": {"requests": {"storage": "3Mi"}},
    }
    sts = kube.create(
        STATEFUL_SET,
        {
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": tracked("postgres", ns, **labels),
            "spec": {
                "serviceName": "postgres",
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {"metadata": {"labels": labels}, "spec": template_spec},
                "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": claim_spec}],
            },
        },
    )
    kube.patch_status(STATEFUL_SET, ns, "postgres", {"replicas": 1, "readyReplicas": 1})
    kube.create(
        api.PVC,
        {"metadata": {"name": CLAIM, "namespace": ns, "labels": labels}, "spec": claim_spec},
    )
    kube.create(
        api.POD,
        {
            "metadata": {
                "name": "postgres-0",
                "namespace": ns,
                "labels": labels,
                "ownerReferences": [
                    {
                        "apiVersion": "apps/v1",
                        "kind": "StatefulSet",
                        "name": "postgres",
                        "uid": sts["metadata"]["uid"],
                        "controller": True,
                    }
                ],
            },
            "spec": dict(template_spec, nodeName="node-a", hostname="postgres-0"),
        },
    )
    return fill_volume(volume_path(kube, ns, CLAIM), 7)


def captured_objects(kube: Kube, ns: str = "shop") -> dict[tuple[str, str], Obj]:
    return {
        (rt.kind, name): kube.get(rt, None if rt is api.NAMESPACE else ns, name)
        for rt, name in RESTORED
    }


def restored_objects(kube: Kube, ns: str) -> dict[tuple[str, str], Obj]:
    return {
        (rt.kind, name): kube.get(rt, None, ns) if rt is api.NAMESPACE else kube.get(rt, ns, name)
        for rt, name in RESTORED
    }


# -- field by field ---------------------------------------------------------------------------

ABSENT = "<absent>"
ASSIGNED = "<whatever the cluster assigns>"  # a documented difference of a value made anew
SERVER_OWNED = ("uid", "resourceVersion", "creationTimestamp", "generation", "managedFields")


def leaves(node: Any, path: str = "") -> dict[str, Any]:
    """Every value of `node` by its path: `spec.ports[0].nodePort`, `metadata.labels["a/b"]`."""
    if isinstance(node, dict) and node:
        found: dict[str, Any] = {}
        for key, value in node.items():
            plain = key.replace("_", "").replace("-", "").isalnum()
            found.update(
                leaves(value, (f"{path}.{key}" if path else key) if plain else f'{path}["{key}"]')
            )
        return found
    if isinstance(node, list) and node:
        found = {}
        for index, value in enumerate(node):
            found.update(leaves(value, f"{path}[{index}]"))
        return found
    return {path: node}


def field_differences(captured: Obj, created: Obj) -> dict[str, tuple[Any, Any]]:
    """Where the created object differs from the captured one: path -> (captured, created),
    leaving out what the API server owns (status, uid, resourceVersion, timestamps...)."""

    def kept(obj: Obj) -> dict[str, Any]:
        return {
            path: value
            for path, value in leaves(obj).items()
            if not path.startswith("status")
            and not any(path.startswith(f"metadata.{name}") for name in SERVER_OWNED)
        }

    before, after = kept(captured), kept(created)
    return {
        path: (before.get(path, ABSENT), after.get(path, ABSENT))
        for path in sorted(before.keys() | after.keys())
        if before.get(path, ABSENT) != after.get(path, ABSENT)
    }


def documented_differences(
    captured: Obj,
    target: str,
    cluster_ip_kept: bool,
    node_ports_kept: bool,
    rewritten: dict[str, tuple[Any, Any]] | None = None,
) -> dict[str, tuple[Any, Any]]:
    """What docs/kubernetes.md lets a restore into namespace `target` change: the namespace;
    a Service's clusterIP(s) (not a headless one's), unless kept; its nodePorts, unless kept; a
    claim's volume (a new one); the namespace references rewritten (given)."""
    meta, spec = captured["metadata"], captured.get("spec") or {}
    expected: dict[str, tuple[Any, Any]] = {}
    if captured["kind"] == "Namespace":
        expected["metadata.name"] = (meta["name"], target)
    else:
        expected["metadata.namespace"] = (meta["namespace"], target)
    if captured["kind"] == "Service":
        if spec.get("clusterIP") != "None" and not cluster_ip_kept:
            expected["spec.clusterIP"] = (spec["clusterIP"], ASSIGNED)
            for index, ip in enumerate(spec.get("clusterIPs") or []):
                expected[f"spec.clusterIPs[{index}]"] = (ip, ASSIGNED)
        for index, port in enumerate(spec.get("ports") or []):
            if "nodePort" in port and not node_ports_kept:
                expected[f"spec.ports[{index}].nodePort"] = (port["nodePort"], ASSIGNED)
    if captured["kind"] == "PersistentVolumeClaim":
        expected["spec.volumeName"] = (spec["volumeName"], ASSIGNED)
    expected.update(rewritten or {})
    return expected


def assert_restored_as_documented(
    captured: dict[tuple[str, str], Obj],
    created: dict[tuple[str, str], Obj],
    documented: Callable[[Obj], dict[str, tuple[Any, Any]]],
) -> None:
    for key, original in captured.items():
        actual = field_differences(original, created[key])
        expected = documented(original)
        unexpected = {p: v for p, v in actual.items() if p not in expected}
        missing = {p: v for p, v in expected.items() if p not in actual}
        assert not unexpected and not missing, (key, unexpected, missing)
        for path, (old, new) in expected.items():
            assert actual[path][0] == old, (key, path, actual[path])
            assert new == ASSIGNED or actual[path][1] == new, (key, path, actual[path])


def assert_gitops_metadata_kept(
    captured: dict[tuple[str, str], Obj], created: dict[tuple[str, str], Obj]
) -> None:
    for key, original in captured.items():
        meta, made = original["metadata"], created[key]["metadata"]
        for field in ("labels", "annotations"):
            for name, value in (meta.get(field) or {}).items():
                assert (made.get(field) or {}).get(name) == value, (key, field, name)
    release = created[("Secret", "sh.helm.release.v1.shop.v1")]
    assert release["type"] == "helm.sh/release.v1"


def undeclared(value: Any, schema: Obj, path: str) -> list[str]:
    """Fields of `value` its CRD schema does not declare (an API server prunes them)."""
    if isinstance(value, dict) and "properties" in schema:
        found = []
        for key, child in value.items():
            if key not in schema["properties"]:
                found.append(f"{path}.{key}")
            else:
                found += undeclared(child, schema["properties"][key], f"{path}.{key}")
        return found
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [
            p for i, v in enumerate(value) for p in undeclared(v, schema["items"], f"{path}[{i}]")
        ]
    return []


def restore_status_schema() -> Obj:
    crd = next(c for c in load_crds() if c["spec"]["names"]["kind"] == "Restore")
    schema: Obj = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
    return schema


def references_of(restore: Obj) -> set[tuple[str, str, str, str, str, bool]]:
    return {
        (
            e["kind"],
            e["namespace"],
            e["name"],
            e["path"],
            e["from"] + "->" + e["to"],
            e["rewritten"],
        )
        for e in restore["status"]["report"].get("namespaceReferences") or []
    }


def dropped_of(restore: Obj) -> set[tuple[str, str, str, str]]:
    return {
        (e["name"], e["path"], e["value"], e["reason"])
        for e in restore["status"]["report"].get("dropped") or []
    }


def take_backup(env: Env) -> Obj:
    env.kube.create(api.BACKUP, backup_body("nightly", includedNamespaces=["shop"]))
    backup = env.wait_phase(api.BACKUP, "nightly")
    assert backup["status"]["phase"] == "Completed", backup["status"]
    return backup


NODE_PORT_REASON = (
    "node ports are given anew by the cluster (a captured one collides on another cluster); "
    "spec.preserveNodePorts keeps them"
)
CONTAINER = "spec.template.spec.containers[name=postgres]"


def expected_references(
    ns: str, to: str, rewritten: bool
) -> set[tuple[str, str, str, str, str, bool]]:
    moved = f"shop->{to}"
    return {
        ("ConfigMap", ns, "db-config", "data.PRIMARY_HOST", moved, rewritten),
        ("Secret", ns, "db-credentials", "data.url", moved, rewritten),
        (
            "StatefulSet",
            ns,
            "postgres",
            f"{CONTAINER}.env[name=PRIMARY_HOST].value",
            moved,
            rewritten,
        ),
    }


# -- the tests --------------------------------------------------------------------------------


def test_backup_records_the_cluster_it_was_taken_on(env: Env) -> None:
    deploy_postgres(env.kube)
    with env.running():
        backup = take_backup(env)
    repo = Repositories(env.kube).open(SYSTEM, "default")
    try:
        doc = store.load_document(repo, backup["status"]["objectsSnapshot"])
    finally:
        repo.close()
    kube_system = env.kube.get(api.NAMESPACE, None, "kube-system")
    assert doc["clusterId"] == kube_system["metadata"]["uid"]
    # What a restore makes of it: the same cluster only when the recorded id is this one's.
    reconciler = Planner(env.kube, Repositories(env.kube))
    same = reconciler._options({}, doc, "full")
    assert same.same_cluster and same.cluster_ips == {WEB_IP: "shop/web"}
    for recorded in ("", "another-cluster-uid"):
        other = reconciler._options({}, dict(doc, clusterId=recorded), "full")
        assert not other.same_cluster and other.cluster_ips == {}


def test_full_restore_next_to_the_original_keeps_headless_and_reports(
    env: Env, tmp_path: Path
) -> None:
    """Into another namespace of the same cluster, the original still running: the web
    Service's IP and node port are the original's, so both are dropped (the cluster gives new
    ones) and said; the headless Service stays headless; the DNS names of the old namespace in
    the data are reported, not rewritten."""
    kube = env.kube
    data = deploy_postgres(kube)
    with env.running():
        take_backup(env)
        captured = captured_objects(kube)
        kube.create(
            api.RESTORE,
            restore_body("copy", backup="nightly", namespaceMapping={"shop": "shop-copy"}),
        )
        restore = env.wait_phase(api.RESTORE, "copy")
    status = restore["status"]
    assert status["phase"] == "Completed", status
    created = restored_objects(kube, "shop-copy")
    assert created[("Service", "postgres")]["spec"]["clusterIP"] == "None"
    assert_restored_as_documented(
        captured,
        created,
        lambda obj: documented_differences(
            obj, "shop-copy", cluster_ip_kept=False, node_ports_kept=False
        ),
    )
    assert_gitops_metadata_kept(captured, created)
    assert kube.find(api.POD, "shop-copy", "postgres-0") is None  # its StatefulSet makes it
    assert read_bytes(volume_path(kube, "shop-copy", CLAIM)) == data
    assert kube.get(api.SERVICE, "shop", "web")["spec"]["ports"][0]["nodePort"] == WEB_NODE_PORT
    assert dropped_of(restore) == {
        (
            "web",
            "spec.clusterIP",
            WEB_IP,
            "used by Service shop/web in this cluster; the cluster assigns a new one",
        ),
        ("web", "spec.ports[name=http].nodePort", str(WEB_NODE_PORT), NODE_PORT_REASON),
    }
    report = status["report"]
    assert report["droppedCount"] == 2 and report["namespaceReferenceCount"] == 3
    assert references_of(restore) == expected_references("shop-copy", "shop-copy", False)
    assert undeclared(status, restore_status_schema(), "status") == []
    assert "hunter2" not in str(status) and b64(DATABASE_URL) not in str(status)
    described = mover(env, tmp_path, "app", "describe", "copy", "--restore")
    assert described.returncode == 0, described.stderr
    lines = described.stdout.splitlines()
    assert "  ConfigMap shop-copy/db-config data.PRIMARY_HOST: shop -> shop-copy" in lines
    assert "  Secret shop-copy/db-credentials data.url: shop -> shop-copy" in lines
    assert (
        f"  Service shop-copy/web spec.ports[name=http].nodePort {WEB_NODE_PORT}: "
        f"{NODE_PORT_REASON}" in lines
    )
    assert "hunter2" not in described.stdout


def mover(env: Env, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The `mover` command as a user runs it, against this cluster."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("MOVER_", "KUBE"))}
    environ["KUBECONFIG"] = str(env.served.kubeconfig(tmp_path / "kubeconfig"))
    return subprocess.run(
        [sys.executable, "-m", "mover", *args],
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


def test_restore_with_the_flags_keeps_node_ports_and_rewrites_references(
    env: Env, tmp_path: Path
) -> None:
    """The namespace gone (its addresses free again), restored under a new name with
    --preserve-node-ports and --rewrite-namespace-references: the web Service gets its IP (same
    cluster, free) and node port back; the DNS names in the data follow the move."""
    kube = env.kube
    data = deploy_postgres(kube)
    with env.running():
        take_backup(env)
        captured = captured_objects(kube)
        kube.delete(api.NAMESPACE, None, "shop")
        proc = mover(
            env,
            tmp_path,
            "app",
            "restore",
            "moved",
            "--from-backup",
            "nightly",
            "--namespace-mapping",
            "shop=shop-new",
            "--preserve-node-ports",
            "--rewrite-namespace-references",
            "--wait",
        )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    restore = kube.get(api.RESTORE, SYSTEM, "moved")
    assert restore["spec"]["preserveNodePorts"] is True
    assert restore["spec"]["rewriteNamespaceReferences"] is True
    created = restored_objects(kube, "shop-new")
    new_primary = "postgres-0.postgres.shop-new.svc.cluster.local"
    rewritten = {
        ("ConfigMap", "db-config"): {"data.PRIMARY_HOST": (PRIMARY, new_primary)},
        ("Secret", "db-credentials"): {
            "data.url": (
                b64(DATABASE_URL),
                b64("postgres://app:hunter2@postgres.shop-new.svc:5432/orders"),
            )
        },
        ("StatefulSet", "postgres"): {
            "spec.template.spec.containers[0].env[0].value": (PRIMARY, new_primary)
        },
    }
    assert_restored_as_documented(
        captured,
        created,
        lambda obj: documented_differences(
            obj,
            "shop-new",
            cluster_ip_kept=True,
            node_ports_kept=True,
            rewritten=rewritten.get((obj["kind"], obj["metadata"]["name"])),
        ),
    )
    assert_gitops_metadata_kept(captured, created)
    web = created[("Service", "web")]["spec"]
    assert (web["clusterIP"], web["ports"][0]["nodePort"]) == (WEB_IP, WEB_NODE_PORT)
    assert created[("ConfigMap", "db-config")]["data"]["greeting"] == "the shop is open"
    assert read_bytes(volume_path(kube, "shop-new", CLAIM)) == data
    assert dropped_of(restore) == set()
    assert references_of(restore) == expected_references("shop-new", "shop-new", True)
    lines = proc.stdout.splitlines()
    assert lines[0] == "Restore mover-system/moved: Completed"
    assert "  ConfigMap shop-new/db-config data.PRIMARY_HOST: shop -> shop-new (rewritten)" in lines
    assert "  Secret shop-new/db-credentials data.url: shop -> shop-new (rewritten)" in lines
    assert "hunter2" not in proc.stdout
    assert "Not carried over" not in proc.stdout


def test_restore_on_another_cluster_drops_the_cluster_ip_and_keeps_headless(
    make_env: Callable[[str], Env], tmp_path: Path
) -> None:
    first = make_env("one")
    deploy_postgres(first.kube)
    with first.running():
        take_backup(first)
    captured = captured_objects(first.kube)
    source = Repository.open(open_backend(str(first.repo_dir)), PASSWORD.encode())
    replica_dir = tmp_path / "replica"
    target = init_target(source, open_backend(str(replica_dir)), b"replica password")
    try:
        replicate(source, target)
    finally:
        source.close()
        target.close()
    second = make_env("two")
    second.repository("replica", replica_dir, password="replica password")
    second.kube.create(api.STORAGE_CLASS, storage_class("fast"))
    with second.running():
        second.kube.create(
            api.RESTORE,
            restore_body(
                "dr", backup="nightly", repository="replica", namespaceMapping={"shop": "shop-dr"}
            ),
        )
        restore = second.wait_phase(api.RESTORE, "dr")
    assert restore["status"]["phase"] == "Completed", restore["status"]
    created = restored_objects(second.kube, "shop-dr")
    assert_restored_as_documented(
        captured,
        created,
        lambda obj: documented_differences(
            obj, "shop-dr", cluster_ip_kept=False, node_ports_kept=False
        ),
    )
    assert created[("Service", "postgres")]["spec"]["clusterIPs"] == ["None"]
    # The IP means nothing here: dropped without a word; the node port is said.
    assert dropped_of(restore) == {
        ("web", "spec.ports[name=http].nodePort", str(WEB_NODE_PORT), NODE_PORT_REASON)
    }
    assert references_of(restore) == expected_references("shop-dr", "shop-dr", False)


def test_the_emulator_refuses_an_address_another_service_holds(env: Env) -> None:
    """What the tests above lean on: as an API server's allocators, the emulator refuses a
    clusterIP or nodePort that is taken, so a restore that kept one would fail."""
    kube = env.kube
    deploy_postgres(kube)
    kube.create(api.NAMESPACE, {"metadata": {"name": "other"}})
    taken_ip = {"clusterIP": WEB_IP, "ports": [{"port": 80}]}
    taken_port = {"type": "NodePort", "ports": [{"port": 80, "nodePort": WEB_NODE_PORT}]}
    for spec in (taken_ip, taken_port):
        body = {"metadata": {"name": "clash", "namespace": "other"}, "spec": spec}
        with pytest.raises(KubeError, match="already allocated") as refused:
            kube.create(api.SERVICE, body)
        assert refused.value.status == 422
    # Another headless Service is fine: `None` is no address.
    headless = {"clusterIP": "None", "clusterIPs": ["None"]}
    kube.create(api.SERVICE, {"metadata": {"name": "h", "namespace": "other"}, "spec": headless})
