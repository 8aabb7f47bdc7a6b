"""The Prometheus endpoints: a real VolumeBackup and VolumeRestore through the node agent, a real
Backup through the controller, each endpoint scraped over HTTP and its values checked against
what mover recorded (the snapshot's stats); and the Grafana dashboard queries only metrics that
exist."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from mover.storage.metrics import Metrics as StorageMetrics
from mover_k8s import api
from mover_k8s.metrics import ControllerMetrics, NodeMetrics, Server, metric_names
from mover_k8s.node.agent import NodeAgent

from .conftest import (
    SYSTEM,
    Env,
    backup_body,
    deploy_app,
    read_bytes,
    volume_path,
    wait_until,
    write_app_data,
)
from .test_agent import Feeder, volume_backup
from .test_capture import open_repo
from .test_cli import mover

MiB = 1 << 20
DASHBOARD = Path(__file__).resolve().parents[2] / "agent" / "chart" / "dashboards" / "mover.json"

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, metric: str, **labels: str) -> float:
    return samples[(metric, tuple(sorted(labels.items())))]


@contextmanager
def agent_with_metrics(env: Env) -> Iterator[tuple[NodeAgent, int]]:
    metrics = NodeMetrics()
    server = Server(metrics.registry, 0, "127.0.0.1")
    stop = threading.Event()
    agent = NodeAgent(
        env.kube, "node-a", SYSTEM, interval=0.05, progress_interval=0.0, threads=2, metrics=metrics
    )
    thread = threading.Thread(target=agent.run, args=(stop,), daemon=True)
    thread.start()
    try:
        yield agent, server.port
    finally:
        stop.set()
        thread.join(60)
        server.close()


def test_node_metrics_match_the_backup_and_restore(env: Env, tmp_path: Path) -> None:
    deploy_app(env.kube, "shop")  # claims bound to files: data-a is read, data-b written
    data = write_app_data(env.kube, "shop")["data-a"]  # a repeated block: deduplicated chunks
    volume = volume_path(env.kube, "shop", "data-a")
    env.kube.create(api.VOLUME_BACKUP, volume_backup("disk", volume))
    with agent_with_metrics(env) as (_, port):
        item = env.wait_phase(api.VOLUME_BACKUP, "disk")
        assert item["status"]["phase"] == "Completed", item["status"]
        repo = open_repo(env.repo_dir)
        try:
            stats = repo.find_snapshot(item["status"]["snapshot"]).stats
        finally:
            repo.close()
        # The queue is what a pass saw: a pass after the end sees nothing Running.
        running = ("mover_work_items", (("kind", "VolumeBackup"), ("phase", "Running")))

        def settled() -> Samples | None:
            samples = scrape(port)
            return samples if samples.get(running, 0) == 0 else None

        after_backup = wait_until(settled, what="a pass to see the item ended")
        env.kube.create(
            api.VOLUME_RESTORE,
            {
                "apiVersion": api.API_VERSION,
                "kind": "VolumeRestore",
                "metadata": {
                    "name": "disk-back",
                    "namespace": SYSTEM,
                    "labels": {api.NODE_LABEL: "node-a"},
                },
                "spec": {
                    "restore": "manual",
                    "repository": "default",
                    "node": "node-a",
                    "pvc": {"namespace": "shop", "name": "data-b"},
                    "snapshot": item["status"]["snapshot"],
                    "cancel": False,
                },
            },
        )
        restored = env.wait_phase(api.VOLUME_RESTORE, "disk-back")
        after = scrape(port)
    assert stats["reused_chunks"] > 0 and stats["new_chunks"] > 0
    for metric, key in (
        ("mover_backup_bytes_read_total", "bytes_read"),
        ("mover_backup_bytes_new_total", "new_bytes"),
        ("mover_backup_bytes_deduplicated_total", "reused_bytes"),
        ("mover_backup_bytes_uploaded_total", "stored_bytes"),
        ("mover_backup_chunks_new_total", "new_chunks"),
        ("mover_backup_chunks_deduplicated_total", "reused_chunks"),
    ):
        assert value(after_backup, metric) == stats[key], metric
    done = {"kind": "backup", "outcome": "Completed"}
    assert value(after_backup, "mover_volume_jobs_total", **done) == 1
    assert value(after_backup, "mover_volume_job_duration_seconds_count", **done) == 1
    # The agent wrote packs, an index and a snapshot through its storage stack.
    assert value(after_backup, "mover_storage_requests_total", op="write") >= 3
    assert value(after_backup, "mover_storage_bytes_total", op="write") >= stats["stored_bytes"]
    assert value(after_backup, "mover_storage_retries_total", op="write") == 0
    # The item ended: no throughput line is left for it, and the queue is empty.
    assert not any(name == "mover_volume_throughput_bytes_per_second" for name, _ in after_backup)

    assert restored["status"]["phase"] == "Completed", restored["status"]
    assert value(after, "mover_restore_bytes_written_total") == len(data)
    assert read_bytes(volume_path(env.kube, "shop", "data-b")) == data
    assert value(after, "mover_volume_jobs_total", kind="restore", outcome="Completed") == 1
    assert value(after, "mover_backup_bytes_read_total") == stats["bytes_read"]  # unchanged
    assert value(after, "mover_storage_requests_total", op="read") > 0


def test_failed_items_are_counted_by_outcome(env: Env, tmp_path: Path) -> None:
    env.kube.create(api.VOLUME_BACKUP, volume_backup("ghost", tmp_path / "no-such-volume"))
    with agent_with_metrics(env) as (_, port):
        item = env.wait_phase(api.VOLUME_BACKUP, "ghost")
        samples = scrape(port)
    assert item["status"]["phase"] == "Failed"
    assert value(samples, "mover_volume_jobs_total", kind="backup", outcome="Failed") == 1
    assert ("mover_volume_jobs_total", (("kind", "backup"), ("outcome", "Completed"))) not in (
        samples
    )


def test_controller_counts_backups_that_end(env: Env, tmp_path: Path) -> None:
    deploy_app(env.kube, "shop")
    write_app_data(env.kube, "shop")
    with env.running() as (controller, _):
        server = Server(controller.metrics.registry, 0, "127.0.0.1")
        try:
            env.kube.create(api.BACKUP, backup_body("counted", includedNamespaces=["shop"]))
            backup = env.wait_phase(api.BACKUP, "counted")
            env.kube.create(api.BACKUP, backup_body("broken", includedNamespaces=["ghost"]))
            env.wait_phase(api.BACKUP, "broken")

            def counted() -> Samples | None:
                samples = scrape(server.port)
                key = ("mover_backups_finished_total", (("outcome", "Failed"),))
                return samples if samples.get(key) == 1 else None

            samples: Samples = wait_until(counted, what="the controller to count both")
        finally:
            server.close()
    assert backup["status"]["phase"] == "Completed"
    assert value(samples, "mover_backups_finished_total", outcome="Completed") == 1
    assert value(samples, "mover_backup_duration_seconds_count", outcome="Completed") == 1
    assert value(samples, "mover_in_progress", kind="Backup") == 0


def test_queue_depths_drop_to_zero_when_a_phase_empties() -> None:
    metrics = NodeMetrics()
    metrics.set_queue({("VolumeBackup", "New"): 2, ("VolumeRestore", "Running"): 1})
    metrics.set_queue({("VolumeBackup", "Running"): 1})
    sample = metrics.registry.get_sample_value
    assert sample("mover_work_items", {"kind": "VolumeBackup", "phase": "New"}) == 0
    assert sample("mover_work_items", {"kind": "VolumeBackup", "phase": "Running"}) == 1
    assert sample("mover_work_items", {"kind": "VolumeRestore", "phase": "Running"}) == 0


def test_storage_counts_are_added_as_deltas() -> None:
    metrics = NodeMetrics()
    storage = StorageMetrics()
    meter = metrics.job("backup", "ns", "item")
    meter.storage = storage
    storage.count("write", requests=3, nbytes=100, retries=2)
    meter.sync_storage()
    storage.count("write", requests=1, retries=1)
    meter.sync_storage()
    meter.sync_storage()  # nothing new: nothing added
    meter.finish(api.COMPLETED)
    registry = metrics.registry
    assert registry.get_sample_value("mover_storage_retries_total", {"op": "write"}) == 3
    assert registry.get_sample_value("mover_storage_requests_total", {"op": "write"}) == 4
    assert registry.get_sample_value("mover_storage_bytes_total", {"op": "write"}) == 100


# -- the dashboard -----------------------------------------------------------------------------

_FUNCTIONS = {
    "sum", "rate", "irate", "increase", "histogram_quantile", "by", "without", "on", "ignoring",
    "avg", "max", "min", "count", "topk", "bottomk", "clamp_min", "clamp_max", "delta", "le",
    "or", "and", "unless", "offset", "group_left", "group_right", "abs", "time", "vector",
}  # fmt: skip


def expressions(dashboard: dict[str, object]) -> list[str]:
    found: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("expr"), str):
                found.append(node["expr"])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(dashboard)
    return found


def names_in(expr: str) -> set[str]:
    """Metric names of a PromQL expression: identifiers that are not functions, keywords,
    label names (inside braces or by/without lists) or durations."""
    bare = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    bare = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", bare)  # grouping labels
    bare = re.sub(r"\[[^\]]*\]", "", bare)  # range durations
    bare = re.sub(r'"[^"]*"', "", bare)
    tokens = set(re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", bare))
    return {t for t in tokens if t not in _FUNCTIONS and not t.startswith("$")}


def test_dashboard_queries_only_exported_metrics() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exported = metric_names(NodeMetrics().registry) | metric_names(ControllerMetrics().registry)
    exprs = expressions(dashboard)
    assert len(exprs) >= 8
    used: set[str] = set()
    for expr in exprs:
        names = names_in(expr)
        assert names, expr
        assert names <= exported, (expr, names - exported)
        used |= names
    # The checker itself: an unknown name is caught.
    assert not names_in("rate(mover_no_such_metric_total[5m])") <= exported
    for wanted in (
        "mover_backup_bytes_read_total",
        "mover_backup_chunks_deduplicated_total",
        "mover_storage_retries_total",
        "mover_backup_duration_seconds_bucket",
        "mover_work_items",
        "mover_in_progress",
        "mover_volume_throughput_bytes_per_second",
    ):
        assert wanted in used, wanted


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_agent_commands_serve_metrics(env: Env, tmp_path: Path) -> None:
    deploy_app(env.kube, "shop")
    write_app_data(env.kube, "shop")
    kubeconfig = env.served.kubeconfig(tmp_path / "kubeconfig")
    environ = dict(os.environ, KUBECONFIG=str(kubeconfig), NODE_NAME="node-a")
    ports = [free_port(), free_port()]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "mover", "agent", *args, "--interval", "0.1"],
            env=environ,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for args in (
            ["controller", "--metrics-port", str(ports[0])],
            ["node", "--no-snapshots", "--metrics-port", str(ports[1])],
        )
    ]
    try:
        env.kube.create(api.BACKUP, backup_body("served", includedNamespaces=["shop"]))
        backup = env.wait_phase(api.BACKUP, "served", timeout=60)
        assert backup["status"]["phase"] == "Completed", backup["status"]

        def ended() -> Samples | None:
            samples = scrape(ports[0])
            key = ("mover_backups_finished_total", (("outcome", "Completed"),))
            return samples if samples.get(key) == 1 else None

        controller = wait_until(ended, what="the controller's count")
        node = scrape(ports[1])
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        outputs = [proc.communicate(timeout=30) for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], outputs
    assert value(controller, "mover_in_progress", kind="Backup") == 0
    read = sum(v["size"] for v in backup["status"]["volumes"])
    assert value(node, "mover_backup_bytes_read_total") == read
    assert value(node, "mover_volume_jobs_total", kind="backup", outcome="Completed") == 2
    assert f"metrics on port {ports[1]}" in outputs[1][1]


def test_metrics_port_taken_is_one_line(env: Env, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = mover(env, tmp_path, "agent", "node", "--node", "n", "--metrics-port", str(port))
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith(f"mover: error: --metrics-port {port}: ")


def test_counters_move_while_a_backup_runs(env: Env, tmp_path: Path) -> None:
    """The volume is a FIFO: the test holds the data path after the first bytes, scrapes, then
    lets the rest through."""
    fifo = tmp_path / "volume.fifo"
    os.mkfifo(fifo)
    data = random.Random(5).randbytes(48 * MiB)
    feeder = Feeder(fifo, data, first=24 * MiB)
    env.kube.create(api.VOLUME_BACKUP, volume_backup("held", fifo))
    with agent_with_metrics(env) as (_, port):

        def moving() -> Samples | None:
            samples = scrape(port)
            return samples if samples[("mover_backup_bytes_read_total", ())] > 0 else None

        during = wait_until(moving, what="bytes read before the rest of the volume arrives")
        feeder.release()
        item = env.wait_phase(api.VOLUME_BACKUP, "held")
        after = scrape(port)
    assert item["status"]["phase"] == "Completed", item["status"]
    assert 0 < value(during, "mover_backup_bytes_read_total") < len(data)
    labels = {"kind": "backup", "namespace": SYSTEM, "name": "held"}
    assert value(during, "mover_volume_throughput_bytes_per_second", **labels) > 0
    assert not any(metric == "mover_volume_jobs_total" for metric, _ in during)  # none ended
    assert value(after, "mover_backup_bytes_read_total") == len(data)
