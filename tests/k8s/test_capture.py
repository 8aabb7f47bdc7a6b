"""What a Backup captures and how it is stored: live objects of every kind (custom resources
included) with their status, the cluster-scoped objects they depend on, encrypted in the
repository, under one root hash that attests objects and volumes."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from mover.errors import IntegrityError
from mover.objects.repository import Repository
from mover.storage.stack import open_backend
from mover_k8s import api, store
from mover_k8s.k8s.client import Kube

from .conftest import PASSWORD, SYSTEM, Env, Obj, backup_body, deploy_app, write_app_data


def open_repo(path: Path) -> Repository:
    return Repository.open(open_backend(str(path)), PASSWORD.encode())


def captured_objects(env: Env, backup: Obj) -> list[Obj]:
    repo = open_repo(env.repo_dir)
    try:
        doc = store.load_document(repo, backup["status"]["objectsSnapshot"])
    finally:
        repo.close()
    objects: list[Obj] = doc["objects"]
    return objects


def kinds_and_names(objects: list[Obj]) -> set[tuple[str, str]]:
    return {(o["kind"], o["metadata"]["name"]) for o in objects}


def test_capture_holds_live_objects_custom_resources_and_cluster_dependencies(env: Env) -> None:
    deploy_app(env.kube, "shop")
    write_app_data(env.kube, "shop")
    with env.running():
        env.kube.create(api.BACKUP, backup_body("b1", includedNamespaces=["shop"]))
        backup = env.wait_phase(api.BACKUP, "b1")
    assert backup["status"]["phase"] == "Completed", backup["status"]
    objects = captured_objects(env, backup)
    found = kinds_and_names(objects)
    pvs = {v["pv"] for v in backup["status"]["volumes"]}
    expected = {
        ("Namespace", "shop"),
        ("ConfigMap", "app-config"),
        ("Secret", "app-secret"),
        ("Service", "shop"),
        ("Deployment", "shop"),
        ("ReplicaSet", "shop-5d9c"),
        ("Pod", "shop-5d9c-x7k2p"),
        ("Widget", "gizmo"),
        ("PersistentVolumeClaim", "data-a"),
        ("CustomResourceDefinition", "widgets.example.com"),
        ("StorageClass", "fast"),
        ("ClusterRole", "view"),
        ("ClusterRole", "shop-reader"),
        ("ClusterRoleBinding", "shop-reader"),
        ("RoleBinding", "shop-view"),
        ("ServiceAccount", "shop"),
        *(("PersistentVolume", pv) for pv in pvs),
    }
    assert expected <= found, expected - found
    assert ("StorageClass", "standard") not in found  # not used by the app
    assert not any(o["kind"] in ("Backup", "VolumeBackup", "Repository") for o in objects)
    by_key = {(o["kind"], o["metadata"]["name"]): o for o in objects}
    assert by_key[("Widget", "gizmo")]["status"] == {"phase": "Spinning", "rpm": 1200}
    assert by_key[("Deployment", "shop")]["status"]["readyReplicas"] == 1
    assert by_key[("Service", "shop")]["spec"]["clusterIP"] == "10.96.0.17"
    assert by_key[("ConfigMap", "app-config")]["metadata"]["uid"]


def test_secrets_are_stored_encrypted(env: Env) -> None:
    deploy_app(env.kube, "shop")
    write_app_data(env.kube, "shop")
    with env.running():
        env.kube.create(api.BACKUP, backup_body("b1", includedNamespaces=["shop"]))
        backup = env.wait_phase(api.BACKUP, "b1")
    assert backup["status"]["phase"] == "Completed"
    secret = env.kube.get(api.SECRET, "shop", "app-secret")
    plain = base64.b64decode(secret["data"]["token"])
    stored = b"".join(p.read_bytes() for p in env.repo_dir.rglob("*") if p.is_file())
    assert plain not in stored and secret["data"]["token"].encode() not in stored
    assert b"app-secret" not in stored and b"app-config" not in stored
    # ...and come back from the repository intact.
    objects = {o["metadata"]["name"]: o for o in captured_objects(env, backup)}
    assert objects["app-secret"]["data"] == secret["data"]


def test_root_hash_attests_objects_and_every_volume(env: Env) -> None:
    deploy_app(env.kube, "shop")
    write_app_data(env.kube, "shop")
    with env.running():
        env.kube.create(api.BACKUP, backup_body("b1", includedNamespaces=["shop"]))
        backup = env.wait_phase(api.BACKUP, "b1")
    status = backup["status"]
    repo = open_repo(env.repo_dir)
    try:
        manifest = repo.find_snapshot(status["manifestSnapshot"])
        assert manifest.tree == status["rootHash"]
        doc = store.verify_manifest(repo, manifest, status["rootHash"])
        assert doc["objects"]["tree"] == status["objectsTree"]
        assert {v["tree"] for v in doc["volumes"]} == {v["tree"] for v in status["volumes"]}
        with pytest.raises(IntegrityError, match="not the backup that was taken"):
            store.verify_manifest(repo, manifest, "0" * 64)
        # A volume snapshot that goes missing breaks the attestation.
        lost = status["volumes"][0]["snapshot"]
        (env.repo_dir / "snapshots" / lost).unlink()
        with pytest.raises(IntegrityError, match="missing or differs"):
            store.verify_manifest(repo, manifest, status["rootHash"])
    finally:
        repo.close()


def test_label_selector_and_kind_filters_narrow_the_capture(env: Env) -> None:
    deploy_app(env.kube, "shop")
    env.kube.create(
        api.CONFIG_MAP,
        {"metadata": {"name": "unlabelled", "namespace": "shop"}, "data": {"k": "v"}},
    )
    with env.running(agent=False):
        env.kube.create(
            api.BACKUP,
            backup_body(
                "sel",
                labelSelector={"matchLabels": {"app": "shop"}},
                includedKinds=["ConfigMap", "Widget.example.com", "Secret"],
                excludedKinds=["secrets"],
                snapshotVolumes=False,
            ),
        )
        backup = env.wait_phase(api.BACKUP, "sel")
    assert backup["status"]["phase"] == "Completed", backup["status"]
    found = {(k, n) for k, n in kinds_and_names(captured_objects(env, backup)) if k != "Namespace"}
    assert found == {
        ("ConfigMap", "app-config"),
        ("ConfigMap", "other-config"),
        ("Widget", "gizmo"),
        ("CustomResourceDefinition", "widgets.example.com"),
    }


def test_a_second_backup_of_an_unchanged_app_stores_no_new_volume_data(env: Env) -> None:
    deploy_app(env.kube, "shop")
    write_app_data(env.kube, "shop")
    with env.running():
        for name in ("monday", "tuesday"):
            env.kube.create(api.BACKUP, backup_body(name, includedNamespaces=["shop"]))
            assert env.wait_phase(api.BACKUP, name)["status"]["phase"] == "Completed"
    tuesday = env.kube.get(api.BACKUP, SYSTEM, "tuesday")["status"]
    monday = env.kube.get(api.BACKUP, SYSTEM, "monday")["status"]
    repo = open_repo(env.repo_dir)
    try:
        for volume in tuesday["volumes"]:
            stats = repo.find_snapshot(volume["snapshot"]).stats
            assert stats["new_bytes"] == 0 and stats["reused_bytes"] > 0
    finally:
        repo.close()
    # Same bytes, same trees: the roots of each volume are equal across the two backups.
    assert [v["tree"] for v in tuesday["volumes"]] == [v["tree"] for v in monday["volumes"]]
    assert tuesday["rootHash"] != monday["rootHash"]  # the manifests name different snapshots


def test_an_unbound_claim_is_noted_not_fatal(env: Env) -> None:
    deploy_app(env.kube, "shop")
    write_app_data(env.kube, "shop")
    env.kube.create(
        api.PVC,
        {
            "metadata": {"name": "pending", "namespace": "shop"},
            "spec": {"storageClassName": "nowhere", "resources": {"requests": {"storage": "1Mi"}}},
        },
    )
    with env.running():
        env.kube.create(api.BACKUP, backup_body("b", includedNamespaces=["shop"]))
        backup = env.wait_phase(api.BACKUP, "b")
    status = backup["status"]
    assert status["phase"] == "Completed", status
    assert [v["pvc"] for v in status["volumes"]] == ["data-a", "data-b"]
    assert status["skippedVolumes"] == [
        {
            "namespace": "shop",
            "pvc": "pending",
            "reason": "PVC shop/pending is not bound to a PersistentVolume; nothing to read",
        }
    ]


def test_the_client_reads_long_lists_page_by_page(env: Env) -> None:
    env.kube.create(api.NAMESPACE, {"metadata": {"name": "many"}})
    for i in range(7):
        env.kube.create(api.CONFIG_MAP, {"metadata": {"name": f"c{i}", "namespace": "many"}})
    kube = Kube.at(env.served.url)
    kube.page_size = 3  # a small page, to need three of them
    try:
        names = [o["metadata"]["name"] for o in kube.list(api.CONFIG_MAP, "many")]
    finally:
        kube.close()
    assert names == [f"c{i}" for i in range(7)]
