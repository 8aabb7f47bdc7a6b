"""`mover app migrate`: apps moved to a second cluster, each on its own: volumes seeded by
incremental backups while the app runs, then the cut over (a last backup, a full restore by
difference), with a per-app report. One app's failure fails that app only."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mover.objects.repository import Repository
from mover.pipeline.replicate import init_target
from mover.storage.stack import open_backend
from mover_k8s import api, migrate
from mover_k8s.node.delta import restore_delta

from .conftest import (
    CHUNKS,
    PASSWORD,
    SYSTEM,
    VOLUME_SIZE,
    WIDGET,
    Env,
    MiB,
    Obj,
    init_repository,
    read_bytes,
    storage_class,
    volume_path,
)
from .test_capture import open_repo
from .test_per_namespace import deploy_apps


def sides(first: Env, second: Env, repository: str = "shared") -> tuple[migrate.Side, ...]:
    return (
        migrate.Side(first.kube, SYSTEM, "default"),
        migrate.Side(second.kube, SYSTEM, repository),
    )


def run_migration(first: Env, second: Env, plan: migrate.Plan, repo: str = "shared") -> list[Obj]:
    migration = migrate.Migration(*sides(first, second, repo), plan)
    migration.check()
    return migration.run()


def by_app(reports: list[Obj]) -> dict[str, Obj]:
    return {r["app"]: r for r in reports}


def test_apps_move_on_their_own_and_a_failure_fails_its_app_only(
    make_env: Callable[[str], Env],
) -> None:
    first, second = make_env("one"), make_env("two")
    # The target reads the source's repository (one bucket both clusters reach).
    second.repository("shared", first.repo_dir)
    data = deploy_apps(first, ["shop-a", "shop-b", "shop-c"])
    # shop-b cannot be read on the source: its data-b volume is gone.
    volume_path(first.kube, "shop-b", "data-b").unlink()
    # shop-c cannot land on the target: a claim there is too small for its data-a.
    second.kube.create(api.NAMESPACE, {"metadata": {"name": "shop-c"}})
    second.kube.create(api.STORAGE_CLASS, storage_class("fast"))
    second.kube.create(
        api.PVC,
        {
            "metadata": {"name": "data-a", "namespace": "shop-c"},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "storageClassName": "fast",
                "resources": {"requests": {"storage": "1Mi"}},
            },
        },
    )
    apps = ["shop-a", "shop-b", "shop-c"]
    with first.running(), second.running():
        seeded = by_app(
            run_migration(
                first,
                second,
                migrate.Plan("move", apps, {"shop-a": "shop-a2"}, phase="seed", poll=0.05),
            )
        )
        # The seed made shop-a's claims and data on the target; nothing runs there yet.
        assert second.kube.find(api.DEPLOYMENT, "shop-a2", "shop") is None
        for pvc, content in data["shop-a"].items():
            assert read_bytes(volume_path(second.kube, "shop-a2", pvc)) == content
        # The app goes on writing on the source: 256 KiB of data-a change.
        changed = bytearray(data["shop-a"]["data-a"])
        changed[MiB : MiB + 256 * 1024] = random.Random(7).randbytes(256 * 1024)
        volume_path(first.kube, "shop-a", "data-a").write_bytes(changed)
        first.kube.patch(api.CONFIG_MAP, "shop-a", "app-config", {"data": {"mode": "moved"}})
        done = by_app(
            run_migration(
                first,
                second,
                migrate.Plan("move", apps, {"shop-a": "shop-a2"}, phase="cutover", poll=0.05),
            )
        )
    assert seeded["shop-a"]["state"] == "completed", seeded["shop-a"]
    assert seeded["shop-a"]["restores"] == ["move-shop-a-s1"]
    assert (seeded["shop-b"]["state"], seeded["shop-b"]["failedStep"]) == ("failed", "backup s1")
    assert "Backup move-shop-b-s1 PartiallyFailed: VolumeFailed" in seeded["shop-b"]["error"]
    assert (seeded["shop-c"]["state"], seeded["shop-c"]["failedStep"]) == ("failed", "restore s1")
    assert "holds 1048576 bytes; the volume needs" in json.dumps(
        second.kube.get(api.RESTORE, SYSTEM, "move-shop-c-s1")["status"]["report"]
    )
    # The cut over: shop-a is there, in its new namespace, with the data as it was last.
    report = done["shop-a"]
    assert report["state"] == "completed", report
    assert report["backups"] == ["move-shop-a-final"]
    kube = second.kube
    assert kube.get(api.CONFIG_MAP, "shop-a2", "app-config")["data"]["mode"] == "moved"
    assert kube.get(WIDGET, "shop-a2", "gizmo")["spec"] == {"size": 3, "colour": "red"}
    assert kube.get(api.DEPLOYMENT, "shop-a2", "shop")["spec"]["replicas"] == 1
    assert read_bytes(volume_path(kube, "shop-a2", "data-a")) == bytes(changed)
    assert read_bytes(volume_path(kube, "shop-a2", "data-b")) == data["shop-a"]["data-b"]
    assert report["volumes"] == {"restored": 2, "total": 2, "bytes": 2 * VOLUME_SIZE}
    assert report["objects"]["created"] >= 10 and report["objects"]["failed"] == 0
    moved = report["bytes"]
    # By difference: the cut over fetched the changed chunks, not the volumes.
    assert 0 < moved["fetched"] < VOLUME_SIZE // 2, moved
    assert moved["unchanged"] > VOLUME_SIZE, moved
    assert moved["stored"] > 0 and moved["moved"] == moved["stored"] + moved["fetched"]
    # The failed apps fail again at their own step; shop-a was not held up by them.
    assert (done["shop-b"]["state"], done["shop-b"]["failedStep"]) == ("failed", "backup final")
    assert (done["shop-c"]["state"], done["shop-c"]["failedStep"]) == (
        "failed",
        "restore final",
    )
    assert kube.find(api.NAMESPACE, None, "shop-b") is None
    assert migrate.summary(list(done.values()))["completed"] == 1


def test_a_replica_is_fed_by_the_migration_and_the_report_has_drift_and_external_names(
    make_env: Callable[[str], Env], tmp_path: Path
) -> None:
    first = make_env("one")
    data = deploy_apps(first, ["shop"])["shop"]
    first.kube.create(
        api.SERVICE,
        {
            "metadata": {"name": "edge", "namespace": "shop"},
            "spec": {"type": "ExternalName", "externalName": "shop.example.com"},
        },
    )
    source = Repository.open(open_backend(str(first.repo_dir)), PASSWORD.encode())
    replica_dir = tmp_path / "replica"
    init_target(source, open_backend(str(replica_dir)), b"replica password").close()
    source.close()
    second = make_env("two")
    second.repository("replica", replica_dir, password="replica password")
    git = tmp_path / "git" / "shop"
    git.mkdir(parents=True)
    (git / "config.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: app-config}\n"
        "data: {greeting: hello, mode: staging}\n"
    )
    with first.running(), second.running():
        plan = migrate.Plan("dr", ["shop"], desired=tmp_path / "git", poll=0.05)
        (report,) = run_migration(first, second, plan, "replica")
    assert report["state"] == "completed", report
    assert report["bytes"]["replicated"] > 0
    for pvc, content in data.items():
        assert read_bytes(volume_path(second.kube, "shop", pvc)) == content
    replica = Repository.open(open_backend(str(replica_dir)), b"replica password")
    try:
        sources = {s.source for s in replica.snapshots()}
    finally:
        replica.close()
    assert "k8s:mover-system/dr-shop-final/manifest" in sources
    assert [(e["what"], e["recorded"], e["state"]) for e in report["external"]] == [
        ("externalName", "shop.example.com", "same")
    ]
    drift = report["drift"]
    assert drift["changed"] == 1 and drift["drift"] is True
    assert drift["details"]["changed"][0]["fields"] == [
        {"path": "data.mode", "desired": "staging", "live": "production"}
    ]


def test_a_repository_that_is_not_the_sources_is_refused(
    make_env: Callable[[str], Env], tmp_path: Path
) -> None:
    first, second = make_env("one"), make_env("two")
    deploy_apps(first, ["shop"])
    # second's own `default` repository: another repository, not a replica.
    migration = migrate.Migration(*sides(first, second, "default"), migrate.Plan("x", ["shop"]))
    with pytest.raises(Exception, match="neither the source's repository nor a replica"):
        migration.check()
    with pytest.raises(Exception, match="no namespace ghost on the source"):
        migrate.Migration(*sides(first, second), migrate.Plan("x", ["ghost"])).check()
    assert first.kube.list(api.BACKUP, SYSTEM) == []


def two_cluster_kubeconfig(first: Env, second: Env, path: Path) -> Path:
    doc: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": n, "cluster": {"server": e.served.url}}
            for n, e in (("one", first), ("two", second))
        ],
        "users": [{"name": "tester", "user": {"token": "test-token"}}],
        "contexts": [
            {"name": n, "context": {"cluster": n, "user": "tester"}} for n in ("one", "two")
        ],
        "current-context": "one",
    }
    path.write_text(json.dumps(doc))
    os.chmod(path, 0o600)
    return path


def test_app_migrate_on_the_command_line(make_env: Callable[[str], Env], tmp_path: Path) -> None:
    first, second = make_env("one"), make_env("two")
    second.repository("shared", first.repo_dir)
    data = deploy_apps(first, ["shop"])["shop"]
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("MOVER_", "KUBE"))}
    environ["KUBECONFIG"] = str(two_cluster_kubeconfig(first, second, tmp_path / "kubeconfig"))

    def mover(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "mover", "app", "migrate", *args],
            env=environ,
            capture_output=True,
            text=True,
            timeout=120,
            stdin=subprocess.DEVNULL,
        )

    with first.running(), second.running():
        proc = mover(
            "move",
            "--to-context",
            "two",
            "--namespace-selector",
            "team=shop",
            "--target-repository",
            "shared",
            "--poll",
            "0.1",
            "--json",
        )
        made = len(first.kube.list(api.BACKUP, SYSTEM)), len(second.kube.list(api.RESTORE, SYSTEM))
        again = mover(
            "move", "--to-context", "two", "--include-namespace", "shop",
            "--target-repository", "shared", "--poll", "0.1",
        )  # fmt: skip
        plain = mover("move", "--to-context", "two", "--include-namespace", "shop", "--poll", "0.1")
        bad = mover("move", "--to-context", "two", "--include-namespace", "ghost")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["summary"]["completed"] == 1 and result["summary"]["failed"] == 0
    (app,) = result["apps"]
    assert app["app"] == "shop" and app["volumes"]["restored"] == 2
    for pvc, content in data.items():
        assert read_bytes(volume_path(second.kube, "shop", pvc)) == content
    # The same migration again: every step is done already; nothing new is made.
    assert again.returncode == 0, again.stderr
    assert "1 of 1 apps moved, 0 failed" in again.stdout
    assert "shop  completed  16" in again.stdout  # the Deployment (made last) counted
    assert (
        len(first.kube.list(api.BACKUP, SYSTEM)),
        len(second.kube.list(api.RESTORE, SYSTEM)),
    ) == made
    # Without --target-repository: `default` on the target is another repository: refused.
    assert plain.returncode == 2 and "neither the source's repository" in plain.stderr
    assert bad.returncode == 2 and "no namespace ghost on the source" in bad.stderr


# -- restore by difference ---------------------------------------------------------------------


def test_a_restore_by_difference_fetches_only_what_differs(tmp_path: Path) -> None:
    from mover.pipeline.backup import run_backup

    repo_dir = init_repository(tmp_path / "repo")
    repo = open_repo(repo_dir)
    rng = random.Random(3)
    old = rng.randbytes(2 * MiB) + bytes(MiB) + rng.randbytes(MiB)
    new = bytearray(old)
    new[512 * 1024 : 640 * 1024] = rng.randbytes(128 * 1024)  # changed
    new[2 * MiB : 2 * MiB + 4096] = b"\x01" * 4096  # data where a hole was
    new[3 * MiB :] = bytes(MiB)  # a hole where data was
    snapshots = {}
    try:
        for label, content in (("old", old), ("new", bytes(new))):
            path = tmp_path / label
            path.write_bytes(content)
            with open(path, "rb") as f:
                snapshots[label] = run_backup(repo, f, label)
        target = tmp_path / "target"
        target.write_bytes(old + b"tail that goes")  # longer than the snapshot: cut
        stats = restore_delta(repo, snapshots["new"], str(target))
        assert target.read_bytes() == bytes(new)
        assert stats.bytes_fetched < MiB // 2 and MiB <= stats.bytes_zeroed < MiB + 64 * 1024
        assert stats.bytes_unchanged > 2 * MiB
        assert stats.bytes_done == len(new)
        # Again: nothing differs, nothing is fetched or written.
        again = restore_delta(repo, snapshots["new"], str(target))
        assert (again.bytes_written, again.bytes_unchanged) == (0, len(new))
        # Into an empty (sparse) file: everything fetched, the holes left alone.
        empty = tmp_path / "empty"
        empty.write_bytes(b"")
        fresh = restore_delta(repo, snapshots["old"], str(empty))
        assert empty.read_bytes() == old and fresh.bytes_zeroed == 0
        assert fresh.bytes_fetched + fresh.bytes_unchanged == len(old)
        assert MiB - 64 * 1024 < fresh.bytes_unchanged <= MiB  # the hole, never read
    finally:
        repo.close()
    assert CHUNKS.avg_size < 128 * 1024  # the changed range spans whole chunks
