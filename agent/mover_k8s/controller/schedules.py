"""Reconciling a Schedule: make a Backup from its template when the cron expression comes due,
and keep the last `keepLast` completed ones.

Runs missed while the controller was down are not made up one by one: the next pass makes one
Backup for the latest due time (a backup is of the app as it is now; ten catch-up copies would
be ten copies of the same state). Backups are named after their due time, so a pass that runs
twice makes one Backup. Retention expires older Backups (their `status.expiration` is set to
now): the Backup reconciler then forgets their snapshots and deletes them, as for a TTL.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from croniter import croniter

from mover_k8s import api
from mover_k8s.conditions import condition, set_condition
from mover_k8s.controller.backups import owner_ref
from mover_k8s.errors import KubeError
from mover_k8s.k8s.client import Kube, Obj

log = logging.getLogger("mover.k8s.schedule")
STAMP = "%Y-%m-%dT%H:%M:%SZ"


def _parse(stamp: str | None) -> datetime | None:
    if not stamp:
        return None
    try:
        return datetime.strptime(stamp, STAMP).replace(tzinfo=UTC)
    except ValueError:
        return None


def _next(expression: str, after: datetime) -> datetime:
    result: datetime = croniter(expression, after).get_next(datetime)
    return result


class ScheduleReconciler:
    def __init__(self, kube: Kube) -> None:
        self.kube = kube

    def _status(self, schedule: Obj, update: Obj, ok: bool, reason: str, message: str) -> None:
        meta, status = schedule["metadata"], schedule.get("status") or {}
        ready = condition(schedule, "Ready") or {}
        same = all(status.get(k) == v for k, v in update.items())
        if same and ready.get("reason") == reason and ready.get("message") == message:
            return  # nothing new: no write every pass
        update["conditions"] = set_condition(
            status.get("conditions"), "Ready", ok, reason, message, meta.get("generation")
        )
        update["observedGeneration"] = meta.get("generation", 1)
        self.kube.patch_status(api.SCHEDULE, meta["namespace"], meta["name"], update)

    def reconcile(self, schedule: Obj) -> None:
        meta, spec = schedule["metadata"], schedule.get("spec") or {}
        status = schedule.get("status") or {}
        expression = str(spec.get("schedule") or "")
        if not croniter.is_valid(expression):
            self._status(
                schedule,
                {},
                False,
                "InvalidSchedule",
                f"spec.schedule {expression!r} is not a cron expression (e.g. '0 2 * * *')",
            )
            return
        template = spec.get("template")
        if not isinstance(template, dict) or not template.get("repository"):
            self._status(
                schedule,
                {},
                False,
                "InvalidTemplate",
                "spec.template must be a Backup spec naming a repository",
            )
            return
        self._retain(schedule, int(spec.get("keepLast") or 7))
        if spec.get("suspend"):
            self._status(schedule, {"nextScheduleTime": None}, True, "Suspended", "suspended")
            return
        now = datetime.now(UTC)
        base = _parse(status.get("lastScheduleTime")) or _parse(meta.get("creationTimestamp"))
        due = _next(expression, base or now)
        update: Obj = {}
        if due <= now:
            latest: datetime = croniter(expression, now).get_prev(datetime)
            run_at = max(due, latest)
            name = self._make_backup(schedule, template, run_at)
            update.update(lastScheduleTime=run_at.strftime(STAMP), lastBackup=name)
            due = _next(expression, max(run_at, now))
        update["nextScheduleTime"] = due.strftime(STAMP)
        last = update.get("lastBackup") or status.get("lastBackup") or "none yet"
        self._status(schedule, update, True, "Scheduled", f"last backup: {last}")

    def _make_backup(self, schedule: Obj, template: Obj, run_at: datetime) -> str:
        meta = schedule["metadata"]
        name = f"{meta['name'][:200]}-{run_at:%Y%m%d%H%M%S}"
        body = {
            "apiVersion": api.API_VERSION,
            "kind": "Backup",
            "metadata": {
                "name": name,
                "namespace": meta["namespace"],
                "labels": {api.SCHEDULE_LABEL: meta["name"]},
                "ownerReferences": [owner_ref(schedule)],
            },
            "spec": dict(template),
        }
        try:
            self.kube.create(api.BACKUP, body)
            log.info("schedule %s made backup %s", meta["name"], name)
        except KubeError as exc:
            if exc.status != 409:  # made by an earlier pass: that is the one
                raise
        return name

    def _retain(self, schedule: Obj, keep: int) -> None:
        """Keep the newest `keep` Completed Backups and anything newer; expire the rest."""
        meta = schedule["metadata"]
        selector = f"{api.SCHEDULE_LABEL}={meta['name']}"
        made = self.kube.list(api.BACKUP, meta["namespace"], label_selector=selector)
        done = [
            b
            for b in made
            if (b.get("status") or {}).get("phase") in api.DONE_PHASES and not _expiring(b)
        ]
        done.sort(key=lambda b: (b["metadata"].get("creationTimestamp", ""), b["metadata"]["name"]))
        completed = [b for b in done if b["status"]["phase"] == api.COMPLETED]
        if len(completed) <= keep:
            return
        oldest_kept = completed[-keep]
        cutoff = (
            oldest_kept["metadata"].get("creationTimestamp", ""),
            oldest_kept["metadata"]["name"],
        )
        now = datetime.now(UTC).strftime(STAMP)
        for backup in done:
            key = (backup["metadata"].get("creationTimestamp", ""), backup["metadata"]["name"])
            if key < cutoff:
                self.kube.patch_status(
                    api.BACKUP, meta["namespace"], backup["metadata"]["name"], {"expiration": now}
                )
                log.info("schedule %s: backup %s expires", meta["name"], backup["metadata"]["name"])


def _age_key(backup: Obj) -> tuple[str, str]:
    """Oldest first: creation time, then the name (which holds the due time)."""
    return (backup["metadata"].get("creationTimestamp", ""), backup["metadata"]["name"])


def _expiring(backup: Obj) -> bool:
    when = _parse((backup.get("status") or {}).get("expiration"))
    return when is not None and when <= datetime.now(UTC)
