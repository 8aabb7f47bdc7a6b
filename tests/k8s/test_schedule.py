"""Schedules: Backups made when the cron expression comes due; pause, missed runs, retention
tiers and prune after retention."""

from __future__ import annotations

import base64
import random
from datetime import UTC, datetime

import pytest
from croniter import croniter

from mover.objects.locks import Lock
from mover_k8s import api
from mover_k8s.controller.backups import BackupReconciler
from mover_k8s.controller.schedules import ScheduleReconciler
from mover_k8s.repo_access import Repositories

from .conftest import SYSTEM, Env, Obj, backup_body, deploy_app, wait_until
from .test_bad_input import ready, snapshot_count
from .test_capture import open_repo


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


@pytest.mark.slow  # several seconds: runs in CI (CI=true) and with -m slow
def test_a_schedule_makes_backups_and_keeps_the_last_ones(env: Env) -> None:
    deploy_app(env.kube, "shop")
    seen: set[str] = set()
    with env.running(agent=False) as (controller, _):
        env.kube.create(
            api.SCHEDULE, schedule_body("every-second", "* * * * * *", snapshotVolumes=False)
        )

        def four_made() -> bool:
            seen.update(b["metadata"]["name"] for b in made_by(env, "every-second"))
            return len(seen) >= 4

        wait_until(four_made, what="four scheduled backups")
        env.kube.patch(api.SCHEDULE, SYSTEM, "every-second", {"spec": {"paused": True}})
        wait_until(
            lambda: ready(env.kube.get(api.SCHEDULE, SYSTEM, "every-second"))["reason"] == "Paused",
            what="paused",
        )

        def retained() -> bool:
            backups = made_by(env, "every-second")
            return len(backups) == 2 and all(
                (b.get("status") or {}).get("phase") == "Completed" for b in backups
            )

        wait_until(retained, what="the last two kept")
        wait_until(lambda: snapshot_count(env) == 4, what="the others' snapshots forgotten")
        kept = sorted(b["metadata"]["name"] for b in made_by(env, "every-second"))
        controller.schedules.wait_prune(60)  # the prune after retention: not into teardown
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


# -- with the controller's clock in the test's hands ----------------------------------------
# These run the Schedule reconciler itself, one pass at a time, with `clock` saying when now is.


class Clock:
    def __init__(self, stamp: str) -> None:
        self.now = at(stamp)

    def set(self, stamp: str) -> None:
        self.now = at(stamp)

    def __call__(self) -> datetime:
        return self.now


def at(stamp: str) -> datetime:
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def reconciler(env: Env, clock: Clock) -> ScheduleReconciler:
    return ScheduleReconciler(env.kube, Repositories(env.kube), clock)


def one_pass(env: Env, schedules: ScheduleReconciler, name: str) -> Obj:
    schedules.reconcile(env.kube.get(api.SCHEDULE, SYSTEM, name))
    return env.kube.get(api.SCHEDULE, SYSTEM, name)


def made_names(env: Env, schedule: str) -> list[str]:
    return sorted(b["metadata"]["name"] for b in made_by(env, schedule))


def nightly(env: Env, name: str, last: str, **spec: object) -> None:
    body = schedule_body(name, "0 2 * * *", snapshotVolumes=False)
    body["spec"].update(spec)
    env.kube.create(api.SCHEDULE, body)
    env.kube.patch_status(api.SCHEDULE, SYSTEM, name, {"lastScheduleTime": last})


def test_paused_makes_nothing_and_resumes_at_the_next_due_time(env: Env) -> None:
    nightly(env, "paused", "2026-03-01T02:00:00Z", paused=True)
    clock = Clock("2026-03-03T12:00:00Z")  # two runs due meanwhile
    schedules = reconciler(env, clock)
    status = one_pass(env, schedules, "paused")["status"]
    assert made_names(env, "paused") == []
    assert ready({"status": status})["reason"] == "Paused"
    assert "un-pausing resumes at the next due time" in ready({"status": status})["message"]
    assert "nextScheduleTime" not in status and status["pausedAt"] == "2026-03-03T12:00:00Z"

    env.kube.patch(api.SCHEDULE, SYSTEM, "paused", {"spec": {"paused": False}})
    clock.set("2026-03-05T12:00:00Z")
    status = one_pass(env, schedules, "paused")["status"]
    assert made_names(env, "paused") == []  # the paused days are not made up
    assert ready({"status": status})["reason"] == "Scheduled"
    assert status["nextScheduleTime"] == "2026-03-06T02:00:00Z"
    assert "pausedAt" not in status and status["resumedAt"] == "2026-03-05T12:00:00Z"

    clock.set("2026-03-05T23:00:00Z")
    one_pass(env, schedules, "paused")
    assert made_names(env, "paused") == []
    clock.set("2026-03-06T02:00:01Z")
    status = one_pass(env, schedules, "paused")["status"]
    assert made_names(env, "paused") == ["paused-20260306020000"]
    assert status["lastScheduleTime"] == "2026-03-06T02:00:00Z"
    assert status["nextScheduleTime"] == "2026-03-07T02:00:00Z"


def test_a_missed_run_within_the_deadline_is_made_once(env: Env) -> None:
    nightly(env, "late", "2026-03-01T02:00:00Z", startingDeadlineSeconds=300)
    clock = Clock("2026-03-04T02:03:00Z")  # down since before 03-02 02:00; now 180 s late
    schedules = reconciler(env, clock)
    status = one_pass(env, schedules, "late")["status"]
    one_pass(env, schedules, "late")  # a second pass makes no second Backup
    assert made_names(env, "late") == ["late-20260304020000"]
    assert status["lastScheduleTime"] == "2026-03-04T02:00:00Z"
    assert status["missedRuns"] == 2 and status["lastMissedTime"] == "2026-03-03T02:00:00Z"
    assert status["nextScheduleTime"] == "2026-03-05T02:00:00Z"
    assert "caught up once; skipped 2 earlier run(s)" in ready({"status": status})["message"]


def test_a_missed_run_past_the_deadline_is_skipped_and_recorded(env: Env) -> None:
    nightly(env, "toolate", "2026-03-01T02:00:00Z", startingDeadlineSeconds=300)
    clock = Clock("2026-03-04T03:00:00Z")  # 3600 s late
    schedules = reconciler(env, clock)
    status = one_pass(env, schedules, "toolate")["status"]
    assert made_names(env, "toolate") == []
    condition = ready({"status": status})
    assert condition["status"] == "True" and condition["reason"] == "MissedRun"
    assert condition["message"] == (
        "missed the run due at 2026-03-04T02:00:00Z by 3600s, more than "
        "startingDeadlineSeconds (300); skipped 3 run(s)"
    )
    assert status["lastMissedTime"] == "2026-03-04T02:00:00Z" and status["missedRuns"] == 3
    assert status["lastScheduleTime"] == "2026-03-01T02:00:00Z"
    assert status["nextScheduleTime"] == "2026-03-05T02:00:00Z"
    clock.set("2026-03-04T09:00:00Z")
    one_pass(env, schedules, "toolate")
    assert made_names(env, "toolate") == []  # skipped stays skipped
    clock.set("2026-03-05T02:00:30Z")  # the next run, on time
    status = one_pass(env, schedules, "toolate")["status"]
    assert made_names(env, "toolate") == ["toolate-20260305020000"]
    assert ready({"status": status})["reason"] == "Scheduled"


GOOD: dict[str, object] = {}


@pytest.mark.parametrize(
    ("spec", "reason", "message"),
    [
        (GOOD, "Scheduled", "last backup: bad-20260304020000"),  # the control: it does make one
        ({"schedule": "61 * * * *"}, "InvalidSchedule", "'61 * * * *' is not a cron expression"),
        (
            {"retention": {"daily": -1}},
            "InvalidRetention",
            "spec.retention.daily must be an integer >= 0, not -1",
        ),
        ({"keepLast": -3}, "InvalidRetention", "spec.keepLast must be an integer >= 0, not -3"),
        (
            {"retention": {"last": 0, "daily": 0}, "keepLast": 0},
            "InvalidRetention",
            "keeps nothing",
        ),
        ({"retention": {"hours": 3}}, "InvalidRetention", "unknown rules ['hours']"),
        (
            {"template": {"repository": "nowhere"}},
            "RepositoryNotFound",
            "Repository mover-system/nowhere does not exist",
        ),
        (
            {"startingDeadlineSeconds": -5},
            "InvalidDeadline",
            "spec.startingDeadlineSeconds must be an integer >= 0, not -5",
        ),
        ({"prune": {"interval": "daily"}}, "InvalidPrune", "'daily' is not a duration"),
    ],
)
def test_bad_input_is_a_condition_and_nothing_is_made(
    env: Env, spec: dict[str, object], reason: str, message: str
) -> None:
    nightly(env, "bad", "2026-03-03T02:00:00Z", **spec)
    old = completed_backup(env, "bad", "bad-old", "2026-01-01T00:00:00Z")
    status = one_pass(env, reconciler(env, Clock("2026-03-04T02:00:05Z")), "bad")["status"]
    condition = ready({"status": status})
    assert condition["reason"] == reason and message in condition["message"]
    if spec is GOOD:
        assert made_names(env, "bad") == ["bad-20260304020000", old]
        return
    assert condition["status"] == "False"
    assert made_names(env, "bad") == [old]
    assert "expiration" not in env.kube.get(api.BACKUP, SYSTEM, old)["status"]
    assert "nextScheduleTime" not in status


# -- retention --------------------------------------------------------------------------------


def completed_backup(
    env: Env, schedule: str, name: str, done: str, phase: str = "Completed", **status: object
) -> str:
    body = backup_body(name, includedNamespaces=["shop"], snapshotVolumes=False)
    body["metadata"]["labels"] = {api.SCHEDULE_LABEL: schedule}
    env.kube.create(api.BACKUP, body)
    env.kube.patch_status(
        api.BACKUP, SYSTEM, name, {"phase": phase, "completionTimestamp": done, **status}
    )
    return name


def test_retention_tiers_keep_what_the_policy_keeps(env: Env) -> None:
    body = schedule_body("tiers", "0 0 1 1 *")  # next run next year: none here
    body["spec"]["retention"] = {"last": 1, "daily": 2, "weekly": 2, "monthly": 2}
    times = {
        "b1": "2026-01-05T10:00:00Z",  # January, week 2: older than what monthly 2 keeps
        "b2": "2026-01-20T10:00:00Z",  # January's newest: monthly 2/2
        "b3": "2026-02-02T10:00:00Z",  # week 6's newest: weekly 2/2
        "b4": "2026-02-09T08:00:00Z",  # Feb 9, not its newest
        "b5": "2026-02-09T20:00:00Z",  # Feb 9's newest: daily 2/2
        "b6": "2026-02-10T09:00:00Z",  # Feb 10, not its newest
        "b7": "2026-02-10T10:00:00Z",  # the newest: last, daily, weekly, monthly
    }
    # Created newest first: the completion time decides, not the creation order.
    for name, done in sorted(times.items(), reverse=True):
        completed_backup(env, "tiers", name, done)
    completed_backup(env, "tiers", "f-old", "2025-12-30T00:00:00Z", phase="Failed")
    completed_backup(env, "tiers", "f-new", "2026-02-10T09:30:00Z", phase="Failed")
    completed_backup(env, "other", "b-other", "2025-01-01T00:00:00Z")  # another schedule's
    env.kube.create(api.SCHEDULE, body)
    with env.running(agent=False) as (controller, _):
        wait_until(
            lambda: made_names(env, "tiers") == ["b2", "b3", "b5", "b7", "f-new"],
            what="the expired Backups deleted",
        )
        pruned = wait_until(
            lambda: (
                (env.kube.get(api.SCHEDULE, SYSTEM, "tiers").get("status") or {}).get("prune") or {}
            ).get("lastEndTime"),
            what="the prune after retention",
        )
        controller.schedules.wait_prune(60)
    assert pruned
    assert made_names(env, "other") == ["b-other"]


# -- prune ------------------------------------------------------------------------------------


def pruned_condition(schedule: Obj) -> dict[str, object]:
    found: dict[str, object] = next(
        c for c in schedule["status"]["conditions"] if c["type"] == "Pruned"
    )
    return found


def test_retention_then_prune_frees_the_space_of_expired_backups(env: Env) -> None:
    deploy_app(env.kube, "shop")
    with env.running(agent=False) as (controller, _):
        for i in range(3):  # each with data of its own, so each has packs of its own
            blob = base64.b64encode(random.Random(i).randbytes(300_000)).decode()
            env.kube.patch(api.CONFIG_MAP, "shop", "other-config", {"data": {"blob": blob}})
            body = backup_body(f"run-{i}", includedNamespaces=["shop"], snapshotVolumes=False)
            body["metadata"]["labels"] = {api.SCHEDULE_LABEL: "keep-one"}
            env.kube.create(api.BACKUP, body)
            assert env.wait_phase(api.BACKUP, f"run-{i}")["status"]["phase"] == "Completed"
        before = snapshot_count(env)
        env.kube.create(api.SCHEDULE, schedule_body("keep-one", "0 0 1 1 *", keep=1))
        status = wait_until(
            lambda: (
                (
                    (env.kube.get(api.SCHEDULE, SYSTEM, "keep-one").get("status") or {}).get(
                        "prune"
                    )
                    or {}
                ).get("lastEndTime")
                and env.kube.get(api.SCHEDULE, SYSTEM, "keep-one")["status"]
            ),
            what="the prune's outcome",
        )
        controller.schedules.wait_prune(60)
    assert made_names(env, "keep-one") == ["run-2"]
    assert snapshot_count(env) == before - 2 * (before // 3)
    prune = status["prune"]
    assert prune["packsDeleted"] > 0 and prune["bytesFreed"] > 0, prune
    assert prune["pending"] is (prune["packsWaiting"] > 0)
    condition = pruned_condition(env.kube.get(api.SCHEDULE, SYSTEM, "keep-one"))
    assert condition["status"] == "True" and condition["reason"] in ("Pruned", "PruneWaiting")
    assert f"{prune['packsDeleted']} packs deleted" in str(condition["message"])


def expire_and_delete(env: Env, schedules: ScheduleReconciler, name: str, backups: int) -> None:
    """A pass of the Schedule, then the Backup reconciler on what it expired (they go)."""
    one_pass(env, schedules, name)
    reconciling = BackupReconciler(env.kube, Repositories(env.kube), SYSTEM)
    for backup in made_by(env, name):
        reconciling.reconcile(backup)
    assert len(made_by(env, name)) == backups


def test_a_prune_failure_is_a_condition_retried_next_interval(env: Env) -> None:
    nightly(env, "held", "2026-03-01T02:00:00Z", keepLast=1, paused=True, prune={"interval": "6h"})
    completed_backup(env, "held", "h1", "2026-03-01T02:05:00Z")
    completed_backup(env, "held", "h2", "2026-03-02T02:05:00Z")
    clock = Clock("2026-03-02T03:00:00Z")
    schedules = reconciler(env, clock)
    expire_and_delete(env, schedules, "held", 1)
    other = open_repo(env.repo_dir)
    try:
        with Lock(other, "exclusive"):  # another prune holds the repository
            started = one_pass(env, schedules, "held")
            assert pruned_condition(started)["reason"] == "Pruning"
            schedules.wait_prune(60)
            failed = one_pass(env, schedules, "held")
    finally:
        other.close()
    condition = pruned_condition(failed)
    assert condition["status"] == "False" and condition["reason"] == "PruneFailed"
    assert "another prune holds the repository" in str(condition["message"])
    assert ready(failed)["status"] == "True"  # the schedule itself goes on
    prune = failed["status"]["prune"]
    assert prune["pending"] is True and prune["lastStartTime"] == "2026-03-02T03:00:00Z"

    clock.set("2026-03-02T08:59:59Z")  # within the interval: not again yet
    assert pruned_condition(one_pass(env, schedules, "held"))["reason"] == "PruneFailed"
    schedules.wait_prune(60)
    clock.set("2026-03-02T09:00:00Z")
    assert pruned_condition(one_pass(env, schedules, "held"))["reason"] == "Pruning"
    schedules.wait_prune(60)
    done = one_pass(env, schedules, "held")
    assert pruned_condition(done)["reason"] == "Pruned"
    prune = done["status"]["prune"]
    assert "error" not in prune and prune["pending"] is False
    assert prune["lastStartTime"] == "2026-03-02T09:00:00Z"


def test_prunes_run_one_at_a_time_and_at_most_once_an_interval(env: Env) -> None:
    for name in ("first", "second"):
        nightly(env, name, "2026-03-01T02:00:00Z", keepLast=1, paused=True)
        completed_backup(env, name, f"{name}-1", "2026-03-01T02:05:00Z")
        completed_backup(env, name, f"{name}-2", "2026-03-02T02:05:00Z")
    clock = Clock("2026-03-02T03:00:00Z")
    schedules = reconciler(env, clock)
    expire_and_delete(env, schedules, "first", 1)
    expire_and_delete(env, schedules, "second", 1)
    assert pruned_condition(one_pass(env, schedules, "first"))["reason"] == "Pruning"
    schedules.wait_prune(60)
    # The first's outcome is not collected yet: the second does not start one meanwhile.
    waiting = one_pass(env, schedules, "second")
    assert pruned_condition(waiting)["reason"] != "Pruning"
    assert "lastStartTime" not in waiting["status"]["prune"]
    assert pruned_condition(one_pass(env, schedules, "first"))["reason"] == "Pruned"
    assert pruned_condition(one_pass(env, schedules, "second"))["reason"] == "Pruning"
    schedules.wait_prune(60)
    assert pruned_condition(one_pass(env, schedules, "second"))["reason"] == "Pruned"

    # More expired within 24 h of the last start: pending, not pruned until the interval ends.
    completed_backup(env, "first", "first-3", "2026-03-03T02:05:00Z")
    clock.set("2026-03-03T02:30:00Z")
    expire_and_delete(env, schedules, "first", 1)
    status = one_pass(env, schedules, "first")["status"]
    assert status["prune"]["pending"] is True
    assert status["prune"]["lastStartTime"] == "2026-03-02T03:00:00Z"
    clock.set("2026-03-03T02:59:59Z")
    assert pruned_condition(one_pass(env, schedules, "first"))["reason"] == "Pruned"
    clock.set("2026-03-03T03:00:00Z")
    assert pruned_condition(one_pass(env, schedules, "first"))["reason"] == "Pruning"
    schedules.wait_prune(60)
    assert one_pass(env, schedules, "first")["status"]["prune"]["pending"] is False


def test_prune_can_be_turned_off(env: Env) -> None:
    nightly(
        env, "noprune", "2026-03-01T02:00:00Z", keepLast=1, paused=True, prune={"enabled": False}
    )
    completed_backup(env, "noprune", "n1", "2026-03-01T02:05:00Z")
    completed_backup(env, "noprune", "n2", "2026-03-02T02:05:00Z")
    schedules = reconciler(env, Clock("2026-03-02T03:00:00Z"))
    expire_and_delete(env, schedules, "noprune", 1)
    schedule = one_pass(env, schedules, "noprune")
    assert pruned_condition(schedule)["reason"] == "PruneDisabled"
    assert "lastStartTime" not in schedule["status"]["prune"]
