"""Reconciling a Schedule: make a Backup from its template when the cron expression comes due,
keep what the retention policy keeps, and prune the repository now and then.

- **Runs.** Backups are named after their due time, so a pass that runs twice makes one
  Backup. `spec.paused` (or the older `spec.suspend`) stops new runs; un-pausing resumes at the
  next due time after the pass that sees it, and makes up nothing from the pause.
- **Missed runs** (the controller was down): they are not made up one by one (a backup is of
  the app as it is now; ten catch-up copies would be ten copies of the same state). The next
  pass makes at most one Backup, for the latest due time, if that time was missed by no more
  than `spec.startingDeadlineSeconds` (no deadline: always); otherwise it makes none and
  records the skipped runs in status (`lastMissedTime`, `missedRuns`, condition reason
  `MissedRun`), like a Kubernetes CronJob.
- **Retention** is mover's own policy (mover.retention, restic's semantics: last, hourly,
  daily, weekly, monthly, yearly) over the schedule's Completed Backups by completion time.
  Those it does not keep expire (their `status.expiration` is set to now): the Backup
  reconciler forgets their snapshots and deletes them, as for a TTL. Failed or cancelled
  Backups older than the oldest kept one expire too (mover_k8s.controller.retention).
- **Prune.** Once retention has expired Backups and they are gone (their snapshots
  forgotten), mover's prune (two-phase GC, exclusive lock; safe beside running backups, see
  mover.maintenance) runs on the repository, in a thread, at most once every
  `spec.prune.interval` (default 24h, counted from the last start, kept in status) and one at a
  time in this controller. Its outcome goes to `status.prune` and the `Pruned` condition; a
  failure (e.g. another prune holds the repository) is a condition, tried again next interval.
  Packs still waiting (grace period, running backups) keep a prune due for the next interval.
- **Per namespace** (`spec.perNamespace: true`): each run makes one Backup per namespace that
  `spec.namespaceSelector` matches (plus the template's `includedNamespaces`, minus
  `spec.excludedNamespaces`; mover_k8s.apps), named `SCHEDULE-NAMESPACE-TIME` and labelled
  with the namespace (`mover.dev/app`), so each app is a restore point of its own. Retention
  applies per namespace: each app keeps its own last N.

The clock is injectable (`clock`), so that tests can say when "now" is.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from croniter import croniter

from mover import api as mover_api
from mover.api import Policy
from mover.errors import MoverError
from mover_k8s import api, apps
from mover_k8s.conditions import condition, set_condition
from mover_k8s.controller.common import owner_ref, parse_stamp, parse_ttl
from mover_k8s.controller.retention import expired, expiring, policy_of
from mover_k8s.errors import KubeError, SpecError
from mover_k8s.k8s.client import Kube, Obj
from mover_k8s.repo_access import Repositories

log = logging.getLogger("mover.k8s.schedule")
STAMP = "%Y-%m-%dT%H:%M:%SZ"
DEFAULT_PRUNE_INTERVAL = "24h"
# Missed runs counted at most this far (a schedule every second, down for a week).
MAX_COUNTED = 10000
# A condition besides Ready: type, status, reason, message.
Extra = tuple[str, bool | None, str, str]


def _stamp(when: datetime) -> str:
    return when.astimezone(UTC).strftime(STAMP)


def _next(expression: str, after: datetime) -> datetime:
    result: datetime = croniter(expression, after).get_next(datetime)
    return result


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class _Checked:
    """A Schedule's spec, checked."""

    expression: str  # the cron expression
    template: Obj  # the Backup spec of each run
    per_namespace: bool
    selector: Obj | None  # spec.namespaceSelector
    deadline: int | None  # spec.startingDeadlineSeconds
    policy: Policy  # retention
    interval: timedelta | None  # between prunes; None: prune is off

    @property
    def repository(self) -> str:
        return str(self.template["repository"])


@dataclass(frozen=True)
class _Ready:
    """The Ready condition a pass that runs leaves: its reason and message."""

    reason: str
    message: str


@dataclass
class _Prune:
    """One prune of this controller: the repository it runs on and, once done, its outcome."""

    schedule: tuple[str, str]
    repository: str
    thread: threading.Thread
    result: Obj | None = None


class ScheduleReconciler:
    def __init__(
        self,
        kube: Kube,
        repos: Repositories | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.kube = kube
        self.repos = repos or Repositories(kube)
        self.clock: Callable[[], datetime] = clock or _utc_now
        self._prune: _Prune | None = None  # one at a time in this controller
        self._prune_lock = threading.Lock()

    # -- status --------------------------------------------------------------------------

    def _status(
        self,
        schedule: Obj,
        update: Obj,
        ok: bool,
        reason: str,
        message: str,
        extra: Sequence[Extra] = (),
    ) -> None:
        meta, status = schedule["metadata"], schedule.get("status") or {}
        same = all(status.get(k) == v for k, v in update.items())
        for type_, state, why, text in [("Ready", ok, reason, message), *extra]:
            now = condition(schedule, type_) or {}
            want = "Unknown" if state is None else "True" if state else "False"
            if (now.get("status"), now.get("reason"), now.get("message")) != (want, why, text):
                same = False
        if same:
            return  # nothing new: no write every pass
        conditions = status.get("conditions")
        for type_, state, why, text in [("Ready", ok, reason, message), *extra]:
            conditions = set_condition(conditions, type_, state, why, text, meta.get("generation"))
        update["conditions"] = conditions
        update["observedGeneration"] = meta.get("generation", 1)
        self.kube.patch_status(api.SCHEDULE, meta["namespace"], meta["name"], update)

    def _refuse(self, schedule: Obj, reason: str, message: str) -> None:
        self._status(schedule, {"nextScheduleTime": None}, False, reason, message)

    # -- the pass ------------------------------------------------------------------------

    def reconcile(self, schedule: Obj) -> None:
        try:
            checked = self._check(schedule)
        except SpecError as exc:
            self._refuse(schedule, exc.reason, str(exc))
            return
        spec, status = schedule.get("spec") or {}, schedule.get("status") or {}
        now = self.clock()
        update: Obj = {}
        expired = self._retain(schedule, checked.policy)
        extra = self._pruning(schedule, checked.repository, checked.interval, expired, now, update)
        if spec.get("paused") or spec.get("suspend"):
            update.update(nextScheduleTime=None, pausedAt=status.get("pausedAt") or _stamp(now))
            self._status(
                schedule,
                update,
                True,
                "Paused",
                "paused: no new Backups; un-pausing resumes at the next due time",
                extra,
            )
            return
        due = self._due(schedule, checked.expression, now, update)
        ready = _Ready("Scheduled", self._last_run(status, checked.per_namespace))
        if due <= now:
            run_at = self._run_at(checked.expression, due, now)
            ready = self._run(schedule, checked, due, run_at, now, update)
            due = _next(checked.expression, max(run_at, now))
        update["nextScheduleTime"] = _stamp(due)
        self._status(schedule, update, True, ready.reason, ready.message, extra)

    def _check(self, schedule: Obj) -> _Checked:
        """The spec, checked (SpecError: the Schedule is refused), and its Repository there."""
        meta, spec = schedule["metadata"], schedule.get("spec") or {}
        expression = str(spec.get("schedule") or "")
        if not croniter.is_valid(expression):
            raise SpecError(
                "InvalidSchedule",
                f"spec.schedule {expression!r} is not a cron expression (e.g. '0 2 * * *')",
            )
        template = spec.get("template")
        if not isinstance(template, dict) or not template.get("repository"):
            raise SpecError(
                "InvalidTemplate", "spec.template must be a Backup spec naming a repository"
            )
        per_namespace = spec.get("perNamespace") is True
        selector = apps.check_selector(spec.get("namespaceSelector"), "spec.namespaceSelector")
        if per_namespace and selector is None and not template.get("includedNamespaces"):
            raise SpecError(
                "InvalidNamespaceSelector",
                "spec.perNamespace needs spec.namespaceSelector (or the template's "
                "includedNamespaces) to say which namespaces to back up",
            )
        if not per_namespace and (selector is not None or spec.get("excludedNamespaces")):
            raise SpecError(
                "InvalidNamespaceSelector",
                "spec.namespaceSelector and spec.excludedNamespaces need spec.perNamespace: true",
            )
        deadline = spec.get("startingDeadlineSeconds")
        if deadline is not None and (type(deadline) is not int or deadline < 0):
            raise SpecError(
                "InvalidDeadline",
                f"spec.startingDeadlineSeconds must be an integer >= 0, not {deadline!r}",
            )
        policy = policy_of(spec)
        interval = self._prune_interval(spec)
        self.repos.get(meta["namespace"], str(template["repository"]))
        return _Checked(expression, template, per_namespace, selector, deadline, policy, interval)

    @staticmethod
    def _due(schedule: Obj, expression: str, now: datetime, update: Obj) -> datetime:
        """The next due time after the last run, the last missed one, or the resumption (now,
        when this pass sees the Schedule un-paused: recorded in `update`)."""
        meta, status = schedule["metadata"], schedule.get("status") or {}
        base = [parse_stamp(status.get(k)) for k in ("lastScheduleTime", "lastMissedTime")]
        if status.get("pausedAt"):  # un-paused in this pass: count from now
            update.update(pausedAt=None, resumedAt=_stamp(now))
            base.append(now)
        base.append(parse_stamp(status.get("resumedAt")))
        known = [b for b in base if b is not None]
        start = max(known) if known else parse_stamp(meta.get("creationTimestamp")) or now
        return _next(expression, start)

    @staticmethod
    def _last_run(status: Obj, per_namespace: bool) -> str:
        """The Ready message of a pass that makes no Backup."""
        if per_namespace:
            count = status.get("lastBackupCount")
            return (
                "last run: none yet"
                if count is None
                else f"last run: {count} backup(s), one per namespace"
            )
        return f"last backup: {status.get('lastBackup') or 'none yet'}"

    @staticmethod
    def _run_at(expression: str, due: datetime, now: datetime) -> datetime:
        """The run a pass at `now` makes for: the latest due time not after it (at least
        `due`)."""
        latest: datetime = croniter(expression, now).get_prev(datetime)
        if _next(expression, latest) <= now:  # get_prev is strictly before `now`
            latest = _next(expression, latest)
        return max(due, latest)

    def _run(
        self,
        schedule: Obj,
        checked: _Checked,
        due: datetime,
        run_at: datetime,
        now: datetime,
        update: Obj,
    ) -> _Ready:
        """The run due at `run_at`: made (one Backup, or one per namespace), or skipped when
        more than startingDeadlineSeconds late; what it changes goes into `update`."""
        expression, deadline = checked.expression, checked.deadline
        missed = self._count(expression, due, run_at)  # due times before run_at not run
        late = (now - run_at).total_seconds()
        if deadline is not None and late > deadline:
            update.update(lastMissedTime=_stamp(run_at), missedRuns=missed + 1)
            return _Ready(
                "MissedRun",
                f"missed the run due at {_stamp(run_at)} by {late:.0f}s, more than "
                f"startingDeadlineSeconds ({deadline}); skipped {missed + 1} run(s)",
            )
        if checked.per_namespace:
            made = self._make_app_backups(schedule, checked.template, checked.selector, run_at)
            update.update(
                lastScheduleTime=_stamp(run_at),
                lastBackupCount=len(made),
                lastNamespaces=sorted(made),
            )
            return _Ready(
                "Scheduled",
                f"last run: {len(made)} backup(s), one per namespace"
                if made
                else "last run: no namespace matched; no backup made",
            )
        name = self._make_backup(schedule, checked.template, run_at)
        update.update(lastScheduleTime=_stamp(run_at), lastBackup=name)
        message = f"last backup: {name}"
        if missed:
            update["lastMissedTime"] = _stamp(croniter(expression, run_at).get_prev(datetime))
            update["missedRuns"] = missed
            message += f" (caught up once; skipped {missed} earlier run(s))"
        return _Ready("Scheduled", message)

    @staticmethod
    def _count(expression: str, first: datetime, before: datetime) -> int:
        """Due times from `first` up to, not including, `before` (at most MAX_COUNTED)."""
        counted, it = 0, croniter(expression, first - timedelta(seconds=1))
        when = it.get_next(datetime)
        while when < before and counted < MAX_COUNTED:
            counted += 1
            when = it.get_next(datetime)
        return counted

    @staticmethod
    def _prune_interval(spec: Obj) -> timedelta | None:
        """None: prune is off (spec.prune.enabled: false)."""
        settings = spec.get("prune") or {}
        if not isinstance(settings, dict):
            raise SpecError("InvalidPrune", "spec.prune must be a map (enabled, interval)")
        if settings.get("enabled") is False:
            return None
        text = str(settings.get("interval") or DEFAULT_PRUNE_INTERVAL)
        try:
            interval = parse_ttl(text)
        except SpecError:
            raise SpecError(
                "InvalidPrune", f"spec.prune.interval {text!r} is not a duration like 24h or 90m"
            ) from None
        if interval <= timedelta(0):
            raise SpecError("InvalidPrune", f"spec.prune.interval {text!r} must be above zero")
        return interval

    def _make_app_backups(
        self, schedule: Obj, template: Obj, selector: Obj | None, run_at: datetime
    ) -> dict[str, str]:
        """One Backup per matching namespace: namespace -> the Backup's name."""
        meta, spec = schedule["metadata"], schedule.get("spec") or {}
        namespaces = apps.select_namespaces(
            self.kube,
            selector,
            template.get("includedNamespaces") or (),
            spec.get("excludedNamespaces") or (),
            meta["namespace"],
        )
        return {ns: self._make_backup(schedule, template, run_at, ns) for ns in namespaces}

    def _make_backup(
        self, schedule: Obj, template: Obj, run_at: datetime, app: str | None = None
    ) -> str:
        """The run's Backup; with `app`, the Backup of that namespace alone (per namespace)."""
        meta = schedule["metadata"]
        stamp = f"{run_at:%Y%m%d%H%M%S}"
        labels = {api.SCHEDULE_LABEL: meta["name"]}
        if app is None:
            name, spec = f"{meta['name'][:200]}-{stamp}", dict(template)
        else:
            name, spec = (
                apps.object_name(meta["name"], app, stamp),
                apps.app_backup_spec(template, app),
            )
            labels[apps.APP_LABEL] = app
        body = {
            "apiVersion": api.API_VERSION,
            "kind": "Backup",
            "metadata": {
                "name": name,
                "namespace": meta["namespace"],
                "labels": labels,
                "ownerReferences": [owner_ref(schedule)],
            },
            "spec": spec,
        }
        try:
            self.kube.create(api.BACKUP, body)
            log.info("schedule %s made backup %s", meta["name"], name)
        except KubeError as exc:
            if exc.status != 409:  # made by an earlier pass: that is the one
                raise
        return name

    # -- retention -----------------------------------------------------------------------

    def _made(self, schedule: Obj) -> list[Obj]:
        meta = schedule["metadata"]
        selector = f"{api.SCHEDULE_LABEL}={meta['name']}"
        return self.kube.list(api.BACKUP, meta["namespace"], label_selector=selector)

    def _retain(self, schedule: Obj, policy: Policy) -> int:
        """Expire the Completed Backups the policy does not keep, and the failed or cancelled
        ones older than the oldest kept; per app (namespace) for a per-namespace schedule.
        Returns how many expired in this pass."""
        meta = schedule["metadata"]
        groups: dict[str, list[Obj]] = {}
        for backup in self._made(schedule):
            app = (backup["metadata"].get("labels") or {}).get(apps.APP_LABEL) or ""
            groups.setdefault(app, []).append(backup)
        expire = [n for _, made in sorted(groups.items()) for n in expired(meta, made, policy)]
        stamp = _stamp(datetime.now(UTC))  # the Backup reconciler's clock: expire now
        for name in sorted(expire):
            self.kube.patch_status(api.BACKUP, meta["namespace"], name, {"expiration": stamp})
            log.info("schedule %s: backup %s expires (retention)", meta["name"], name)
        return len(expire)

    # -- prune ---------------------------------------------------------------------------

    def _pruning(
        self,
        schedule: Obj,
        repository: str,
        interval: timedelta | None,
        expired: int,
        now: datetime,
        update: Obj,
    ) -> list[Extra]:
        """Collect a finished prune's outcome, start one when due; the Pruned condition."""
        meta, status = schedule["metadata"], schedule.get("status") or {}
        key = (meta["namespace"], meta["name"])
        state: Obj = dict(status.get("prune") or {})
        before = dict(state)
        if expired:
            state["pending"] = True
        outcome: Obj | None = None
        with self._prune_lock:
            current = self._prune
            if current is not None and current.schedule == key and current.result is not None:
                outcome, self._prune = current.result, None
        if outcome is not None:
            state.update(outcome)
            state["pending"] = bool(outcome.get("error") or outcome.get("packsWaiting"))
        running = current is not None and current.schedule == key and outcome is None
        last = parse_stamp(state.get("lastStartTime"))
        if (
            interval is not None
            and state.get("pending")
            and not running
            and (last is None or now - last >= interval)
            and not self._expiring_left(schedule)
            and self._start_prune(key, meta["namespace"], repository)
        ):
            state["lastStartTime"] = _stamp(now)
            running = True
        if state != before:
            update["prune"] = state
        if interval is None:
            return [("Pruned", None, "PruneDisabled", "spec.prune.enabled is false")]
        if running:
            return [("Pruned", None, "Pruning", f"prune of Repository {repository} is running")]
        if state.get("error"):
            return [("Pruned", False, "PruneFailed", f"{state['error']}; retried next interval")]
        if "lastEndTime" not in state:
            return [("Pruned", None, "NotYet", "no prune yet: retention has expired nothing")]
        message = (
            f"{state.get('packsDeleted', 0)} packs deleted, {state.get('bytesFreed', 0)} bytes "
            f"freed, {state.get('packsWaiting', 0)} packs waiting"
        )
        if state.get("packsWaiting"):
            return [("Pruned", True, "PruneWaiting", message + "; deleted by a later prune")]
        return [("Pruned", True, "Pruned", message)]

    def _expiring_left(self, schedule: Obj) -> bool:
        """Expired Backups not deleted yet: their snapshots may not be forgotten yet."""
        return any(expiring(b) for b in self._made(schedule))

    def _start_prune(self, key: tuple[str, str], namespace: str, repository: str) -> bool:
        with self._prune_lock:
            job = self._prune
            if (
                job is not None
                and job.result is not None
                and job.schedule != key
                and self.kube.find(api.SCHEDULE, *job.schedule) is None
            ):
                job = self._prune = None  # its schedule is gone: nobody reads its outcome
            if job is not None:
                return False  # another schedule's prune is running, or its outcome unread
            thread = threading.Thread(
                target=self._run_prune, name=f"prune-{repository}", daemon=True
            )
            self._prune = _Prune(key, f"{namespace}/{repository}", thread)
            thread.start()
        log.info("schedule %s/%s: prune of %s started", *key, repository)
        return True

    def _run_prune(self) -> None:
        with self._prune_lock:
            job = self._prune
        if job is None:  # pragma: no cover - set before the thread starts
            return
        namespace, name = job.repository.split("/", 1)
        result: Obj
        try:
            repo = self.repos.open(namespace, name)
            try:
                stats = mover_api.prune(repo)
            finally:
                repo.close()
        except MoverError as exc:
            log.warning("prune of %s failed: %s", job.repository, exc)
            result = {"error": str(exc)}
        except Exception as exc:  # the controller outlives a prune's bug: say it in status
            log.exception("prune of %s failed", job.repository)
            result = {"error": f"{type(exc).__name__}: {exc}"}
        else:
            result = {
                "error": None,
                "packsDeleted": stats.packs_deleted + stats.unindexed_deleted,
                "bytesFreed": stats.bytes_freed,
                "packsWaiting": stats.packs_waiting,
            }
        result["lastEndTime"] = _stamp(self.clock())
        with self._prune_lock:
            job.result = result

    def wait_prune(self, timeout: float) -> None:
        """Wait for this controller's running prune, if any (tests; shutdown)."""
        with self._prune_lock:
            job = self._prune
        if job is not None:
            job.thread.join(timeout)
