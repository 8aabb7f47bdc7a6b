"""The node agent: runs the VolumeBackups and VolumeRestores assigned to its node.

Each pass: renew this node's Lease (the controller assigns work only to nodes that have one),
list the work items labelled with this node, start the new ones on worker threads (a bounded
number at once), pass `spec.cancel` on to running jobs, and pick up items left `Running` by an
earlier agent of this node (it restarted or died): they run again. A file or block device
resumes from mover's last backup checkpoint (mover.checkpoint: every GiB by default, verified
against the source before it is trusted); otherwise the data already stored deduplicates.

A job writes its progress (bytes done and total, rate, ETA) into the item's status at most every
`progress_interval` seconds, so a multi-TiB volume costs a few API writes a minute, not one per
chunk.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, BinaryIO, TypedDict, Unpack

from mover import api as mover_api
from mover.api import BackupOptions, BackupStats, RestoreOptions, RestoreStats
from mover.errors import IntegrityError, MoverError
from mover_k8s import agent_leases, api, store
from mover_k8s.conditions import set_condition_of
from mover_k8s.errors import Cancelled, KubeError, NotFound, SpecError
from mover_k8s.k8s.cache import Cache
from mover_k8s.k8s.client import Kube, Obj, ResourceType
from mover_k8s.metrics import JobMeter, NodeMetrics
from mover_k8s.node import changed_blocks
from mover_k8s.node.changed_blocks import ChangedBlocks
from mover_k8s.node.delta import DeltaStats, restore_delta
from mover_k8s.node.exposer import Exposed, Exposer, PathExposer, target_pv
from mover_k8s.repo_access import Repositories
from mover_k8s.timestamps import now
from mover_k8s.views import Meta, WorkItem
from mover_k8s.volumes import local_path
from mover_k8s.wakeup import Wakeup

log = logging.getLogger("mover.k8s.agent")
# On a Restore: restore its volumes by difference (mover_k8s.node.delta): fetch only the chunks
# the claim's volume does not hold already. `mover app migrate` sets it on the restores into
# volumes it seeded.
DELTA_ANNOTATION = f"{api.GROUP}/volume-delta"


def _recorded_snapshot(repo: mover_api.Repository, spec: Obj) -> mover_api.Snapshot:
    """The snapshot a VolumeRestore names, checked against the root its Backup recorded."""
    snapshot = repo.find_snapshot(spec["snapshot"])
    if spec.get("sourceTree") and snapshot.tree != spec["sourceTree"]:
        raise IntegrityError(
            f"snapshot {snapshot.id[:8]} has root {snapshot.tree[:16]}, the backup "
            f"recorded {spec['sourceTree'][:16]}"
        )
    return snapshot


class _Interrupted(Exception):
    """The agent is shutting down: the item stays Running for the next agent of this node."""


@dataclass
class Job:
    rt: ResourceType
    namespace: str
    name: str
    cancel: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None


class Progress:
    """Rate and ETA from bytes done, throttled status writes."""

    def __init__(self, total: int, interval: float, write: Any) -> None:
        self.total = total
        self.interval = interval
        self.write = write
        self.started = time.monotonic()
        self.last = 0.0

    def report(self, done: int, force: bool = False) -> None:
        at = time.monotonic()
        if not force and at - self.last < self.interval:
            return
        self.last = at
        elapsed = max(at - self.started, 1e-6)
        rate = done / elapsed
        eta = int((self.total - done) / rate) if rate > 0 and self.total > done else 0
        self.write(
            {
                "bytesDone": done,
                "bytesTotal": self.total,
                "bytesPerSecond": int(rate),
                "etaSeconds": eta,
                "updated": now(),
            }
        )


@dataclass(frozen=True)
class AgentSettings:
    """How a node agent runs (`mover agent node`'s options)."""

    watch_namespace: str | None = None  # None: work items in every namespace
    workers: int = 1  # volume jobs this node runs at once
    interval: float = 2.0  # seconds between passes
    progress_interval: float = 2.0  # seconds between progress writes into an item's status
    threads: int | None = None  # the data path's threads per job (None: mover's default)
    watch: bool = False  # watches wake the loop, and passes read the copy they keep


class AgentOptions(TypedDict, total=False):
    """AgentSettings' fields, as NodeAgent's keywords (checked by mypy: PEP 692)."""

    watch_namespace: str | None
    workers: int
    interval: float
    progress_interval: float
    threads: int | None
    watch: bool


class NodeAgent:
    def __init__(
        self,
        kube: Kube,
        node: str,
        namespace: str,
        exposers: dict[str, Exposer] | None = None,
        metrics: NodeMetrics | None = None,
        **options: Unpack[AgentOptions],
    ) -> None:
        self.settings = AgentSettings(**options)
        # With watches, the passes read this node's work items from a copy the watches keep.
        self.cache = Cache() if self.settings.watch else None
        kube = kube.cached(self.cache) if self.cache is not None else kube
        self.kube = kube
        self.node = node
        self.metrics = metrics or NodeMetrics()
        self.namespace = namespace  # where this agent's Lease lives
        self.exposers: dict[str, Exposer] = exposers or {"path": PathExposer(kube)}
        self.identity = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.repos = Repositories(kube)
        self.jobs: dict[tuple[str, str, str], Job] = {}
        self.shutting_down = threading.Event()

    # -- the loop --

    def run(self, stop: threading.Event) -> None:
        log.info("node agent %s on node %s started", self.identity, self.node)
        wakeup = Wakeup(
            self.kube,
            (api.VOLUME_BACKUP, api.VOLUME_RESTORE),
            self.settings.watch_namespace,
            f"{api.NODE_LABEL}={self.node}",
            cache=self.cache,
        )
        with contextlib.ExitStack() as stack:
            wait = wakeup.wait if self.settings.watch else stop.wait
            if self.settings.watch:
                stack.enter_context(wakeup.running(stop))
            try:
                while not stop.is_set():
                    try:
                        self.run_once()
                    except KubeError as exc:  # the API is away a moment: try next pass
                        log.warning("agent pass failed: %s", exc)
                    wait(self.settings.interval)
            finally:
                self.shutdown()

    def shutdown(self) -> None:
        """Stop the jobs where they are (their items stay Running for the next agent of this
        node) and give up the Lease, so no new work is assigned here meanwhile."""
        self.shutting_down.set()
        for job in list(self.jobs.values()):
            if job.thread is not None:
                job.thread.join()
        self.jobs.clear()
        try:
            agent_leases.release(self.kube, self.namespace, self.node)
        except KubeError as exc:  # it expires by itself
            log.warning("could not release the lease of %s: %s", self.node, exc)

    def run_once(self) -> None:
        agent_leases.renew(self.kube, self.namespace, self.node, self.identity)
        for key in [k for k, j in self.jobs.items() if j.thread and not j.thread.is_alive()]:
            del self.jobs[key]
        selector = f"{api.NODE_LABEL}={self.node}"
        depths: dict[tuple[str, str], int] = {}
        for rt in (api.VOLUME_BACKUP, api.VOLUME_RESTORE):
            for item in self.kube.list(rt, self.settings.watch_namespace, label_selector=selector):
                phase = WorkItem.of(item).phase or api.NEW
                if phase not in api.DONE_PHASES:
                    depths[rt.kind, phase] = depths.get((rt.kind, phase), 0) + 1
                try:
                    self._consider(rt, item)
                except KubeError:
                    raise  # the API is away: this pass ends, the next one retries
                except Exception:  # one malformed item must not stop the node's other work
                    log.exception("%s %s cannot be run", rt.kind, item["metadata"].get("name"))
        self.metrics.set_queue(depths)

    def _consider(self, rt: ResourceType, item: Obj) -> None:
        meta, spec = item["metadata"], item.get("spec") or {}
        status = item.get("status") or {}
        if spec.get("node") != self.node or status.get("phase") in api.DONE_PHASES:
            return
        key = (rt.plural, meta["namespace"], meta["name"])
        job = self.jobs.get(key)
        if job is not None:
            if spec.get("cancel"):
                job.cancel.set()
            return
        if spec.get("cancel"):
            self._set_status(
                rt,
                item,
                {
                    "phase": api.CANCELLED,
                    "completionTimestamp": now(),
                    "message": "cancelled before it ran",
                },
                "Cancelled",
                "cancelled before it ran",
                False,
            )
            return
        if len(self.jobs) >= self.settings.workers:
            return
        job = Job(rt, meta["namespace"], meta["name"])
        job.thread = threading.Thread(
            target=self._run_job, args=(job, item), name=f"mover-job-{meta['name']}", daemon=True
        )
        self.jobs[key] = job
        job.thread.start()

    # -- status --

    def _set_status(
        self,
        rt: ResourceType,
        item: Obj,
        status: Obj,
        reason: str,
        message: str,
        ok: bool | None,
    ) -> None:
        meta = item["metadata"]
        status["conditions"] = set_condition_of(item, "Succeeded", ok, reason, message)
        status["observedGeneration"] = meta.get("generation", 1)
        item.setdefault("status", {}).update(status)
        self.kube.patch_status(rt, meta["namespace"], meta["name"], status)

    # -- a job --

    def _run_job(self, job: Job, item: Obj) -> None:
        rt = job.rt
        attempts = WorkItem.of(item).attempts + 1
        exposed: Exposed | None = None
        meter = self.metrics.job(
            "backup" if rt is api.VOLUME_BACKUP else "restore", job.namespace, job.name
        )
        outcome = api.FAILED
        try:
            self._set_status(
                rt,
                item,
                {
                    "phase": api.RUNNING,
                    "agent": self.identity,
                    "attempts": attempts,
                    "startTimestamp": now(),
                    "message": "" if attempts == 1 else f"resumed (attempt {attempts})",
                },
                "Running",
                f"running on {self.node} (attempt {attempts})",
                None,
            )
            if rt is api.VOLUME_BACKUP:
                exposed = self._exposer_for(item, source=True).expose_source(item)
                result = self._backup(job, item, exposed.path, meter)
            else:
                exposed = self._exposer_for(item, source=False).expose_target(item)
                result = self._restore(job, item, exposed.path, meter)
            result.update(phase=api.COMPLETED, completionTimestamp=now(), message="")
            self._set_status(rt, item, result, "Completed", "done", True)
            outcome = api.COMPLETED
        except _Interrupted:
            log.info("%s %s interrupted by shutdown; left Running", rt.kind, job.name)
            outcome = "Interrupted"
        except Cancelled as exc:
            outcome = api.CANCELLED
            self._finish_failed(rt, item, api.CANCELLED, "Cancelled", str(exc))
        except SpecError as exc:
            self._finish_failed(rt, item, api.FAILED, exc.reason, str(exc))
        except KubeError as exc:
            log.warning("%s %s: %s", rt.kind, job.name, exc)
            self._finish_failed(rt, item, api.FAILED, "KubernetesAPIError", str(exc))
        except MoverError as exc:
            self._finish_failed(rt, item, api.FAILED, type(exc).__name__, str(exc))
        finally:
            meter.finish(outcome)
            if exposed is not None:
                try:
                    exposed.release()
                except KubeError as exc:
                    log.warning("could not release %s: %s", exposed.path, exc)

    def _finish_failed(
        self, rt: ResourceType, item: Obj, phase: str, reason: str, msg: str
    ) -> None:
        try:
            self._set_status(
                rt,
                item,
                {"phase": phase, "completionTimestamp": now(), "message": msg},
                reason,
                msg,
                False,
            )
        except NotFound:
            pass  # the item was deleted meanwhile
        except KubeError as exc:  # left Running: the next agent pass runs it again
            log.warning("cannot record the end of %s: %s", item["metadata"]["name"], exc)

    def _exposer_for(self, item: Obj, source: bool) -> Exposer:
        if source:
            kind = "snapshot" if WorkItem.of(item).source_snapshot else "path"
        else:
            # A PV with a path on this node is written through it; anything else is attached.
            kind = "path" if local_path(target_pv(self.kube, item)) else "snapshot"
        if kind not in self.exposers:
            raise SpecError(
                "NoExposer", f"this agent has no {kind} exposer (start it with one enabled)"
            )
        return self.exposers[kind]

    def _checker(self, job: Job, progress: Progress) -> Callable[[int], None]:
        """Called by the data path for every chunk with the bytes done so far: stops the job
        when it was cancelled or the agent stops, and reports progress (throttled)."""

        def check(done: int) -> None:
            if self.shutting_down.is_set():
                raise _Interrupted()
            if job.cancel.is_set():
                raise Cancelled(f"cancelled after {done} bytes; nothing stored")
            progress.report(done)

        return check

    def _progress_writer(self, job: Job) -> Any:
        def write(progress: Obj) -> None:
            try:
                current = self.kube.patch_status(
                    job.rt, job.namespace, job.name, {"progress": progress}
                )
            except KubeError as exc:  # progress is best effort; the job goes on
                log.warning("progress of %s: %s", job.name, exc)
                return
            if WorkItem.of(current).cancel:
                job.cancel.set()

        return write

    def _backup(self, job: Job, item: Obj, path: str, meter: JobMeter) -> Obj:
        spec = item["spec"]
        repo = self.repos.open(job.namespace, spec["repository"])
        meter.storage = mover_api.storage_metrics(repo)
        try:
            with open(path, "rb") as source:
                total = mover_api.source_size(source) or 0  # 0: a stream, size unknown
                progress = Progress(
                    total, self.settings.progress_interval, self._progress_writer(job)
                )
                progress.report(0, force=True)
                check = self._checker(job, progress)
                name = store.source_name(
                    job.namespace,
                    spec.get("backup", ""),
                    f"volume/{spec['pvc']['namespace']}/{spec['pvc']['name']}",
                )

                def on_progress(stats: BackupStats) -> None:
                    # Bytes through the whole pipeline, not just read (reads run ahead), plus
                    # what a resumed run skipped (mover's checkpoints, after an interruption).
                    done = (
                        stats.resumed_from + stats.new_bytes + stats.reused_bytes + stats.zero_bytes
                    )
                    meter.backup_progress(stats, done)
                    check(done)

                blocks = ChangedBlocks()
                if total:  # a file or device: what changed, or what holds data, may be known
                    blocks = changed_blocks.prepare(self.kube, self.namespace, repo, item, total)
                options = BackupOptions(
                    threads=self.settings.threads,
                    progress=on_progress,
                    notify=lambda note: log.info("%s: %s", job.name, note),
                )
                try:
                    snapshot = self._store(repo, source, name, options, blocks)
                finally:
                    blocks.close()
                # The snapshot's stats settle what came after the last progress call.
                meter.backup_progress(snapshot.stats, snapshot.size)
                if not total:  # a stream: its size is known once it has all been read
                    progress.total = total = snapshot.size
                progress.report(total, force=True)
        except OSError as exc:
            raise SpecError("VolumeUnreadable", f"cannot read {path}: {exc.strerror}") from None
        finally:
            repo.close()
        result: Obj = {"snapshot": snapshot.id, "tree": snapshot.tree}
        if blocks.status:
            result["changedBlocks"] = blocks.status
        return result

    def _store(
        self,
        repo: mover_api.Repository,
        source: BinaryIO,
        name: str,
        options: BackupOptions,
        blocks: ChangedBlocks,
    ) -> mover_api.Snapshot:
        """Back up `source` reading what `blocks` says; when the backup finds the change list
        wrong (a range it left out differs from the parent), read it all again instead: a
        changed-block list never makes a wrong snapshot."""
        chosen = dataclasses.replace(options, changed=blocks.changed, allocated=blocks.allocated)
        try:
            return mover_api.backup(repo, source, name, options=chosen)
        except mover_api.ChangeListWrong as exc:
            log.warning("%s: the changed-block list was wrong, reading it all: %s", name, exc)
            blocks.refused(f"the service's list left out a change ({exc}); read in full")
        source.seek(0)
        return mover_api.backup(repo, source, name, options=options)

    def _by_difference(self, job: Job, item: Obj) -> bool:
        """Whether the item's Restore asks for a restore by difference (DELTA_ANNOTATION)."""
        name = WorkItem.of(item).restore
        restore = self.kube.find(api.RESTORE, job.namespace, name) if name else None
        annotations = Meta.of(restore).annotations
        return str(annotations.get(DELTA_ANNOTATION, "")).lower() == "true"

    def _restore(self, job: Job, item: Obj, path: str, meter: JobMeter) -> Obj:
        spec = item["spec"]
        if self._by_difference(job, item):
            return self._restore_delta(job, item, path, meter)
        repo = self.repos.open(job.namespace, spec["repository"])
        meter.storage = mover_api.storage_metrics(repo)
        try:
            snapshot = _recorded_snapshot(repo, spec)
            progress = Progress(
                snapshot.size, self.settings.progress_interval, self._progress_writer(job)
            )
            progress.report(0, force=True)
            check = self._checker(job, progress)

            def on_progress(stats: RestoreStats) -> None:
                meter.restore_progress(stats.bytes_written + stats.hole_bytes)
                check(stats.bytes_written + stats.hole_bytes)

            options = RestoreOptions(
                force=True, threads=self.settings.threads, progress=on_progress
            )
            stats = mover_api.restore(repo, snapshot, path, options=options)
            meter.restore_progress(stats.bytes_written + stats.hole_bytes, final=True)
            progress.report(snapshot.size, force=True)
        finally:
            repo.close()
        return {"bytesWritten": stats.bytes_written + stats.hole_bytes}

    def _restore_delta(self, job: Job, item: Obj, path: str, meter: JobMeter) -> Obj:
        """The volume made to hold the snapshot, fetching only the chunks it lacks."""
        spec = item["spec"]
        repo = self.repos.open(job.namespace, spec["repository"])
        meter.storage = mover_api.storage_metrics(repo)
        try:
            snapshot = _recorded_snapshot(repo, spec)
            progress = Progress(
                snapshot.size, self.settings.progress_interval, self._progress_writer(job)
            )
            progress.report(0, force=True)
            check = self._checker(job, progress)

            def on_progress(stats: DeltaStats) -> None:
                meter.restore_progress(stats.bytes_written)
                check(stats.bytes_done)

            stats = restore_delta(
                repo, snapshot, path, threads=self.settings.threads, progress=on_progress
            )
            meter.restore_progress(stats.bytes_written, final=True)
            progress.report(snapshot.size, force=True)
        finally:
            repo.close()
        return {
            "bytesWritten": stats.bytes_written,
            "bytesFetched": stats.bytes_fetched,
            "bytesUnchanged": stats.bytes_unchanged,
        }
