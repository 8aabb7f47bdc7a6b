"""Bad input ends in a Failed phase with a Ready condition that says what is wrong, and nothing
half-applied: no object created or changed, nothing stored, no work item made."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mover_k8s import agent_leases, api, store

from .conftest import (
    SYSTEM,
    Env,
    Obj,
    backup_body,
    deploy_app,
    restore_body,
    volume_path,
    wait_until,
    write_app_data,
)
from .test_agent import agent_running
from .test_capture import open_repo
from .test_e2e import cluster_state, take_backup


def ready(obj: Obj) -> dict[str, Any]:
    condition: dict[str, Any] = next(c for c in obj["status"]["conditions"] if c["type"] == "Ready")
    return condition


def snapshot_count(env: Env) -> int:
    repo = open_repo(env.repo_dir)
    try:
        return len(repo.snapshots())
    finally:
        repo.close()


@pytest.mark.parametrize(
    ("spec", "reason", "message"),
    [
        (
            {"repository": "nowhere", "includedNamespaces": ["shop"]},
            "RepositoryNotFound",
            "Repository mover-system/nowhere does not exist",
        ),
        (
            {"includedNamespaces": ["shop", "ghost"]},
            "NamespaceNotFound",
            "namespace(s) ghost do not exist in this cluster",
        ),
        ({}, "InvalidScope", "a Backup needs spec.includedNamespaces or spec.labelSelector"),
        (
            {"includedNamespaces": ["shop"], "ttl": "a week"},
            "InvalidTTL",
            "spec.ttl 'a week' is not a duration",
        ),
    ],
    ids=["missing-repository", "missing-namespace", "no-scope", "bad-ttl"],
)
def test_bad_backup_fails_with_its_reason_and_stores_nothing(
    env: Env, spec: Obj, reason: str, message: str
) -> None:
    deploy_app(env.kube, "shop")
    body = backup_body("bad", **spec)
    with env.running():
        env.kube.create(api.BACKUP, body)
        backup = env.wait_phase(api.BACKUP, "bad")
    assert backup["status"]["phase"] == "Failed"
    condition = ready(backup)
    assert condition["status"] == "False" and condition["reason"] == reason
    assert message in condition["message"]
    assert snapshot_count(env) == 0
    assert env.kube.list(api.VOLUME_BACKUP, SYSTEM) == []


def test_a_volume_on_a_node_without_agent_fails_the_backup_before_anything_is_stored(
    env: Env,
) -> None:
    deploy_app(env.kube, "shop")
    write_app_data(env.kube, "shop")
    with env.running(agent=False):
        env.kube.create(api.BACKUP, backup_body("orphan", includedNamespaces=["shop"]))
        backup = env.wait_phase(api.BACKUP, "orphan")
    assert backup["status"]["phase"] == "Failed"
    condition = ready(backup)
    assert condition["reason"] == "NoAgent"
    assert (
        "PVC shop/data-a is on node node-a, where no mover node agent runs" in condition["message"]
    )
    assert snapshot_count(env) == 0
    assert env.kube.list(api.VOLUME_BACKUP, SYSTEM) == []


BAD_RESTORES = [
    ({"backup": "missing"}, "BackupNotFound", "no Backup missing in namespace mover-system"),
    ({"backup": "nightly", "mode": "everything"}, "InvalidMode", "mode 'everything' is not one of"),
    (
        {"backup": "nightly", "storageClassMapping": {"fast": "gold"}},
        "StorageClassNotFound",
        "storageClassMapping targets 'gold', which this cluster does not have",
    ),
    (
        {"backup": "nightly", "namespaceMapping": {"shop": "Not A Name"}},
        "InvalidMapping",
        "namespaceMapping target 'Not A Name' is not a namespace name",
    ),
    (
        {"backup": "nightly", "namespaceMapping": {"elsewhere": "x"}},
        "InvalidMapping",
        "namespaceMapping names 'elsewhere', which the backup does not hold",
    ),
    (
        {"backup": "nightly", "volumes": ["shop/nope"]},
        "VolumeNotFound",
        "spec.volumes names shop/nope, not in the backup",
    ),
    (
        {"backup": "nightly", "existingResourcePolicy": "merge"},
        "InvalidPolicy",
        "existingResourcePolicy 'merge' is not skip or update",
    ),
    (
        {"backup": "missing", "repository": "default"},
        "BackupNotFound",
        "no backup missing in this cluster or its repository",
    ),
]


def test_bad_restores_fail_with_their_reason_and_change_nothing(env: Env) -> None:
    deploy_app(env.kube, "shop")
    write_app_data(env.kube, "shop")
    with env.running():
        take_backup(env)
        env.kube.delete(api.NAMESPACE, None, "shop")
        # Gone from the cluster too: a full restore would need to recreate it.
        env.kube.delete(api.STORAGE_CLASS, None, "fast")
        before = cluster_state(env.kube)
        for number, (spec, reason, message) in enumerate(BAD_RESTORES):
            name = f"bad-{number}"
            env.kube.create(api.RESTORE, restore_body(name, **spec))
            restore = env.wait_phase(api.RESTORE, name)
            assert restore["status"]["phase"] == "Failed", (spec, restore["status"])
            condition = ready(restore)
            assert condition["reason"] == reason, (spec, condition)
            assert message in condition["message"], (spec, condition)
        # A class that this cluster lacks, not mapped nor restored, stops a full restore too.
        env.kube.create(
            api.RESTORE, restore_body("unmapped", backup="nightly", excludedKinds=["StorageClass"])
        )
        restore = env.wait_phase(api.RESTORE, "unmapped")
        assert ready(restore)["reason"] == "StorageClassNotFound"
        assert "map it with storageClassMapping" in ready(restore)["message"]
    assert cluster_state(env.kube) == before
    assert env.kube.list(api.VOLUME_RESTORE, SYSTEM) == []


def test_a_backup_waits_a_while_for_an_agent_that_is_starting(env: Env) -> None:
    deploy_app(env.kube, "shop")
    write_app_data(env.kube, "shop")
    with env.running(agent=False, agent_grace=60):
        env.kube.create(api.BACKUP, backup_body("early", includedNamespaces=["shop"]))

        def waiting() -> bool:
            backup = env.kube.get(api.BACKUP, SYSTEM, "early")
            conditions = (backup.get("status") or {}).get("conditions") or []
            return any(c["reason"] == "WaitingForAgent" for c in conditions)

        wait_until(waiting, what="the backup to wait for an agent")
        assert snapshot_count(env) == 0
        with agent_running(env):
            backup = env.wait_phase(api.BACKUP, "early")
    assert backup["status"]["phase"] == "Completed", backup["status"]


def test_repository_ready_condition_says_whether_it_opens(env: Env, tmp_path: Path) -> None:
    env.repository("wrong", env.repo_dir, password="not the password")
    env.repository("absent", tmp_path / "nothing-here")
    with env.running(agent=False):

        def ready_of(name: str) -> dict[str, Any] | None:
            obj = env.kube.get(api.REPOSITORY, SYSTEM, name)
            return ready(obj) if (obj.get("status") or {}).get("conditions") else None

        good = wait_until(lambda: ready_of("default"), what="default checked")
        wrong = wait_until(lambda: ready_of("wrong"), what="wrong checked")
        absent = wait_until(lambda: ready_of("absent"), what="absent checked")
    assert good["status"] == "True"
    assert env.kube.get(api.REPOSITORY, SYSTEM, "default")["status"]["repositoryId"]
    assert wrong["status"] == "False" and wrong["reason"] == "RepositoryUnavailable"
    assert "password" in wrong["message"]
    assert absent["status"] == "False" and "is not a mover repository" in absent["message"]


def test_a_volume_the_agent_cannot_read_makes_the_backup_partially_failed(env: Env) -> None:
    deploy_app(env.kube, "shop")
    write_app_data(env.kube, "shop")
    volume_path(env.kube, "shop", "data-b").unlink()  # the disk is gone from the node
    with env.running():
        env.kube.create(api.BACKUP, backup_body("half", includedNamespaces=["shop"]))
        backup = env.wait_phase(api.BACKUP, "half")
    status = backup["status"]
    assert status["phase"] == "PartiallyFailed", status
    assert ready(backup)["reason"] == "VolumeFailed"
    assert "shop/data-b:" in ready(backup)["message"]
    assert "does not exist on this node" in ready(backup)["message"]
    phases = {v["pvc"]: v["phase"] for v in status["volumes"]}
    assert phases == {"data-a": "Completed", "data-b": "Failed"}
    # The manifest covers what was stored: the objects and the volume that was read.
    repo = open_repo(env.repo_dir)
    try:
        doc = store.verify_manifest(
            repo, repo.find_snapshot(status["manifestSnapshot"]), status["rootHash"]
        )
    finally:
        repo.close()
    assert [v["pvc"] for v in doc["volumes"]] == ["data-a"]


def test_data_only_restore_without_an_agent_fails_before_writing(env: Env) -> None:
    deploy_app(env.kube, "shop")
    write_app_data(env.kube, "shop")
    with env.running():
        take_backup(env)
    assert env.kube.list(api.LEASE, SYSTEM) == []  # the agent gave up its lease when it stopped
    before = cluster_state(env.kube)
    with env.running(agent=False):
        env.kube.create(api.RESTORE, restore_body("nobody", backup="nightly", mode="data-only"))
        restore = env.wait_phase(api.RESTORE, "nobody")
    assert restore["status"]["phase"] == "Failed"
    assert ready(restore)["reason"] == "NoAgent"
    assert cluster_state(env.kube) == before
    assert env.kube.list(api.VOLUME_RESTORE, SYSTEM) == []


def test_an_expired_backup_goes_with_its_work_items_and_snapshots(env: Env) -> None:
    deploy_app(env.kube, "shop")
    write_app_data(env.kube, "shop")
    with env.running():
        env.kube.create(api.BACKUP, backup_body("kept", includedNamespaces=["shop"]))
        assert env.wait_phase(api.BACKUP, "kept")["status"]["phase"] == "Completed"
        # Expiration is completion + ttl in whole seconds: a ttl of 1 s may leave a tenth of a
        # second to see the Backup Completed; 4 s leave at least 3.
        env.kube.create(api.BACKUP, backup_body("short", includedNamespaces=["shop"], ttl="4s"))
        backup = env.wait_phase(api.BACKUP, "short")
        assert backup["status"]["phase"] == "Completed"
        assert backup["status"]["expiration"]
        wait_until(
            lambda: env.kube.find(api.BACKUP, SYSTEM, "short") is None,
            timeout=30,
            what="the expired Backup to go",
        )
    items = env.kube.list(api.VOLUME_BACKUP, SYSTEM)
    assert {i["spec"]["backup"] for i in items} == {"kept"}
    # Its four snapshots are forgotten (`mover prune` reclaims the space); the other's stay.
    assert snapshot_count(env) == 4
    assert env.kube.find(api.BACKUP, SYSTEM, "kept") is not None


def test_work_of_an_agent_that_died_waits_for_it(env: Env) -> None:
    deploy_app(env.kube, "shop")
    write_app_data(env.kube, "shop")
    # An agent that renewed its lease once and died without giving it up.
    agent_leases.renew(env.kube, SYSTEM, "node-a", "crashed-agent", seconds=1)
    with env.running(agent=False):
        env.kube.create(api.BACKUP, backup_body("patient", includedNamespaces=["shop"]))

        def reason() -> str:
            backup = env.kube.get(api.BACKUP, SYSTEM, "patient")
            conditions = (backup.get("status") or {}).get("conditions") or []
            return str(conditions[-1]["reason"]) if conditions else ""

        wait_until(lambda: reason() == "WaitingForAgent", what="WaitingForAgent")
        backup = env.kube.get(api.BACKUP, SYSTEM, "patient")
        assert backup["status"]["phase"] == "WaitingForVolumes"
        assert "no mover node agent runs on node-a" in ready(backup)["message"]
        with agent_running(env):
            backup = env.wait_phase(api.BACKUP, "patient")
    assert backup["status"]["phase"] == "Completed", backup["status"]


def test_more_bad_backups_fail_before_anything_is_stored(env: Env) -> None:
    deploy_app(env.kube, "shop")
    write_app_data(env.kube, "shop")
    # A Repository whose password Secret is missing.
    env.kube.create(
        api.REPOSITORY,
        {
            "apiVersion": api.API_VERSION,
            "kind": "Repository",
            "metadata": {"name": "no-secret", "namespace": SYSTEM},
            "spec": {"url": str(env.repo_dir), "passwordSecretRef": {"name": "gone"}},
        },
    )
    # A claim on a volume mover cannot read (not CSI with a snapshot class, not a path).
    env.kube.create(api.NAMESPACE, {"metadata": {"name": "nfs"}})
    env.kube.create(
        api.PV,
        {
            "metadata": {"name": "pv-nfs"},
            "spec": {"capacity": {"storage": "1Mi"}, "nfs": {"server": "nfs", "path": "/x"}},
        },
    )
    env.kube.create(
        api.PVC,
        {
            "metadata": {"name": "shared", "namespace": "nfs"},
            "spec": {"volumeName": "pv-nfs", "resources": {"requests": {"storage": "1Mi"}}},
        },
    )
    cases = [
        (
            backup_body("b1", repository="no-secret", includedNamespaces=["shop"]),
            "SecretNotFound",
            "Repository mover-system/no-secret: Secret mover-system/gone does not exist",
        ),
        (
            backup_body("b2", includedNamespaces=["nfs"]),
            "NoVolumeSource",
            "PVC nfs/shared: its volume has no VolumeSnapshotClass for driver (none) and is not "
            "a local or hostPath volume",
        ),
        (
            backup_body(
                "b3",
                labelSelector={"matchExpressions": [{"key": "app", "operator": "Like"}]},
            ),
            "InvalidSelector",
            "labelSelector operator 'Like' is not In, NotIn, Exists or DoesNotExist",
        ),
    ]
    with env.running():
        for body, reason, message in cases:
            env.kube.create(api.BACKUP, body)
            backup = env.wait_phase(api.BACKUP, body["metadata"]["name"])
            assert backup["status"]["phase"] == "Failed", backup["status"]
            assert ready(backup)["reason"] == reason
            assert message in ready(backup)["message"], ready(backup)
    assert snapshot_count(env) == 0
    assert env.kube.list(api.VOLUME_BACKUP, SYSTEM) == []


def test_restoring_a_backup_that_did_not_complete_or_is_ambiguous_is_refused(env: Env) -> None:
    deploy_app(env.kube, "shop")
    with env.running(agent=False):
        env.kube.create(api.BACKUP, backup_body("broken", includedNamespaces=["ghost"]))
        assert env.wait_phase(api.BACKUP, "broken")["status"]["phase"] == "Failed"
        env.kube.create(api.RESTORE, restore_body("r1", backup="broken"))
        refused = env.wait_phase(api.RESTORE, "r1")
        assert ready(refused)["reason"] == "BackupNotReady"
        assert "Backup broken is Failed, not Completed" in ready(refused)["message"]
        # Two namespaces' backups of one name in the repository: which one is not a guess.
        env.kube.create(api.NAMESPACE, {"metadata": {"name": "other"}})
        env.repository_in("other", "default", env.repo_dir)
        for ns in (SYSTEM, "other"):
            body = backup_body("same", includedNamespaces=["shop"], snapshotVolumes=False)
            body["metadata"]["namespace"] = ns
            env.kube.create(api.BACKUP, body)
        env.wait_phase(api.BACKUP, "same")
        wait_until(
            lambda: (
                (env.kube.get(api.BACKUP, "other", "same").get("status") or {}).get("phase")
                == "Completed"
            ),
            what="the other namespace's backup",
        )
        env.kube.delete(api.BACKUP, SYSTEM, "same")
        env.kube.create(api.RESTORE, restore_body("r2", backup="same", repository="default"))
        ambiguous = env.wait_phase(api.RESTORE, "r2")
    assert ready(ambiguous)["reason"] == "BackupAmbiguous"
    assert "write spec.backup as NAMESPACE/NAME" in ready(ambiguous)["message"]
