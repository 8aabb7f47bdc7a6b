"""The node agent on its own: work items of its node, progress in status, cancellation, and
carrying on after its own restart. Volumes are read through FIFOs where a test must hold the
data path at a known point (the agent reads a FIFO like any file; the test decides when bytes
arrive), so nothing depends on timing."""

from __future__ import annotations

import os
import random
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mover.pipeline.restore import run_restore
from mover_k8s import agent_leases, api, store
from mover_k8s.node.agent import NodeAgent

from .conftest import (
    NODE,
    SYSTEM,
    Env,
    Obj,
    backup_body,
    deploy_app,
    read_bytes,
    restore_body,
    volume_path,
    wait_until,
    write_app_data,
)
from .test_capture import open_repo

MiB = 1 << 20


def volume_backup(name: str, path: Path, node: str = NODE) -> Obj:
    return {
        "apiVersion": api.API_VERSION,
        "kind": "VolumeBackup",
        "metadata": {"name": name, "namespace": SYSTEM, "labels": {api.NODE_LABEL: node}},
        "spec": {
            "backup": "manual",
            "repository": "default",
            "node": node,
            "pvc": {"namespace": "shop", "name": name},
            "source": {"path": str(path)},
            "cancel": False,
        },
    }


@contextmanager
def agent_running(env: Env, node: str = NODE) -> Iterator[NodeAgent]:
    stop = threading.Event()
    agent = NodeAgent(env.kube, node, SYSTEM, interval=0.05, progress_interval=0.0, threads=2)
    thread = threading.Thread(target=agent.run, args=(stop,), daemon=True)
    thread.start()
    try:
        yield agent
    finally:
        stop.set()
        thread.join(60)
        assert not thread.is_alive()


class Feeder:
    """Writes `data` into a FIFO: `first` bytes at once, the rest after `release()`."""

    def __init__(self, fifo: Path, data: bytes, first: int) -> None:
        self.fifo, self.data, self.first = fifo, data, first
        self.go = threading.Event()
        self.broken = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            with open(self.fifo, "wb") as f:  # blocks until the agent opens it
                f.write(self.data[: self.first])
                f.flush()
                self.go.wait(60)
                for at in range(self.first, len(self.data), 1 << 20):
                    f.write(self.data[at : at + (1 << 20)])
        except BrokenPipeError:
            self.broken = True  # the reader stopped: what the test wanted

    def release(self) -> None:
        self.go.set()
        self.thread.join(60)
        assert not self.thread.is_alive()


def phase_of(env: Env, rt: api.ResourceType, name: str) -> str:
    return str((env.kube.get(rt, SYSTEM, name).get("status") or {}).get("phase") or "")


def test_progress_is_written_while_a_volume_is_backed_up(env: Env, tmp_path: Path) -> None:
    volume = tmp_path / "disk.img"
    data = random.Random(7).randbytes(20 * MiB)
    volume.write_bytes(data)
    env.kube.create(api.VOLUME_BACKUP, volume_backup("disk", volume))
    with agent_running(env):
        item = env.wait_phase(api.VOLUME_BACKUP, "disk")
    status = item["status"]
    assert status["phase"] == "Completed" and status["attempts"] == 1
    assert status["progress"]["bytesDone"] == status["progress"]["bytesTotal"] == len(data)
    assert status["progress"]["bytesPerSecond"] > 0 and status["progress"]["etaSeconds"] == 0
    key = ("mover.dev/v1alpha1/volumebackups", SYSTEM, "disk")
    done = [
        v["status"]["progress"]["bytesDone"]
        for v in env.served.cluster.objects[key].history
        if v is not None and (v.get("status") or {}).get("progress")
    ]
    assert done[0] == 0 and done[-1] == len(data) and any(0 < d < len(data) for d in done)
    assert done == sorted(done)
    repo = open_repo(env.repo_dir)
    try:
        snapshot = repo.find_snapshot(status["snapshot"])
        assert snapshot.tree == status["tree"]
        assert snapshot.source == store.source_name(SYSTEM, "manual", "volume/shop/disk")
        run_restore(repo, snapshot, str(tmp_path / "back.img"))
    finally:
        repo.close()
    assert read_bytes(tmp_path / "back.img") == data


def test_cancel_stops_a_running_backup_and_stores_nothing(env: Env, tmp_path: Path) -> None:
    fifo = tmp_path / "volume.fifo"
    os.mkfifo(fifo)
    feeder = Feeder(fifo, random.Random(1).randbytes(64 * MiB), first=4 * MiB)
    env.kube.create(api.VOLUME_BACKUP, volume_backup("slow", fifo))
    with agent_running(env) as agent:
        wait_until(lambda: phase_of(env, api.VOLUME_BACKUP, "slow") == "Running", what="Running")
        env.kube.patch(api.VOLUME_BACKUP, SYSTEM, "slow", {"spec": {"cancel": True}})
        job = agent.jobs[("volumebackups", SYSTEM, "slow")]
        wait_until(job.cancel.is_set, what="the agent to see the cancel")
        feeder.release()
        item = env.wait_phase(api.VOLUME_BACKUP, "slow")
    assert feeder.broken
    status = item["status"]
    assert status["phase"] == "Cancelled", status
    ready = next(c for c in status["conditions"] if c["type"] == "Succeeded")
    assert ready["status"] == "False" and ready["reason"] == "Cancelled"
    assert "nothing stored" in status["message"]
    repo = open_repo(env.repo_dir)
    try:
        assert repo.snapshots() == []
    finally:
        repo.close()


def test_a_restarted_agent_carries_on_with_the_work_of_its_node(env: Env, tmp_path: Path) -> None:
    fifo = tmp_path / "volume.fifo"
    os.mkfifo(fifo)
    data = random.Random(2).randbytes(24 * MiB)
    first = Feeder(fifo, data, first=4 * MiB)
    env.kube.create(api.VOLUME_BACKUP, volume_backup("long", fifo))
    stop = threading.Event()
    agent = NodeAgent(env.kube, NODE, SYSTEM, interval=0.05, progress_interval=0.0)
    thread = threading.Thread(target=agent.run, args=(stop,), daemon=True)
    thread.start()
    wait_until(lambda: phase_of(env, api.VOLUME_BACKUP, "long") == "Running", what="Running")
    stop.set()  # the agent stops while the job waits for data...
    first.release()  # ...which then comes, and the job notices the shutdown
    thread.join(60)
    assert not thread.is_alive()
    interrupted = env.kube.get(api.VOLUME_BACKUP, SYSTEM, "long")["status"]
    assert interrupted["phase"] == "Running" and interrupted["attempts"] == 1

    second = Feeder(fifo, data, first=len(data))
    second.go.set()  # all of it, then the end of the stream
    with agent_running(env):
        item = env.wait_phase(api.VOLUME_BACKUP, "long")
    second.release()
    status = item["status"]
    assert status["phase"] == "Completed", status
    assert status["attempts"] == 2
    repo = open_repo(env.repo_dir)
    try:
        run_restore(repo, repo.find_snapshot(status["snapshot"]), str(tmp_path / "back.img"))
    finally:
        repo.close()
    assert read_bytes(tmp_path / "back.img") == data


def test_work_of_other_nodes_is_left_alone(env: Env, tmp_path: Path) -> None:
    volume = tmp_path / "disk.img"
    volume.write_bytes(b"x" * MiB)
    env.kube.create(api.VOLUME_BACKUP, volume_backup("theirs", volume, node="node-b"))
    env.kube.create(api.VOLUME_BACKUP, volume_backup("ours", volume))
    with agent_running(env):
        env.wait_phase(api.VOLUME_BACKUP, "ours")
        leases = env.kube.list(api.LEASE, SYSTEM)
        assert [lease["metadata"]["name"] for lease in leases] == [f"mover-agent-{NODE}"]
    assert phase_of(env, api.VOLUME_BACKUP, "theirs") == ""
    assert env.kube.list(api.LEASE, SYSTEM) == []  # given up when the agent stopped


def test_a_missing_volume_fails_the_item_with_its_reason(env: Env, tmp_path: Path) -> None:
    env.kube.create(api.VOLUME_BACKUP, volume_backup("gone", tmp_path / "nothing.img"))
    with agent_running(env):
        item = env.wait_phase(api.VOLUME_BACKUP, "gone")
    status = item["status"]
    assert status["phase"] == "Failed"
    condition = next(c for c in status["conditions"] if c["type"] == "Succeeded")
    assert condition["reason"] == "VolumeNotFound"
    assert "nothing.img does not exist on this node" in condition["message"]


def test_cancelling_a_backup_stops_its_volumes_and_keeps_nothing(env: Env, tmp_path: Path) -> None:
    deploy_app(env.kube, "shop")
    write_app_data(env.kube, "shop")
    disk = volume_path(env.kube, "shop", "data-a")
    disk.unlink()
    os.mkfifo(disk)  # data-a is read through a FIFO: the test holds it mid-way
    feeder = Feeder(disk, random.Random(4).randbytes(64 * MiB), first=4 * MiB)
    with env.running():
        env.kube.create(api.BACKUP, backup_body("stop-me", includedNamespaces=["shop"]))

        def data_a_running() -> bool:
            backup = env.kube.get(api.BACKUP, SYSTEM, "stop-me")
            volumes = (backup.get("status") or {}).get("volumes") or []
            names = [v["volumeBackup"] for v in volumes if v["pvc"] == "data-a"]
            return bool(names) and phase_of(env, api.VOLUME_BACKUP, names[0]) == "Running"

        wait_until(data_a_running, what="data-a to be read")
        env.kube.patch(api.BACKUP, SYSTEM, "stop-me", {"spec": {"cancel": True}})
        wait_until(
            lambda: all(
                (i.get("spec") or {}).get("cancel")
                for i in env.kube.list(api.VOLUME_BACKUP, SYSTEM)
                if (i.get("status") or {}).get("phase") not in api.DONE_PHASES
            ),
            what="the cancel to reach the work items",
        )
        feeder.go.set()
        backup = env.wait_phase(api.BACKUP, "stop-me")
        feeder.release()
    status = backup["status"]
    assert status["phase"] == "Cancelled", status
    assert next(c for c in status["conditions"] if c["type"] == "Ready")["reason"] == "Cancelled"
    phases = {v["pvc"]: v["phase"] for v in status["volumes"]}
    assert phases["data-a"] == "Cancelled"
    assert "manifestSnapshot" not in status
    repo = open_repo(env.repo_dir)
    try:
        assert repo.snapshots() == []  # the objects and data-b, stored before, are forgotten
    finally:
        repo.close()


def test_cancelling_a_restore_stops_its_volume_work(env: Env) -> None:
    deploy_app(env.kube, "shop")
    write_app_data(env.kube, "shop")
    with env.running():
        env.kube.create(api.BACKUP, backup_body("nightly", includedNamespaces=["shop"]))
        assert env.wait_phase(api.BACKUP, "nightly")["status"]["phase"] == "Completed"
    # An agent's lease without the agent: the work is handed out and waits.
    agent_leases.renew(env.kube, SYSTEM, NODE, "busy-agent", seconds=600)
    with env.running(agent=False):
        env.kube.create(
            api.RESTORE,
            restore_body("halt", backup="nightly", mode="data-only"),
        )
        wait_until(lambda: len(env.kube.list(api.VOLUME_RESTORE, SYSTEM)) == 2, what="work")
        env.kube.patch(api.RESTORE, SYSTEM, "halt", {"spec": {"cancel": True}})
        wait_until(
            lambda: all(i["spec"].get("cancel") for i in env.kube.list(api.VOLUME_RESTORE, SYSTEM)),
            what="the cancel to reach the work items",
        )
        with agent_running(env):  # the agent marks them Cancelled before starting them
            restore = env.wait_phase(api.RESTORE, "halt")
    status = restore["status"]
    assert status["phase"] == "Cancelled", status
    assert {v["result"] for v in status["report"]["volumes"]} == {"failed"}
    assert {v["reason"] for v in status["report"]["volumes"]} == {"cancelled"}
    phases = {i["status"]["phase"] for i in env.kube.list(api.VOLUME_RESTORE, SYSTEM)}
    assert phases == {"Cancelled"}
