"""Prometheus metrics of the controller and the node agents (prometheus_client).

Each component owns its own registry (not the library's global one), so several agents or
controllers in one process (the tests) never share counters, and the endpoint serves only
mover's metrics. `serve` starts the HTTP endpoint (`/metrics`) on a daemon thread.

The node agent counts what mover's data path reports: the backup's progress callback sees a
cumulative BackupStats, and `JobMeter.backup_progress` adds the deltas since the previous call,
so the counters move while a multi-TiB volume is read, not only when it ends; the final stats
(the snapshot's) settle the last difference. Storage requests, errors and retries come from the
Metrics of the repository's storage stack (mover.storage.metrics: the retrying layer counts
retries), taken as deltas in the same way, with the throughput gauge, at most once a second
(they cost a lock and a copy; the byte counters cost ~2 us a call, once per chunk).

The controller counts Backups and Restores that end while it leads (seen in one pass not
ended, in a later pass ended: a restarted controller does not count again what ended before
it started) and how many are in progress.
"""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import start_http_server

from mover.api import STORAGE_METRIC_FIELDS, BackupStats, StorageMetrics

DEFAULT_CONTROLLER_PORT = 9480
DEFAULT_NODE_PORT = 9481
SYNC_SECONDS = 1.0  # how often a running item's throughput and storage counts are refreshed

# Seconds: a small config map's backup takes a second, a TiB volume hours.
DURATION_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400)

_STORAGE_FIELDS = {
    "requests": ("mover_storage_requests", "Storage requests (each attempt), by operation."),
    "bytes": ("mover_storage_bytes", "Bytes sent or received by storage requests, by operation."),
    "errors": ("mover_storage_errors", "Storage requests that failed, by operation."),
    "retries": ("mover_storage_retries", "Storage requests retried after a failure, by operation."),
}
assert set(_STORAGE_FIELDS) == set(STORAGE_METRIC_FIELDS)


class NodeMetrics:
    """What a node agent exports."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.bytes_read = Counter(
            "mover_backup_bytes_read", "Bytes read from volumes being backed up.", registry=r
        )
        self.bytes_new = Counter(
            "mover_backup_bytes_new",
            "Bytes of chunks not yet in the repository (before compression).",
            registry=r,
        )
        self.bytes_reused = Counter(
            "mover_backup_bytes_deduplicated",
            "Bytes of chunks the repository had already (deduplicated).",
            registry=r,
        )
        self.bytes_uploaded = Counter(
            "mover_backup_bytes_uploaded",
            "Bytes of new chunks as stored: compressed and encrypted, packed for upload.",
            registry=r,
        )
        self.chunks_new = Counter("mover_backup_chunks_new", "New chunks stored.", registry=r)
        self.chunks_deduplicated = Counter(
            "mover_backup_chunks_deduplicated",
            "Chunks the repository had already (not stored again).",
            registry=r,
        )
        self.bytes_restored = Counter(
            "mover_restore_bytes_written",
            "Bytes written into volumes being restored (holes included).",
            registry=r,
        )
        self.throughput = Gauge(
            "mover_volume_throughput_bytes_per_second",
            "Bytes per second of each running work item since it started.",
            ["kind", "namespace", "name"],
            registry=r,
        )
        self.jobs = Counter(
            "mover_volume_jobs",
            "Work items ended by this agent, by kind (backup, restore) and outcome (phase).",
            ["kind", "outcome"],
            registry=r,
        )
        self.job_seconds = Histogram(
            "mover_volume_job_duration_seconds",
            "How long work items ran, by kind and outcome.",
            ["kind", "outcome"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.work_items = Gauge(
            "mover_work_items",
            "Work items of this node not ended, by kind and phase (the queue).",
            ["kind", "phase"],
            registry=r,
        )
        self.storage = {
            name: Counter(metric, doc, ["op"], registry=r)
            for name, (metric, doc) in _STORAGE_FIELDS.items()
        }
        self._queue_labels: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def set_queue(self, depths: dict[tuple[str, str], int]) -> None:
        """Work items per (kind, phase) from one pass's listing; phases now empty read 0."""
        with self._lock:
            for labels in self._queue_labels | set(depths):
                self.work_items.labels(*labels).set(depths.get(labels, 0))
            self._queue_labels |= set(depths)

    def job(self, kind: str, namespace: str, name: str) -> JobMeter:
        return JobMeter(self, kind, namespace, name)


@dataclass
class JobMeter:
    """One work item's contribution: deltas of cumulative stats, its throughput, its end."""

    metrics: NodeMetrics
    kind: str  # "backup" or "restore"
    namespace: str
    name: str
    started: float = field(default_factory=time.monotonic)
    _backup: dict[str, int] = field(default_factory=dict)
    _restored: int = 0
    _storage: dict[str, dict[str, int]] = field(default_factory=dict)
    storage: StorageMetrics | None = None
    _synced: float = 0.0

    def __post_init__(self) -> None:
        m = self.metrics
        self._counters = (
            ("bytes_read", m.bytes_read),
            ("new_bytes", m.bytes_new),
            ("reused_bytes", m.bytes_reused),
            ("stored_bytes", m.bytes_uploaded),
            ("new_chunks", m.chunks_new),
            ("reused_chunks", m.chunks_deduplicated),
        )

    def _rate(self, done: int, force: bool = False) -> None:
        """The throughput gauge and the storage counters, at most every SYNC_SECONDS: they cost
        a lock and a copy, and the data path calls back once per chunk."""
        at = time.monotonic()
        if not force and at - self._synced < SYNC_SECONDS:
            return
        self._synced = at
        elapsed = max(at - self.started, 1e-6)
        self.metrics.throughput.labels(self.kind, self.namespace, self.name).set(done / elapsed)
        self.sync_storage()

    def backup_progress(self, stats: BackupStats | dict[str, Any], done: int) -> None:
        """Called with every progress call of run_backup (cumulative stats: adds the deltas),
        and with the snapshot's stats at the end (`dict`: settles the rest)."""
        final = isinstance(stats, dict)
        seen = self._backup
        for key, counter in self._counters:
            value = int(stats.get(key, 0)) if isinstance(stats, dict) else getattr(stats, key)
            delta = value - seen.get(key, 0)
            if delta > 0:
                counter.inc(delta)
                seen[key] = value
        self._rate(done, force=final)

    def restore_progress(self, written: int, final: bool = False) -> None:
        if written > self._restored:
            self.metrics.bytes_restored.inc(written - self._restored)
            self._restored = written
        self._rate(written, force=final)

    def sync_storage(self) -> None:
        """Add what the repository's storage stack counted since the last call."""
        if self.storage is None:
            return
        for op, row in self.storage.as_dict().items():
            seen = self._storage.setdefault(op, dict.fromkeys(STORAGE_METRIC_FIELDS, 0))
            for name, value in row.items():
                if name not in self.metrics.storage:
                    continue
                child = self.metrics.storage[name].labels(op)  # a series from 0, not absent
                delta = value - seen.get(name, 0)
                if delta > 0:
                    child.inc(delta)
                    seen[name] = value

    def finish(self, outcome: str) -> None:
        self.sync_storage()
        m = self.metrics
        m.jobs.labels(self.kind, outcome).inc()
        m.job_seconds.labels(self.kind, outcome).observe(time.monotonic() - self.started)
        with contextlib.suppress(KeyError):  # it never reported progress
            m.throughput.remove(self.kind, self.namespace, self.name)


class ControllerMetrics:
    """What the controller exports."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.finished = {
            kind: Counter(
                f"mover_{kind.lower()}s_finished",
                f"{kind}s that ended while this controller led, by outcome (phase).",
                ["outcome"],
                registry=r,
            )
            for kind in ("Backup", "Restore")
        }
        self.seconds = {
            kind: Histogram(
                f"mover_{kind.lower()}_duration_seconds",
                f"From a {kind}'s creation to its end, by outcome.",
                ["outcome"],
                buckets=DURATION_BUCKETS,
                registry=r,
            )
            for kind in ("Backup", "Restore")
        }
        self.in_progress = Gauge(
            "mover_in_progress",
            "Backups and Restores not ended (the controller's queue), by kind.",
            ["kind"],
            registry=r,
        )
        self._running: dict[str, set[str]] = {"Backup": set(), "Restore": set()}

    def observe(
        self, kind: str, objects: list[dict[str, Any]], done_phases: frozenset[str]
    ) -> None:
        """One pass's listing of a kind: count what ended since the previous pass."""
        running: set[str] = set()
        for obj in objects:
            meta, status = obj.get("metadata") or {}, obj.get("status") or {}
            uid = str(meta.get("uid") or meta.get("name"))
            phase = str(status.get("phase") or "")
            if phase not in done_phases:
                running.add(uid)
            elif uid in self._running[kind]:
                self.finished[kind].labels(phase).inc()
                seconds = _seconds_between(
                    meta.get("creationTimestamp"), status.get("completionTimestamp")
                )
                if seconds is not None:
                    self.seconds[kind].labels(phase).observe(seconds)
        self._running[kind] = running
        self.in_progress.labels(kind).set(len(running))


def _seconds_between(start: Any, end: Any) -> float | None:
    from datetime import datetime

    try:
        a = datetime.fromisoformat(str(start).replace("Z", "+00:00"))
        b = datetime.fromisoformat(str(end).replace("Z", "+00:00"))
    except ValueError:
        return None
    return max((b - a).total_seconds(), 0.0)


class Server:
    """The /metrics endpoint on a daemon thread."""

    def __init__(self, registry: CollectorRegistry, port: int, addr: str = "0.0.0.0") -> None:
        self._httpd, self._thread = start_http_server(port, addr, registry=registry)
        self.port: int = int(self._httpd.server_port)

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(10)


def metric_names(registry: CollectorRegistry) -> set[str]:
    """Every sample name the registry can export (counters' `_total`, histograms' `_bucket`...),
    for checking that a dashboard queries only what exists."""
    names: set[str] = set()
    for family in registry.collect():
        names.add(family.name)
        for sample in family.samples:
            names.add(sample.name)
        if family.type == "counter":
            names.add(f"{family.name}_total")
        if family.type == "histogram":
            names.update(f"{family.name}{s}" for s in ("_bucket", "_sum", "_count"))
    return names
