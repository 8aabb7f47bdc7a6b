"""With watches, the controller and the agent act on a change at once instead of at their next
pass: here the passes are 60 s apart, and a backup still completes in seconds."""

from __future__ import annotations

import logging
import socket
import threading
import time

import pytest

from mover_k8s import api
from mover_k8s.controller.manager import Controller
from mover_k8s.errors import KubeError
from mover_k8s.k8s.client import Kube, Obj, Watch
from mover_k8s.node.agent import NodeAgent
from mover_k8s.wakeup import Wakeup

from .conftest import NODE, SYSTEM, Env, backup_body, deploy_app, wait_until, write_app_data


def test_watches_wake_the_loops(env: Env) -> None:
    deploy_app(env.kube, "shop")
    write_app_data(env.kube, "shop")
    stop = threading.Event()
    controller = Controller(env.kube, SYSTEM, interval=60, agent_grace=0, watch=True)
    agent = NodeAgent(env.kube, NODE, SYSTEM, interval=60, progress_interval=0.05, watch=True)
    threads = [threading.Thread(target=c.run, args=(stop,)) for c in (controller, agent)]
    for thread in threads:
        thread.start()
    try:
        # Both made their first pass (the agent's Lease, the controller's).
        wait_until(lambda: len(env.kube.list(api.LEASE, SYSTEM)) == 2, what="first passes")
        started = time.monotonic()
        env.kube.create(api.BACKUP, backup_body("quick", includedNamespaces=["shop"]))
        backup = env.wait_phase(api.BACKUP, "quick", timeout=20)
        assert backup["status"]["phase"] == "Completed", backup["status"]
        assert time.monotonic() - started < 20  # several passes, none of them 60 s away
    finally:
        stop.set()
        stopping = time.monotonic()
        for thread in threads:
            thread.join(30)
    assert not any(t.is_alive() for t in threads)
    assert time.monotonic() - stopping < 10  # the watches let go quickly


# -- watches from a resourceVersion (issue 14: API load) ----------------------------------


def _config_map(ns: str, name: str) -> Obj:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": ns}}


def _events(watch: Watch) -> list[tuple[str, str]]:
    return [
        (e["type"], (e["object"].get("metadata") or {}).get("name", ""))
        for e in watch
        if e["type"] != "BOOKMARK"
    ]


def test_a_watch_starts_and_resumes_at_a_resource_version(env: Env) -> None:
    env.kube.create(api.NAMESPACE, {"metadata": {"name": "w"}})
    for i in range(5):
        env.kube.create(api.CONFIG_MAP, _config_map("w", f"old-{i}"))
    version = env.kube.resource_version(api.CONFIG_MAP, "w")
    env.kube.create(api.CONFIG_MAP, _config_map("w", "new"))
    with env.kube.watch(api.CONFIG_MAP, "w", resource_version=version, timeout=1) as watch:
        assert _events(watch) == [("ADDED", "new")]  # the old ones are not replayed
    env.kube.patch(api.CONFIG_MAP, "w", "new", {"data": {"k": "v"}})
    env.kube.delete(api.CONFIG_MAP, "w", "old-0")
    with env.kube.watch(
        api.CONFIG_MAP, "w", resource_version=watch.resource_version, timeout=1
    ) as again:
        assert _events(again) == [("MODIFIED", "new"), ("DELETED", "old-0")]
    served = env.served.cluster.served
    assert served["LIST"] == 1 and served["WATCH"] == 2


def test_bookmarks_keep_an_idle_watch_resumable(env: Env) -> None:
    cluster = env.served.cluster
    cluster.history = 5
    env.kube.create(api.NAMESPACE, {"metadata": {"name": "w"}})
    version = env.kube.resource_version(api.BACKUP, SYSTEM)
    with env.kube.watch(api.BACKUP, SYSTEM, resource_version=version, timeout=2) as watch:
        for i in range(30):  # other objects change: more than the server keeps
            env.kube.create(api.CONFIG_MAP, _config_map("w", f"cm-{i}"))
        assert _events(watch) == []
    assert int(watch.resource_version) > int(version)  # brought forward by bookmarks
    stale = env.kube.watch(api.BACKUP, SYSTEM, resource_version=version, timeout=1)
    with stale, pytest.raises(KubeError) as gone:
        list(stale)
    assert gone.value.status == 410
    env.kube.create(api.BACKUP, backup_body("later"))
    with env.kube.watch(
        api.BACKUP, SYSTEM, resource_version=watch.resource_version, timeout=1
    ) as w:
        assert _events(w) == [("ADDED", "later")]


def test_the_wakeup_reads_the_version_again_only_on_410(env: Env) -> None:
    cluster = env.served.cluster
    cluster.history, cluster.bookmarks = 5, False
    env.kube.create(api.NAMESPACE, {"metadata": {"name": "w"}})
    env.kube.create(api.NAMESPACE, {"metadata": {"name": "elsewhere"}})
    wakeup = Wakeup(env.kube, (api.CONFIG_MAP,), "w")
    wakeup.watch_seconds = 1
    stop = threading.Event()
    with wakeup.running(stop):
        wait_until(lambda: cluster.served["WATCH"] >= 1, what="the watch")
        wakeup.wait(5)  # the wake-up of the first read
        for i in range(20):  # not watched, but past what the server keeps
            env.kube.create(api.CONFIG_MAP, _config_map("elsewhere", f"cm-{i}"))
        lists = cluster.served["LIST"]
        wait_until(lambda: cluster.served["LIST"] > lists, what="a new read after 410")
        watches = cluster.served["WATCH"]
        wait_until(lambda: cluster.served["WATCH"] >= watches + 2, what="watches go on")
        assert cluster.served["LIST"] == lists + 1  # the read again, once
        wakeup.event.clear()
        env.kube.create(api.CONFIG_MAP, _config_map("w", "news"))
        assert wakeup.event.wait(5)
        stopping = time.monotonic()
    assert time.monotonic() - stopping < 3


def test_a_stop_ends_long_watches_at_once(env: Env) -> None:
    wakeup = Wakeup(env.kube, api.OURS)  # WATCH_SECONDS: the server holds them 300 s
    stop = threading.Event()
    with wakeup.running(stop):
        wait_until(lambda: env.served.cluster.served["WATCH"] >= len(api.OURS), what="watches")
        stopping = time.monotonic()
    assert time.monotonic() - stopping < 3


@pytest.mark.slow  # several seconds: runs in CI (CI=true) and with -m slow
def test_an_outage_is_one_warning_and_one_info_line(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    kube = Kube.at(f"http://127.0.0.1:{port}")
    wakeup = Wakeup(kube, (api.BACKUP, api.RESTORE, api.SCHEDULE), SYSTEM)
    stop = threading.Event()
    caplog.set_level(logging.DEBUG, logger="mover.k8s.wakeup")
    try:
        with wakeup.running(stop):
            time.sleep(3)  # failing: each watch retried with backoff
            kube._api.configuration.host = env.served.url  # the API is back
            wait_until(lambda: "work again" in caplog.text, what="recovery", timeout=30)
    finally:
        kube.close()
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert warnings[0].name == "mover.k8s.wakeup"
    infos = [r for r in caplog.records if r.levelno == logging.INFO and r.name.startswith("mover")]
    assert len(infos) == 1 and "work again" in infos[0].getMessage()
