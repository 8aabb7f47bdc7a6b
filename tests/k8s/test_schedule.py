"""Schedules: Backups made when the cron expression comes due, the last few kept."""

from __future__ import annotations

from datetime import UTC, datetime

from croniter import croniter

from mover_k8s import api

from .conftest import SYSTEM, Env, Obj, deploy_app, wait_until
from .test_bad_input import ready, snapshot_count


def schedule_body(name: str, cron: str, keep: int = 2, **template: object) -> Obj:
    return {
        "apiVersion": api.API_VERSION,
        "kind": "Schedule",
        "metadata": {"name": name, "namespace": SYSTEM},
        "spec": {
            "schedule": cron,
            "keepLast": keep,
            "template": {"repository": "default", "includedNamespaces": ["shop"], **template},
        },
    }


def made_by(env: Env, schedule: str) -> list[Obj]:
    return env.kube.list(api.BACKUP, SYSTEM, label_selector=f"{api.SCHEDULE_LABEL}={schedule}")


def test_a_schedule_makes_backups_and_keeps_the_last_ones(env: Env) -> None:
    deploy_app(env.kube, "shop")
    seen: set[str] = set()
    with env.running(agent=False):
        env.kube.create(
            api.SCHEDULE, schedule_body("every-second", "* * * * * *", snapshotVolumes=False)
        )

        def four_made() -> bool:
            seen.update(b["metadata"]["name"] for b in made_by(env, "every-second"))
            return len(seen) >= 4

        wait_until(four_made, what="four scheduled backups")
        env.kube.patch(api.SCHEDULE, SYSTEM, "every-second", {"spec": {"suspend": True}})
        wait_until(
            lambda: (
                ready(env.kube.get(api.SCHEDULE, SYSTEM, "every-second"))["reason"] == "Suspended"
            ),
            what="suspended",
        )

        def retained() -> bool:
            backups = made_by(env, "every-second")
            return len(backups) == 2 and all(
                (b.get("status") or {}).get("phase") == "Completed" for b in backups
            )

        wait_until(retained, what="the last two kept")
        wait_until(lambda: snapshot_count(env) == 4, what="the others' snapshots forgotten")
        kept = sorted(b["metadata"]["name"] for b in made_by(env, "every-second"))
    ever = sorted(key[2] for key in env.served.cluster.objects if key[0].plural == "backups")
    assert len(ever) >= 4 and kept == ever[-2:]  # names hold the due time: newest last
    schedule = env.kube.get(api.SCHEDULE, SYSTEM, "every-second")
    assert schedule["status"]["lastBackup"] in seen
    assert "nextScheduleTime" not in schedule["status"]


def test_missed_runs_make_one_backup_for_the_latest_due_time(env: Env) -> None:
    deploy_app(env.kube, "shop")
    env.kube.create(api.SCHEDULE, schedule_body("nightly", "0 2 * * *", snapshotVolumes=False))
    # As if the controller had been down for three days.
    env.kube.patch_status(
        api.SCHEDULE, SYSTEM, "nightly", {"lastScheduleTime": "2026-01-01T02:00:00Z"}
    )
    now = datetime.now(UTC)
    latest = croniter("0 2 * * *", now).get_prev(datetime)
    following = croniter("0 2 * * *", now).get_next(datetime)
    with env.running(agent=False):
        wait_until(lambda: made_by(env, "nightly"), what="the catch-up backup")
        env.wait_phase(api.BACKUP, f"nightly-{latest:%Y%m%d%H%M%S}")
        schedule = env.kube.get(api.SCHEDULE, SYSTEM, "nightly")
    assert [b["metadata"]["name"] for b in made_by(env, "nightly")] == [
        f"nightly-{latest:%Y%m%d%H%M%S}"
    ]
    assert schedule["status"]["lastScheduleTime"] == latest.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert schedule["status"]["nextScheduleTime"] == following.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_an_invalid_schedule_says_so_and_makes_nothing(env: Env) -> None:
    env.kube.create(api.SCHEDULE, schedule_body("bad", "every night"))
    with env.running(agent=False):
        wait_until(
            lambda: (env.kube.get(api.SCHEDULE, SYSTEM, "bad").get("status") or {}).get(
                "conditions"
            ),
            what="the schedule checked",
        )
    condition = ready(env.kube.get(api.SCHEDULE, SYSTEM, "bad"))
    assert condition["status"] == "False" and condition["reason"] == "InvalidSchedule"
    assert "'every night' is not a cron expression" in condition["message"]
    assert made_by(env, "bad") == []


def test_a_template_without_repository_is_refused(env: Env) -> None:
    body = schedule_body("norepo", "0 2 * * *")
    del body["spec"]["template"]["repository"]
    env.kube.create(api.SCHEDULE, body)
    with env.running(agent=False):
        wait_until(
            lambda: (env.kube.get(api.SCHEDULE, SYSTEM, "norepo").get("status") or {}).get(
                "conditions"
            ),
            what="the schedule checked",
        )
    condition = ready(env.kube.get(api.SCHEDULE, SYSTEM, "norepo"))
    assert condition["reason"] == "InvalidTemplate"
    assert condition["message"] == "spec.template must be a Backup spec naming a repository"
    assert made_by(env, "norepo") == []
