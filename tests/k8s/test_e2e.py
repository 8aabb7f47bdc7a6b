"""End to end: the app (Deployment, ConfigMaps, Secret, Service, a CRD and its instance, two
PVCs whose data are files) backed up by the real controller and node agent, then restored."""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mover.objects.repository import Repository
from mover.pipeline.replicate import init_target, replicate
from mover.storage.stack import open_backend
from mover_k8s import api
from mover_k8s.k8s.client import Kube

from .conftest import (
    PASSWORD,
    WIDGET,
    Env,
    Obj,
    app_manifests,
    backup_body,
    deploy_app,
    read_bytes,
    restore_body,
    storage_class,
    volume_path,
    wait_until,
    write_app_data,
)

# What a restore may leave out or the cluster assigns anew (the list).
SERVER_FIELDS = (
    "uid",
    "resourceVersion",
    "creationTimestamp",
    "generation",
    "managedFields",
    "ownerReferences",
)


def comparable(obj: Obj, namespace: str | None = None) -> Obj:
    result = copy.deepcopy(obj)
    result.pop("status", None)
    meta = result["metadata"]
    for name in SERVER_FIELDS:
        meta.pop(name, None)
    if namespace and "namespace" in meta:
        meta["namespace"] = namespace
    spec = result.get("spec")
    if result["kind"] == "Service":
        spec.pop("clusterIP", None)
        spec.pop("clusterIPs", None)
    if result["kind"] == "PersistentVolumeClaim":
        spec.pop("volumeName", None)
    return result


def test_full_restore_into_another_namespace_with_storage_class_mapping(env: Env) -> None:
    kube = env.kube
    deploy_app(kube, "shop")
    data = write_app_data(kube, "shop")
    with env.running():
        kube.create(api.BACKUP, backup_body("nightly", includedNamespaces=["shop"]))
        backup = env.wait_phase(api.BACKUP, "nightly")
        status = backup["status"]
        assert status["phase"] == "Completed", status
        assert len(status["rootHash"]) == 64
        assert {v["pvc"] for v in status["volumes"]} == {"data-a", "data-b"}
        assert all(v["snapshot"] and v["tree"] for v in status["volumes"])
        captured = {
            (o["kind"], o["metadata"]["name"]): o
            for rt, name in [
                (api.CONFIG_MAP, "app-config"),
                (api.CONFIG_MAP, "other-config"),
                (api.SECRET, "app-secret"),
                (api.SERVICE, "shop"),
                (api.DEPLOYMENT, "shop"),
                (api.PVC, "data-a"),
                (api.PVC, "data-b"),
                (WIDGET, "gizmo"),
            ]
            for o in [kube.get(rt, "shop", name)]
        }
        kube.delete(api.NAMESPACE, None, "shop")
        assert kube.list(api.CONFIG_MAP, "shop") == []
        kube.create(
            api.RESTORE,
            restore_body(
                "back",
                backup="nightly",
                namespaceMapping={"shop": "shop-restored"},
                storageClassMapping={"fast": "standard"},
            ),
        )
        restore = env.wait_phase(api.RESTORE, "back")
    assert restore["status"]["phase"] == "Completed", restore["status"]
    for (kind, name), original in captured.items():
        rt = WIDGET if kind == "Widget" else kube.resource_for(original["apiVersion"], kind)
        restored = kube.get(rt, "shop-restored", name)
        expected = comparable(original, "shop-restored")
        if kind == "PersistentVolumeClaim":
            assert restored["spec"]["storageClassName"] == "standard"
            expected["spec"]["storageClassName"] = "standard"
        assert comparable(restored) == expected, kind
    for pvc, content in data.items():
        assert read_bytes(volume_path(kube, "shop-restored", pvc)) == content
    report: dict[str, Any] = restore["status"]["report"]
    results = {(e["kind"], e["name"]): (e["result"], e["reason"]) for e in report["objects"]}
    assert results[("ReplicaSet", "shop-5d9c")][0] == "skipped"
    assert "Deployment/shop" in results[("ReplicaSet", "shop-5d9c")][1]
    assert results[("Pod", "shop-5d9c-x7k2p")][0] == "skipped"
    assert results[("Namespace", "shop-restored")][0] == "created"
    assert results[("CustomResourceDefinition", "widgets.example.com")] == (
        "skipped",
        "exists already",
    )
    assert {v["name"]: v["result"] for v in report["volumes"]} == {
        "data-a": "restored",
        "data-b": "restored",
    }
    # The workload came after its volumes' data: the API's write order says so.
    restores = kube.list(api.VOLUME_RESTORE, "mover-system")
    last_data_write = max(int(r["metadata"]["resourceVersion"]) for r in restores)
    deployment = kube.get(api.DEPLOYMENT, "shop-restored", "shop")
    assert int(deployment["metadata"]["resourceVersion"]) > last_data_write
    assert results[("Deployment", "shop")] == ("created", "")
    assert kube.get(api.NAMESPACE, None, "shop-restored")["metadata"]["labels"] == {"team": "shop"}


def cluster_state(kube: Kube) -> dict[tuple[str, str, str], str]:
    """Every object of the cluster but mover's own and the agents' leases, with its version."""
    state = {}
    for rt in kube.discover(refresh=True):
        if "list" not in rt.verbs or rt.group in (api.GROUP, "coordination.k8s.io"):
            continue
        for obj in kube.list(rt):
            meta = obj["metadata"]
            state[(rt.kind, meta.get("namespace") or "", meta["name"])] = meta["resourceVersion"]
    return state


def take_backup(env: Env, name: str = "nightly") -> Obj:
    env.kube.create(api.BACKUP, backup_body(name, includedNamespaces=["shop"]))
    backup = env.wait_phase(api.BACKUP, name)
    assert backup["status"]["phase"] == "Completed", backup["status"]
    return backup


def test_gitops_data_only_restore_changes_no_object(env: Env) -> None:
    kube = env.kube
    deploy_app(kube, "shop")
    data = write_app_data(kube, "shop")
    with env.running():
        take_backup(env)
        kube.delete(api.NAMESPACE, None, "shop")
        # The pipeline redeploys the app from git: same manifests, new empty volumes.
        for rt, body in app_manifests("shop"):
            kube.create(rt, body)
        for pvc in data:
            assert read_bytes(volume_path(kube, "shop", pvc)) == bytes(len(data[pvc]))
        before = cluster_state(kube)
        kube.create(api.RESTORE, restore_body("data", backup="nightly", mode="data-only"))
        restore = env.wait_phase(api.RESTORE, "data")
    assert restore["status"]["phase"] == "Completed", restore["status"]
    assert cluster_state(kube) == before
    for pvc, content in data.items():
        assert read_bytes(volume_path(kube, "shop", pvc)) == content
    report = restore["status"]["report"]
    assert report["objects"] == []
    assert sorted(v["name"] for v in report["volumes"] if v["result"] == "restored") == [
        "data-a",
        "data-b",
    ]


def test_data_only_reports_a_volume_it_cannot_match(env: Env) -> None:
    kube = env.kube
    deploy_app(kube, "shop")
    data = write_app_data(kube, "shop")
    with env.running():
        take_backup(env)
        kube.delete(api.NAMESPACE, None, "shop")
        for rt, body in app_manifests("shop-next"):
            if body["metadata"]["name"] != "data-b":  # the new version dropped this volume
                kube.create(rt, body)
        kube.create(
            api.RESTORE,
            restore_body(
                "data", backup="nightly", mode="data-only", namespaceMapping={"shop": "shop-next"}
            ),
        )
        restore = env.wait_phase(api.RESTORE, "data")
    status = restore["status"]
    assert status["phase"] == "PartiallyFailed", status
    volumes = {v["name"]: v for v in status["report"]["volumes"]}
    assert volumes["data-a"]["result"] == "restored"
    assert volumes["data-b"]["result"] == "failed"
    assert volumes["data-b"]["reason"] == "no PVC shop-next/data-b in this cluster to restore into"
    assert read_bytes(volume_path(kube, "shop-next", "data-a")) == data["data-a"]


def test_granular_restore_of_one_config_map_and_one_volume(env: Env) -> None:
    kube = env.kube
    deploy_app(kube, "shop")
    data = write_app_data(kube, "shop")
    with env.running():
        take_backup(env)
        # Later: a ConfigMap deleted by mistake, both volumes overwritten.
        kube.delete(api.CONFIG_MAP, "shop", "app-config")
        kube.patch(api.CONFIG_MAP, "shop", "other-config", {"data": {"colour": "green"}})
        volume_path(kube, "shop", "data-a").write_bytes(b"\xff" * len(data["data-a"]))
        volume_path(kube, "shop", "data-b").write_bytes(b"\xee" * len(data["data-b"]))
        before = cluster_state(kube)
        kube.create(
            api.RESTORE,
            restore_body(
                "piece",
                backup="nightly",
                includedNames=["ConfigMap/app-config", "PersistentVolumeClaim/data-a"],
            ),
        )
        restore = env.wait_phase(api.RESTORE, "piece")
    assert restore["status"]["phase"] == "Completed", restore["status"]
    after = cluster_state(kube)
    new = {k for k in after if k not in before}
    assert new == {("ConfigMap", "shop", "app-config")}
    assert {k: v for k, v in after.items() if k in before} == before
    assert kube.get(api.CONFIG_MAP, "shop", "app-config")["data"] == {
        "greeting": "hello",
        "mode": "production",
    }
    assert kube.get(api.CONFIG_MAP, "shop", "other-config")["data"] == {"colour": "green"}
    assert read_bytes(volume_path(kube, "shop", "data-a")) == data["data-a"]
    assert read_bytes(volume_path(kube, "shop", "data-b")) == b"\xee" * len(data["data-b"])
    results = {(e["kind"], e["name"]): e["result"] for e in restore["status"]["report"]["objects"]}
    assert results == {
        ("ConfigMap", "app-config"): "created",
        ("PersistentVolumeClaim", "data-a"): "skipped",
    }


def test_restore_on_another_cluster_from_a_repository_copy(
    make_env: Callable[[str], Env], tmp_path: Path
) -> None:
    first = make_env("one")
    deploy_app(first.kube, "shop")
    data = write_app_data(first.kube, "shop")
    with first.running():
        backup = take_backup(first)
    # A second repository: a replica of the first (as a DR site keeps one).
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
    second.kube.create(api.STORAGE_CLASS, storage_class("standard"))
    assert second.kube.find(api.CRD, None, "widgets.example.com") is None
    with second.running():
        second.kube.create(
            api.RESTORE,
            restore_body(
                "dr",
                backup="nightly",
                repository="replica",
                storageClassMapping={"fast": "standard"},
            ),
        )
        restore = second.wait_phase(api.RESTORE, "dr")
    assert restore["status"]["phase"] == "Completed", restore["status"]
    assert restore["status"]["manifestSnapshot"] == backup["status"]["manifestSnapshot"]
    kube = second.kube
    assert kube.get(WIDGET, "shop", "gizmo")["spec"] == {"size": 3, "colour": "red"}
    assert (
        kube.get(api.SECRET, "shop", "app-secret")["data"]
        == first.kube.get(api.SECRET, "shop", "app-secret")["data"]
    )
    assert kube.get(api.DEPLOYMENT, "shop", "shop")["spec"]["replicas"] == 1
    for pvc, content in data.items():
        assert kube.get(api.PVC, "shop", pvc)["spec"]["storageClassName"] == "standard"
        assert read_bytes(volume_path(kube, "shop", pvc)) == content


def test_existing_objects_are_skipped_or_updated_by_policy(env: Env) -> None:
    kube = env.kube
    deploy_app(kube, "shop")
    write_app_data(kube, "shop")
    with env.running():
        take_backup(env)
        kube.patch(api.CONFIG_MAP, "shop", "app-config", {"data": {"greeting": "changed"}})
        only_config = {"includedKinds": ["ConfigMap"], "includedNames": ["app-config"]}
        kube.create(api.RESTORE, restore_body("keep", backup="nightly", **only_config))
        kept = env.wait_phase(api.RESTORE, "keep")
        assert kube.get(api.CONFIG_MAP, "shop", "app-config")["data"]["greeting"] == "changed"
        kube.create(
            api.RESTORE,
            restore_body(
                "replace", backup="nightly", existingResourcePolicy="update", **only_config
            ),
        )
        replaced = env.wait_phase(api.RESTORE, "replace")
    assert kube.get(api.CONFIG_MAP, "shop", "app-config")["data"]["greeting"] == "hello"
    assert [(e["name"], e["result"]) for e in kept["status"]["report"]["objects"]] == [
        ("app-config", "skipped")
    ]
    assert [(e["name"], e["result"]) for e in replaced["status"]["report"]["objects"]] == [
        ("app-config", "updated")
    ]
    assert replaced["status"]["counts"] == {"created": 0, "updated": 1, "skipped": 0, "failed": 0}


def test_resources_only_restore_makes_objects_and_moves_no_data(env: Env) -> None:
    kube = env.kube
    deploy_app(kube, "shop")
    write_app_data(kube, "shop")
    with env.running():
        take_backup(env)
        kube.create(
            api.RESTORE,
            restore_body(
                "objects",
                backup="nightly",
                mode="resources-only",
                namespaceMapping={"shop": "copy"},
            ),
        )
        restore = env.wait_phase(api.RESTORE, "objects")
    assert restore["status"]["phase"] == "Completed", restore["status"]
    assert restore["status"]["report"]["volumes"] == []
    assert kube.list(api.VOLUME_RESTORE, "mover-system") == []
    assert kube.get(WIDGET, "copy", "gizmo")["spec"] == {"size": 3, "colour": "red"}
    for pvc in ("data-a", "data-b"):  # new, empty volumes
        assert read_bytes(volume_path(kube, "copy", pvc)) == bytes(3 << 20)


def late_class() -> Obj:
    """A class no provisioner of the emulator serves: the test binds its claims, later."""
    return dict(storage_class("late"), provisioner="late.mover.test")


def bind_later(
    env: Env,
    namespace: str,
    names: list[str],
    stop: threading.Event,
    consumer: str | None = None,
) -> None:
    """Bind the claims once they exist (and, for a class that binds on first use, once their
    `consumer` Deployment exists: that is what makes a cluster bind them)."""
    kube = env.kube
    wait_until(lambda: all(kube.find(api.PVC, namespace, n) for n in names), what="claims")
    if consumer:
        wait_until(lambda: kube.find(api.DEPLOYMENT, namespace, consumer), what="the consumer")
    stop.wait(0.5)  # a provisioner takes its time
    for name in names:
        claim = kube.get(api.PVC, namespace, name)
        path = env.volume_dir / f"late-{name}.img"
        path.write_bytes(bytes(3 << 20))
        kube.create(
            api.PV,
            {
                "metadata": {"name": f"late-{namespace}-{name}"},
                "spec": {
                    "capacity": {"storage": "3Mi"},
                    "storageClassName": "late",
                    "local": {"path": str(path)},
                    "claimRef": {
                        "namespace": namespace,
                        "name": name,
                        "uid": claim["metadata"]["uid"],
                    },
                },
            },
        )
        kube.patch(api.PVC, namespace, name, {"spec": {"volumeName": f"late-{namespace}-{name}"}})
        kube.patch_status(api.PVC, namespace, name, {"phase": "Bound"})


def test_full_restore_waits_for_claims_that_are_bound_later(env: Env) -> None:
    kube = env.kube
    deploy_app(kube, "shop")
    data = write_app_data(kube, "shop")
    kube.create(api.STORAGE_CLASS, late_class())
    stop = threading.Event()
    with env.running():
        take_backup(env)
        binder = threading.Thread(
            target=bind_later, args=(env, "later", ["data-a", "data-b"], stop), daemon=True
        )
        binder.start()
        kube.create(
            api.RESTORE,
            restore_body(
                "slow",
                backup="nightly",
                namespaceMapping={"shop": "later"},
                storageClassMapping={"fast": "late"},
            ),
        )
        restore = env.wait_phase(api.RESTORE, "slow")
        binder.join(30)
    assert restore["status"]["phase"] == "Completed", restore["status"]
    for pvc, content in data.items():
        assert read_bytes(volume_path(kube, "later", pvc)) == content


def test_a_claim_never_bound_fails_its_volume_after_the_timeout(env: Env) -> None:
    kube = env.kube
    deploy_app(kube, "shop")
    write_app_data(kube, "shop")
    kube.create(api.STORAGE_CLASS, late_class())
    with env.running(bind_timeout=1.0):
        take_backup(env)
        kube.create(
            api.RESTORE,
            restore_body(
                "never",
                backup="nightly",
                namespaceMapping={"shop": "never"},
                storageClassMapping={"fast": "late"},
            ),
        )
        restore = env.wait_phase(api.RESTORE, "never")
    status = restore["status"]
    assert status["phase"] == "PartiallyFailed", status
    reasons = {v["name"]: v["reason"] for v in status["report"]["volumes"]}
    assert reasons == {
        "data-a": "PVC never/data-a was not bound to a volume within 1s",
        "data-b": "PVC never/data-b was not bound to a volume within 1s",
    }
    assert status["counts"]["failed"] == 2


def test_workloads_come_first_where_claims_bind_on_first_use(env: Env) -> None:
    kube = env.kube
    deploy_app(kube, "shop")
    write_app_data(kube, "shop")
    kube.create(
        api.STORAGE_CLASS, dict(storage_class("lazy"), volumeBindingMode="WaitForFirstConsumer")
    )
    stop = threading.Event()
    with env.running():
        take_backup(env)
        binder = threading.Thread(
            target=bind_later, args=(env, "lazy", ["data-a", "data-b"], stop, "shop"), daemon=True
        )
        binder.start()
        kube.create(
            api.RESTORE,
            restore_body(
                "first",
                backup="nightly",
                namespaceMapping={"shop": "lazy"},
                storageClassMapping={"fast": "lazy"},
            ),
        )
        # The claims bind only once the Deployment exists: had it been held back until the
        # data was in, they would never bind and the volumes would time out.
        restore = env.wait_phase(api.RESTORE, "first")
        binder.join(30)
    assert restore["status"]["phase"] == "Completed", restore["status"]
    entries = {(e["kind"], e["name"]): e["result"] for e in restore["status"]["report"]["objects"]}
    assert entries[("Deployment", "shop")] == "created"
