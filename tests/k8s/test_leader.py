"""Several controller replicas: one leads, the others stand by and take over when it goes."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest

from mover_k8s import api
from mover_k8s.controller.manager import Controller
from mover_k8s.errors import Conflict
from mover_k8s.leader import NAME, Leadership

from .conftest import SYSTEM, Env, backup_body, deploy_app, wait_until


def lease_holder(env: Env) -> str | None:
    lease = env.kube.find(api.LEASE, SYSTEM, NAME)
    return None if lease is None else str(lease["spec"]["holderIdentity"])


def test_one_controller_leads_and_a_standby_takes_over(env: Env) -> None:
    deploy_app(env.kube, "shop")
    stops = [threading.Event(), threading.Event()]
    controllers = [Controller(env.kube, SYSTEM, interval=0.05, lease_seconds=30) for _ in stops]
    threads = [
        threading.Thread(target=c.run, args=(s,), daemon=True)
        for c, s in zip(controllers, stops, strict=True)
    ]
    for thread in threads:
        thread.start()
    try:
        leader_identity = wait_until(lambda: lease_holder(env), what="a leader")
        env.kube.create(
            api.BACKUP, backup_body("first", includedNamespaces=["shop"], snapshotVolumes=False)
        )
        assert env.wait_phase(api.BACKUP, "first")["status"]["phase"] == "Completed"
        (leader,) = [c for c in controllers if c.identity == leader_identity]
        (standby,) = [c for c in controllers if c is not leader]
        assert leader.led_passes > 0 and standby.led_passes == 0
        # The leader stops (a rollout): its Lease goes with it, the standby leads at once
        # rather than after 30 s.
        index = controllers.index(leader)
        stops[index].set()
        threads[index].join(30)
        wait_until(lambda: lease_holder(env) == standby.identity, timeout=10, what="takeover")
        env.kube.create(
            api.BACKUP, backup_body("second", includedNamespaces=["shop"], snapshotVolumes=False)
        )
        assert env.wait_phase(api.BACKUP, "second")["status"]["phase"] == "Completed"
        assert standby.led_passes > 0
    finally:
        for stop in stops:
            stop.set()
        for thread in threads:
            thread.join(30)


def test_a_live_lease_of_another_keeps_a_controller_standing_by(env: Env) -> None:
    other = Leadership(env.kube, SYSTEM, "other-controller", seconds=30)
    assert other.acquire()
    mine = Leadership(env.kube, SYSTEM, "this-controller", seconds=30)
    assert not mine.acquire()
    assert lease_holder(env) == "other-controller"
    # The other one died without giving the Lease up: once it runs out, it is taken.
    stale = (datetime.now(UTC) - timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    env.kube.patch(api.LEASE, SYSTEM, NAME, {"spec": {"renewTime": stale}})
    assert mine.acquire()
    lease = env.kube.get(api.LEASE, SYSTEM, NAME)
    assert lease["spec"]["holderIdentity"] == "this-controller"
    assert lease["spec"]["leaseTransitions"] == 1
    assert not other.acquire()  # it came back: it stands by now


def test_racing_for_the_lease_has_one_winner(env: Env) -> None:
    first = Leadership(env.kube, SYSTEM, "a", seconds=30)
    second = Leadership(env.kube, SYSTEM, "b", seconds=30)
    assert first.acquire()
    stale = (datetime.now(UTC) - timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    env.kube.patch(api.LEASE, SYSTEM, NAME, {"spec": {"renewTime": stale}})
    # `b` read the expired Lease; `a` renews before `b` writes: b's write carries a stale
    # resourceVersion and loses.
    expired = env.kube.get(api.LEASE, SYSTEM, NAME)
    assert first.acquire()
    taken = dict(expired, spec=dict(expired["spec"], holderIdentity="b"))
    with pytest.raises(Conflict):
        env.kube.replace(api.LEASE, taken)
    assert lease_holder(env) == "a"
    assert not second.acquire()
