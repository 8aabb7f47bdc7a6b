"""Per-namespace backups: a Schedule (`spec.perNamespace`) or `mover app backup --per-namespace`
protects every namespace a selector matches as one restore point per app, so that each team's
app restores, expires and fails on its own."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from croniter import croniter

from mover_k8s import api, apps
from mover_k8s.controller.common import item_name
from mover_k8s.controller.retention import policy_of
from mover_k8s.controller.schedules import ScheduleReconciler

from . import conftest
from .conftest import (
    SYSTEM,
    Env,
    Obj,
    deploy_app,
    read_bytes,
    restore_body,
    volume_path,
    wait_until,
    write_app_data,
)
from .test_bad_input import ready
from .test_cli import as_json, mover

STAMP = "%Y-%m-%dT%H:%M:%SZ"


def per_namespace_schedule(name: str, keep: int = 2, **spec: object) -> Obj:
    return {
        "apiVersion": api.API_VERSION,
        "kind": "Schedule",
        "metadata": {"name": name, "namespace": SYSTEM},
        "spec": {
            "schedule": "0 2 * * *",
            "keepLast": keep,
            "perNamespace": True,
            "template": {"repository": "default"},
            **spec,
        },
    }


def made_by(env: Env, schedule: str) -> list[Obj]:
    return env.kube.list(api.BACKUP, SYSTEM, label_selector=f"{api.SCHEDULE_LABEL}={schedule}")


def deploy_apps(env: Env, namespaces: list[str]) -> dict[str, dict[str, bytes]]:
    """conftest's app in each namespace (its Service with a cluster IP of its own: two Services
    may not hold one), with its volumes' data."""
    original = conftest.app_manifests
    data = {}
    for index, ns in enumerate(namespaces):

        def manifests(name: str, sc: str = "fast", index: int = index) -> list[tuple[object, Obj]]:
            found = original(name, sc)
            for _, body in found:
                if body["kind"] == "Service":
                    body["spec"]["clusterIP"] = f"10.96.{index // 200}.{index % 200 + 20}"
            return found  # type: ignore[return-value]

        conftest.app_manifests = manifests  # type: ignore[assignment]
        try:
            deploy_app(env.kube, ns)
        finally:
            conftest.app_manifests = original
        data[ns] = write_app_data(env.kube, ns)
    return data


def two_apps_and_a_bystander(env: Env) -> dict[str, dict[str, bytes]]:
    """shop-a and shop-b (labelled team=shop), and `other`, which no selector here matches."""
    data = deploy_apps(env, ["shop-a", "shop-b"])
    env.kube.create(api.NAMESPACE, {"metadata": {"name": "other", "labels": {"team": "ops"}}})
    env.kube.create(
        api.CONFIG_MAP,
        {"metadata": {"name": "ops-config", "namespace": "other"}, "data": {"a": "b"}},
    )
    return data


def test_a_per_namespace_schedule_makes_one_restore_point_per_app(env: Env) -> None:
    kube = env.kube
    data = two_apps_and_a_bystander(env)
    kube.create(
        api.SCHEDULE,
        per_namespace_schedule("nightly", namespaceSelector={"matchLabels": {"team": "shop"}}),
    )
    # As if the controller had been down: the next pass makes the latest run at once.
    kube.patch_status(api.SCHEDULE, SYSTEM, "nightly", {"lastScheduleTime": "2026-01-01T02:00:00Z"})
    due = croniter("0 2 * * *", datetime.now(UTC)).get_prev(datetime)
    stamp = f"{due:%Y%m%d%H%M%S}"
    with env.running():
        wait_until(lambda: len(made_by(env, "nightly")) == 2, what="two per-namespace backups")
        backups = {
            ns: env.wait_phase(api.BACKUP, f"nightly-{ns}-{stamp}") for ns in ("shop-a", "shop-b")
        }
        schedule = kube.get(api.SCHEDULE, SYSTEM, "nightly")
        for backup in backups.values():
            assert backup["status"]["phase"] == "Completed", backup["status"]
        # shop-b alone comes back, into a namespace of its own: nothing of shop-a with it.
        kube.create(
            api.RESTORE,
            restore_body(
                "b-only", backup=f"nightly-shop-b-{stamp}", namespaceMapping={"shop-b": "shop-b2"}
            ),
        )
        restore = env.wait_phase(api.RESTORE, "b-only")
    assert [b["metadata"]["name"] for b in made_by(env, "nightly")] == [
        f"nightly-shop-a-{stamp}",
        f"nightly-shop-b-{stamp}",
    ]
    for ns, backup in backups.items():
        assert backup["metadata"]["labels"] == {api.SCHEDULE_LABEL: "nightly", apps.APP_LABEL: ns}
        assert backup["spec"]["includedNamespaces"] == [ns]
        assert {(v["namespace"], v["pvc"]) for v in backup["status"]["volumes"]} == {
            (ns, "data-a"),
            (ns, "data-b"),
        }
    status = schedule["status"]
    assert status["lastBackupCount"] == 2 and status["lastNamespaces"] == ["shop-a", "shop-b"]
    assert ready(schedule)["message"] == "last run: 2 backup(s), one per namespace"
    assert restore["status"]["phase"] == "Completed", restore["status"]
    namespaces = {e.get("namespace") for e in restore["status"]["report"]["objects"]}
    assert namespaces <= {"shop-b2", None, ""}
    for pvc, content in data["shop-b"].items():
        assert read_bytes(volume_path(kube, "shop-b2", pvc)) == content


def _made(env: Env, name: str, app: str, ended: datetime, phase: str = "Completed") -> None:
    env.kube.create(
        api.BACKUP,
        {
            "apiVersion": api.API_VERSION,
            "kind": "Backup",
            "metadata": {
                "name": name,
                "namespace": SYSTEM,
                "labels": {api.SCHEDULE_LABEL: "nightly", apps.APP_LABEL: app},
            },
            "spec": {"repository": "default", "includedNamespaces": [app]},
        },
    )
    env.kube.patch_status(
        api.BACKUP,
        SYSTEM,
        name,
        {"phase": phase, "completionTimestamp": ended.strftime(STAMP)},
    )


def test_retention_keeps_the_last_ones_of_each_app(env: Env) -> None:
    schedule = env.kube.create(api.SCHEDULE, per_namespace_schedule("nightly", keep=2))
    start = datetime(2026, 12, 1, 2, tzinfo=UTC)
    for day in range(4):
        _made(env, f"nightly-busy-{day}", "busy", start + timedelta(days=day))
    _made(env, "nightly-quiet-0", "quiet", start)  # an app with one restore point keeps it
    _made(env, "nightly-quiet-1", "quiet", start + timedelta(days=1), phase="Failed")
    expired = ScheduleReconciler(env.kube)._retain(schedule, policy_of(schedule["spec"]))
    expiring = sorted(
        b["metadata"]["name"]
        for b in made_by(env, "nightly")
        if (b.get("status") or {}).get("expiration")
    )
    assert expiring == ["nightly-busy-0", "nightly-busy-1"] and expired == 2


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({}, "spec.perNamespace needs spec.namespaceSelector"),
        (
            {"namespaceSelector": {"matchExpressions": [{"key": "team", "operator": "Near"}]}},
            "operator 'Near' is not In, NotIn, Exists or DoesNotExist",
        ),
        (
            {"perNamespace": False, "namespaceSelector": {"matchLabels": {"team": "shop"}}},
            "need spec.perNamespace: true",
        ),
    ],
    ids=["no-selector", "bad-operator", "selector-without-per-namespace"],
)
def test_a_bad_per_namespace_spec_is_refused_and_makes_nothing(
    env: Env, spec: Obj, message: str
) -> None:
    deploy_app(env.kube, "shop")
    env.kube.create(api.SCHEDULE, per_namespace_schedule("bad", **spec))
    with env.running(agent=False):
        wait_until(
            lambda: (env.kube.get(api.SCHEDULE, SYSTEM, "bad").get("status") or {}).get(
                "conditions"
            ),
            what="the schedule checked",
        )
    condition = ready(env.kube.get(api.SCHEDULE, SYSTEM, "bad"))
    assert condition["status"] == "False" and condition["reason"] == "InvalidNamespaceSelector"
    assert message in condition["message"]
    assert made_by(env, "bad") == []


def test_names_stay_label_values_and_unique() -> None:
    assert apps.object_name("nightly", "shop", "20261204020000") == "nightly-shop-20261204020000"
    long_ns = "payments-production-eu-west-1-team-checkout-and-billing"
    names = {apps.object_name("nightly", long_ns + s, "20261204020000") for s in ("a", "b")}
    assert len(names) == 2
    assert all(len(n) <= 63 and n.endswith("-20261204020000") for n in names)
    # Two runs of one long-named app: their work items differ (the name's start is the same).
    first, second = (apps.object_name("nightly", long_ns, t) for t in ("20261203", "20261204"))
    assert first[:40] == second[:40]
    assert item_name(first, long_ns, "data") != item_name(second, long_ns, "data")
    assert item_name("short", "shop", "data") == item_name("short", "shop", "data")


def test_select_namespaces_leaves_out_the_clusters_own(env: Env) -> None:
    for name, labels in [("shop", {"team": "x"}), ("kube-public", {"team": "x"}), ("b", {})]:
        env.kube.create(api.NAMESPACE, {"metadata": {"name": name, "labels": labels}})
    assert apps.select_namespaces(env.kube, {}, (), (), SYSTEM) == ["b", "shop"]
    assert apps.select_namespaces(env.kube, {"matchLabels": {"team": "x"}}, (), (), SYSTEM) == [
        "shop"
    ]
    assert apps.select_namespaces(env.kube, None, ["kube-public", "ghost"], (), SYSTEM) == [
        "kube-public"
    ]
    assert apps.select_namespaces(env.kube, {}, (), ["b"], SYSTEM) == ["shop"]


def test_app_backup_per_namespace_on_the_command_line(env: Env, tmp_path: Path) -> None:
    two_apps_and_a_bystander(env)
    with env.running():
        result = as_json(
            mover(
                env,
                tmp_path,
                "app",
                "backup",
                "before-upgrade",
                "--per-namespace",
                "--namespace-selector",
                "team=shop",
                "--wait",
                "--json",
            )
        )
        again = mover(
            env,
            tmp_path,
            "app",
            "backup",
            "before-upgrade",
            "--per-namespace",
            "--include-namespace",
            "shop-a,other",
        )
        schedule = as_json(
            mover(
                env,
                tmp_path,
                "app",
                "schedule",
                "teams",
                "--cron",
                "0 3 * * *",
                "--per-namespace",
                "--namespace-selector",
                "team=shop",
                "--exclude-namespace",
                "shop-b",
                "--json",
            )
        )
    assert [(b["name"], b["phase"]) for b in result["backups"]] == [
        ("before-upgrade-shop-a", "Completed"),
        ("before-upgrade-shop-b", "Completed"),
    ]
    assert all(len(b["status"]["volumes"]) == 2 for b in result["backups"])
    # Taken names: one line, exit 2, and nothing made (not even other's).
    assert again.returncode == 2 and again.stdout == ""
    assert "before-upgrade-shop-a exist already" in again.stderr
    assert env.kube.find(api.BACKUP, SYSTEM, "before-upgrade-other") is None
    assert schedule["spec"]["perNamespace"] is True
    assert schedule["spec"]["namespaceSelector"] == {"matchLabels": {"team": "shop"}}
    assert schedule["spec"]["excludedNamespaces"] == ["shop-b"]
    bad = mover(env, tmp_path, "app", "backup", "x", "--namespace-selector", "team=shop")
    assert bad.returncode == 2 and "go with --per-namespace" in bad.stderr
