"""With watches, the controller and the agent act on a change at once instead of at their next
pass: here the passes are 60 s apart, and a backup still completes in seconds."""

from __future__ import annotations

import threading
import time

from mover_k8s import api
from mover_k8s.controller.manager import Controller
from mover_k8s.node.agent import NodeAgent

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
