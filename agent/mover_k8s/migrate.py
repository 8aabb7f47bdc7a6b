"""`mover app migrate`: move apps (one namespace each) to another cluster, each on its own.

Design (the simplest that is sound): both clusters run mover (controller and node agents), and
the target's Repository reads the backups the source's writes, because it is the same
repository (one bucket both clusters reach) or a replica of it (`mover replicate
--init-target`). Nothing new runs in the clusters: this module, in the CLI, drives ordinary
Backups on the source and Restores on the target, app by app, and reads their statuses.

For each app (namespace), in order:

1. **Seed** (`--seed-rounds`, default 1; the app keeps running on the source): a Backup of the
   namespace on the source (incremental: chunks the repository holds are not stored again),
   then a Restore on the target of its Namespace, StorageClasses and PersistentVolumeClaims
   only, with the volumes' data: the target's claims exist and hold the data of that moment,
   and no workload runs there. Later rounds restore data only (`data-only`) into those claims.
2. **Cut over**: a last Backup on the source (it stores only what changed since the seed),
   then a full Restore on the target (mappings applied): the objects are created, the claims
   made by the seed are kept, and the volumes are restored *by difference* (the Restore's
   annotation `mover.dev/volume-delta: "true"`, mover_k8s.node.delta): only chunks that
   changed since the seed are fetched; the workloads start once the data is in place.

Between a Backup and its Restore, when the target repository lacks the backup's snapshots (a
replica), they are replicated from this machine (mover.replicate: only the blobs the replica
lacks; data passes through the machine running the CLI). Every Restore must restore the very
manifest its Backup stored (checked by id).

Apps are independent: a step that fails (a Backup or Restore not Completed, an API error that
is not temporary, a replication error) fails that app, with the step and the reason, and the
others go on; at most `parallel` apps are in flight at once. Everything made is named
`MIGRATION-NAMESPACE-STEP` and labelled (mover.dev/migration, mover.dev/app,
mover.dev/migration-step), so running the same migration again resumes it: finished steps are
not done again.

The report, per app: objects created (skipped, failed) by its Restores, volumes restored,
bytes moved (stored by its Backups, replicated, fetched by its Restores; written, and left
unchanged by the restores by difference), the external names its objects recorded (what
outside must be re-pointed, with the target's value when there is one), and, with a desired
directory, the drift of what ran against git (mover_k8s.diff).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

from mover import api as mover_api
from mover.api import Repository
from mover.errors import MoverError, UsageError
from mover_k8s import api, apps
from mover_k8s.conditions import condition
from mover_k8s.errors import Conflict, KubeError
from mover_k8s.k8s.cache import Cache
from mover_k8s.k8s.client import Obj
from mover_k8s.migrate_plan import (
    MIGRATION_LABEL,
    PHASES,
    STEP_LABEL,
    AppRun,
    Notify,
    Plan,
    Side,
    Step,
    steps_for,
)
from mover_k8s.migrate_report import (
    app_report,
    drifts,
    snapshot_ids,
    stored_bytes,
    summary,
    volume_restores,
)
from mover_k8s.node.agent import DELTA_ANNOTATION
from mover_k8s.repo_access import Repositories
from mover_k8s.wakeup import Wakeup

# What the command line, the tests and the benchmarks use (the parts now have modules of
# their own: migrate_plan, migrate_report).
__all__ = ["Migration", "Plan", "Side", "summary"]


def _phase(obj: Obj | None) -> str:
    return str(((obj or {}).get("status") or {}).get("phase") or api.NEW)


def _why(obj: Obj) -> str:
    ready = condition(obj, "Ready") or {}
    return f"{_phase(obj)}: {ready.get('reason', '')}: {ready.get('message', '')}".rstrip(": ")


class Migration:
    """Runs a Plan from `source` to `target` (see the module's docstring)."""

    def __init__(self, source: Side, target: Side, plan: Plan, notify: Notify | None = None):
        if plan.phase not in PHASES:
            raise UsageError(f"phase {plan.phase!r} is not one of {', '.join(PHASES)}")
        self.source, self.target, self.plan = source, target, plan
        self.notify = notify or (lambda _: None)
        self.runs: list[AppRun] = []
        self._source_repos = Repositories(source.kube)
        self._target_repos = Repositories(target.kube)
        self.replica = False

    # -- checks ----------------------------------------------------------------------------

    def check(self) -> None:
        """Everything that can be wrong with the input, before anything is made: UsageError."""
        plan = self.plan
        if not plan.apps:
            raise UsageError("no namespace to migrate: name them or give a namespace selector")
        missing = apps.missing_namespaces(self.source.kube, plan.apps)
        if missing:
            raise UsageError(f"no namespace {', '.join(missing)} on the source cluster")
        unknown = sorted(set(plan.namespace_mapping) - set(plan.apps))
        if unknown:
            raise UsageError(
                f"--namespace-mapping names {', '.join(unknown)}, not among the apps migrated"
            )
        targets = [plan.namespace_mapping.get(a, a) for a in plan.apps]
        if len(set(targets)) != len(targets):
            raise UsageError("--namespace-mapping maps two apps to one namespace")
        source = self._open(self._source_repos, self.source, "source")
        try:
            target = self._open(self._target_repos, self.target, "target")
            try:
                if target.id != source.id and target.master != source.master:
                    raise UsageError(
                        f"Repository {self.target.namespace}/{self.target.repository} on the "
                        "target is neither the source's repository nor a replica of it (made "
                        "with `mover replicate --init-target` from it)"
                    )
                self.replica = target.id != source.id
            finally:
                target.close()
        finally:
            source.close()

    @staticmethod
    def _open(repos: Repositories, side: Side, what: str) -> Repository:
        """The side's repository, opened from here (with the caller's credentials)."""
        try:
            return repos.open(side.namespace, side.repository)
        except MoverError as exc:
            raise UsageError(f"the {what} cluster's repository: {exc}") from None

    # -- planning --------------------------------------------------------------------------

    def _seed_rounds(self, app: str, existing: dict[str, Obj]) -> list[int]:
        """The seed rounds to run: 1..N for `all`; for `seed`, N rounds after those already
        made (an unfinished last one is resumed and counts)."""
        count = self.plan.seed_rounds
        if self.plan.phase == "all":
            return list(range(1, count + 1))
        if self.plan.phase == "cutover":
            return []
        made = sorted(
            int(str(labels.get(STEP_LABEL, "s0"))[1:] or 0)
            for obj in existing.values()
            if (labels := obj["metadata"].get("labels") or {}).get(apps.APP_LABEL) == app
            and str(labels.get(STEP_LABEL, "")).startswith("s")
        )
        if not made:
            return list(range(1, count + 1))
        last = made[-1]
        restore = self.target.kube.find(
            api.RESTORE, self.target.namespace, apps.object_name(self.plan.name, app, f"s{last}")
        )
        first = last + 1 if _phase(restore) == api.COMPLETED else last
        return list(range(first, first + count))

    # -- the loop --------------------------------------------------------------------------

    @contextlib.contextmanager
    def _watched(self, selector: str) -> Iterator[None]:
        """This migration's Backups (source) and Restores (target) read from copies that watches
        keep (mover_k8s.k8s.cache), not listed again at every tick: with hundreds of apps in
        flight a tick would otherwise read every one of them from both API servers."""
        stop = threading.Event()
        sides = [(self.source, api.BACKUP), (self.target, api.RESTORE)]
        with contextlib.ExitStack() as stack:
            for i, (side, rt) in enumerate(sides):
                cache = Cache()
                watch = Wakeup(side.kube, (rt,), side.namespace, selector, cache=cache)
                stack.enter_context(watch.running(stop))
                cached = replace(side, kube=side.kube.cached(cache))
                if i == 0:
                    self.source = cached
                else:
                    self.target = cached
            try:
                yield
            finally:
                self.source, self.target = sides[0][0], sides[1][0]

    def run(self) -> list[Obj]:
        """Migrate every app; the per-app reports."""
        selector = f"{MIGRATION_LABEL}={self.plan.name}"
        with self._watched(selector):
            return self._run(selector)

    def _run(self, selector: str) -> list[Obj]:
        plan = self.plan
        existing = {
            b["metadata"]["name"]: b
            for b in self.source.kube.list(api.BACKUP, self.source.namespace, selector)
        }
        self.runs = [
            AppRun(
                app,
                plan.namespace_mapping.get(app, app),
                steps_for(self._seed_rounds(app, existing), plan.phase != "seed"),
            )
            for app in plan.apps
        ]
        deadline = time.monotonic() + plan.timeout
        with ThreadPoolExecutor(4, thread_name_prefix="mover-replicate") as replicator:
            while not all(r.done for r in self.runs):
                try:
                    backups = {
                        b["metadata"]["name"]: b
                        for b in self.source.kube.list(api.BACKUP, self.source.namespace, selector)
                    }
                    restores = {
                        r["metadata"]["name"]: r
                        for r in self.target.kube.list(api.RESTORE, self.target.namespace, selector)
                    }
                except KubeError as exc:  # an API away a moment: next tick
                    self.notify(f"listing failed, retrying: {exc}")
                    time.sleep(plan.poll)
                    continue
                running = sum(1 for r in self.runs if r.state == "running")
                for run in self.runs:
                    if run.state == "waiting" and running < plan.parallel:
                        run.state, run.started = "running", time.monotonic()
                        running += 1
                    if run.state == "running":
                        self._guarded(run, backups, restores, replicator)
                if time.monotonic() > deadline:
                    for run in self.runs:
                        if not run.done:
                            self._fail(run, f"not done after {plan.timeout:.0f}s")
                    break
                if not all(r.done for r in self.runs):
                    time.sleep(plan.poll)
        return self.report()

    def _guarded(
        self,
        run: AppRun,
        backups: dict[str, Obj],
        restores: dict[str, Obj],
        replicator: ThreadPoolExecutor,
    ) -> None:
        """One app's next steps; what goes wrong fails this app only (an API error that may
        pass is tried again on the next tick)."""
        try:
            self._advance(run, backups, restores, replicator)
        except KubeError as exc:
            if exc.temporary or exc.status in (0, 429, 500, 502, 503, 504):
                self.notify(f"{run.app}: {exc} (retrying)")
                return
            self._fail(run, f"the Kubernetes API refused: {exc}")
        except MoverError as exc:
            self._fail(run, str(exc))
        except Exception as exc:  # one app's surprise must not stop the others
            self._fail(run, f"{type(exc).__name__}: {exc}")

    def _fail(self, run: AppRun, message: str) -> None:
        step = run.steps[run.at] if run.at < len(run.steps) else None
        run.state, run.error, run.ended = "failed", message, time.monotonic()
        run.failed_step = f"{step.kind} {step.round}" if step else ""
        self.notify(f"{run.app}: FAILED at {run.failed_step}: {message}")

    def _advance(
        self,
        run: AppRun,
        backups: dict[str, Obj],
        restores: dict[str, Obj],
        replicator: ThreadPoolExecutor,
    ) -> None:
        while run.at < len(run.steps):
            step = run.steps[run.at]
            name = run.name(self.plan, step.round)
            if step.kind == "backup":
                backup = backups.get(name)
                if backup is None:
                    self._create_backup(run, step, name)
                    return
                phase = _phase(backup)
                if phase not in api.DONE_PHASES:
                    return
                if phase != api.COMPLETED:
                    self._fail(run, f"Backup {name} {_why(backup)}")
                    return
                if not self._replicated(run, backup, replicator):
                    return
                run.backups[step.round] = backup
                self.notify(f"{run.app}: backup {step.round} completed")
            else:
                restore = restores.get(name)
                if restore is None:
                    self._create_restore(run, step, name)
                    return
                phase = _phase(restore)
                if phase not in api.DONE_PHASES:
                    return
                if phase != api.COMPLETED:
                    self._fail(run, f"Restore {name} on the target {_why(restore)}")
                    return
                wanted = run.backups[step.round]["status"].get("manifestSnapshot")
                got = (restore.get("status") or {}).get("manifestSnapshot")
                if wanted != got:
                    self._fail(
                        run,
                        f"Restore {name} restored manifest {str(got)[:8]}, not {str(wanted)[:8]} "
                        "of its Backup",
                    )
                    return
                run.restores[step.round] = restore
                self.notify(f"{run.app}: restore {step.round} completed")
            run.at += 1
        run.state, run.ended = "completed", time.monotonic()

    def _labels(self, run: AppRun, step: Step) -> dict[str, str]:
        return {
            MIGRATION_LABEL: self.plan.name,
            apps.APP_LABEL: run.app,
            STEP_LABEL: step.round,
        }

    def _create_backup(self, run: AppRun, step: Step, name: str) -> None:
        body = {
            "apiVersion": api.API_VERSION,
            "kind": "Backup",
            "metadata": {
                "name": name,
                "namespace": self.source.namespace,
                "labels": self._labels(run, step),
            },
            "spec": {"repository": self.source.repository, "includedNamespaces": [run.app]},
        }
        with contextlib.suppress(Conflict):  # made already: the next list shows it
            self.source.kube.create(api.BACKUP, body)

    def _create_restore(self, run: AppRun, step: Step, name: str) -> None:
        backup = run.backups[step.round]
        spec: Obj = {
            "backup": f"{self.source.namespace}/{backup['metadata']['name']}",
            "repository": self.target.repository,
            "mode": step.mode,
            "existingResourcePolicy": "skip",
        }
        if run.target != run.app:
            spec["namespaceMapping"] = {run.app: run.target}
        if self.plan.storage_class_mapping:
            spec["storageClassMapping"] = dict(self.plan.storage_class_mapping)
        if step.kinds:
            spec["includedKinds"] = list(step.kinds)
        if self.plan.external_wait:
            spec["externalWait"] = self.plan.external_wait
        body = {
            "apiVersion": api.API_VERSION,
            "kind": "Restore",
            "metadata": {
                "name": name,
                "namespace": self.target.namespace,
                "labels": self._labels(run, step),
                # Into claims a seed filled: fetch only what changed (mover_k8s.node.delta).
                "annotations": {DELTA_ANNOTATION: "true"},
            },
            "spec": spec,
        }
        with contextlib.suppress(Conflict):
            self.target.kube.create(api.RESTORE, body)

    # -- replication -----------------------------------------------------------------------

    def _replicated(self, run: AppRun, backup: Obj, replicator: ThreadPoolExecutor) -> bool:
        """Whether the target repository holds the backup's snapshots; with a replica, copy
        them there (in a thread) first."""
        if not self.replica:
            return True
        if run.replicating is None:
            run.replicating = replicator.submit(self._replicate, snapshot_ids(backup))
            return False
        if not run.replicating.done():
            return False
        future, run.replicating = run.replicating, None
        try:
            run.replicated += future.result()
        except MoverError as exc:
            raise MoverError(f"replicating Backup {backup['metadata']['name']}: {exc}") from None
        return True

    def _replicate(self, ids: list[str]) -> int:
        source = self._source_repos.open(self.source.namespace, self.source.repository)
        try:
            target = self._target_repos.open(self.target.namespace, self.target.repository)
            try:
                wanted = [i for i in ids if not mover_api.has_snapshot(target, i)]
                if not wanted:
                    return 0
                return mover_api.replicate(source, target, wanted).bytes_sent
            finally:
                target.close()
        finally:
            source.close()

    # -- the report ------------------------------------------------------------------------

    def report(self) -> list[Obj]:
        """The per-app reports (mover_k8s.migrate_report)."""
        uploaded = stored_bytes(self._source_repos, self.source, self.notify)
        volume_items = volume_restores(self.target, self.plan, self.runs)
        desired = self.plan.desired
        drift = (
            drifts(self._source_repos, self.source, desired, self.runs)
            if desired is not None
            else {}
        )
        return [
            app_report(run, self.plan, uploaded, volume_items, drift.get(run.app))
            for run in self.runs
        ]
