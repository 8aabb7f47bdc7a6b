"""What an idle controller costs the API server (issue 14, item 4): a bounded number of requests
a minute, the same at any number of objects, and no re-lists by its watches.

The emulator counts what it serves (`Cluster.served`: requests by verb, objects listed and
watched). A controller runs with watches against N apps and N completed Backups; once it is
idle, one fixed window is counted, then the same with 10x the objects. Two ways to run it:

- `interval` 3600: the loop runs on changes only (the watches wake it), so an idle window shows
  what the watches alone cost: nothing (the server holds each watch for WATCH_SECONDS, 300 s);
  and the same with watches of 3 s, so that the window holds their re-opens: each resumes
  where the last one got to, with no list and no object sent again;
- `interval` 2 s (the CLI default): every pass reads the Lease and its four kinds (the
  level-triggered poll), the kinds from the copy the watches keep (mover_k8s.k8s.cache): once
  idle, a pass lists nothing and no object is served, at any N.

The rates (per minute, from the window) are printed: `pytest tests/k8s/test_api_load.py -s`.
No timing is asserted beyond the fixed window: the passes a window holds are counted, not
expected.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from mover_k8s import api, wakeup
from mover_k8s.controller.manager import Controller
from mover_k8s.k8s.client import Kube

from .conftest import SYSTEM, Env, backup_body

WINDOW = 10.0  # seconds counted once idle
QUIET = 3.0  # seconds without writes or watch events: idle
REQUESTS = ("LIST", "WATCH", "GET", "CREATE", "UPDATE", "PATCH", "DELETE", "DISCOVERY", "OTHER")
WRITES = ("CREATE", "PATCH", "DELETE", "watched")  # what a controller still working does


def add_apps(kube: Kube, first: int, last: int) -> None:
    """Apps app-FIRST..app-LAST-1: a namespace with a ConfigMap and a Deployment each."""
    for i in range(first, last):
        ns = f"app-{i}"
        kube.create(api.NAMESPACE, {"metadata": {"name": ns}})
        kube.create(
            api.CONFIG_MAP,
            {"metadata": {"name": "config", "namespace": ns}, "data": {"mode": "production"}},
        )
        labels = {"app": ns}
        kube.create(
            api.DEPLOYMENT,
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": "web", "namespace": ns, "labels": labels},
                "spec": {
                    "selector": {"matchLabels": labels},
                    "template": {
                        "metadata": {"labels": labels},
                        "spec": {"containers": [{"name": "web", "image": "web:1"}]},
                    },
                },
            },
        )


def add_backups(kube: Kube, first: int, last: int, apps: int) -> None:
    """Completed Backups b-FIRST..b-LAST-1 of the apps, as a busy cluster keeps them."""
    for i in range(first, last):
        name = f"b-{i:05d}"
        kube.create(api.BACKUP, backup_body(name, includedNamespaces=[f"app-{i % apps}"]))
        kube.patch_status(
            api.BACKUP,
            SYSTEM,
            name,
            {
                "phase": api.COMPLETED,
                "startTimestamp": "2025-01-01T02:00:00Z",
                "completionTimestamp": "2025-01-01T02:01:00Z",
                "volumes": [],
            },
        )


@contextmanager
def controller_running(env: Env, interval: float) -> Iterator[Controller]:
    stop = threading.Event()
    controller = Controller(env.kube, SYSTEM, interval=interval, watch=True)
    thread = threading.Thread(target=controller.run, args=(stop,), daemon=True)
    thread.start()
    try:
        yield controller
    finally:
        stop.set()
        thread.join(30)
    assert not thread.is_alive()


def wait_idle(env: Env, controller: Controller, timeout: float = 300.0) -> None:
    """Until the controller made a pass and then nothing it does changes anything for QUIET
    seconds (read in-process: waiting costs the API nothing)."""
    deadline = time.monotonic() + timeout
    last: tuple[int, ...] = ()
    since = time.monotonic()
    while True:
        served = env.served.cluster.served
        now = (*(served[w] for w in WRITES), min(controller.led_passes, 1))
        if now != last:
            last, since = now, time.monotonic()
        elif controller.led_passes and time.monotonic() - since >= QUIET:
            return
        if time.monotonic() > deadline:
            raise AssertionError("the controller did not become idle")
        time.sleep(0.1)


def measure(env: Env, interval: float) -> tuple[Counter[str], int]:
    """What an idle controller is served in WINDOW seconds, and the passes it made."""
    with controller_running(env, interval) as controller:
        wait_idle(env, controller)
        before, passes = env.served.cluster.served, controller.led_passes
        time.sleep(WINDOW)
        after, passes = env.served.cluster.served, controller.led_passes - passes
    return after - before, passes


def per_minute(served: Counter[str]) -> str:
    total = sum(served[r] for r in REQUESTS)
    shown = [f"{r} {served[r] * 60 / WINDOW:.0f}" for r in REQUESTS if served[r]]
    listed = served["listed"] * 60 / WINDOW
    watched = served["watched"] * 60 / WINDOW
    return (
        f"{total * 60 / WINDOW:.0f} requests/min ({', '.join(shown) or 'none'}); "
        f"objects/min: listed {listed:.0f}, watched {watched:.0f}"
    )


def check_idle(env: Env, sizes: list[int], apps: int, interval: float, watch_seconds: int) -> None:
    results: dict[int, tuple[Counter[str], int]] = {}
    reopens = len(api.OURS) * (int(WINDOW / watch_seconds) + 1)  # at most, per window
    made = 0
    add_apps(env.kube, 0, apps)
    for n in sizes:
        add_backups(env.kube, made, n, apps)
        made = n
        served, passes = measure(env, interval)
        results[n] = served, passes
        print(
            f"\nidle controller, interval {interval:g} s, watches of {watch_seconds} s, "
            f"{apps} apps, {n} Backups, {passes} passes in {WINDOW:g} s: {per_minute(served)}"
        )
        # The watches: re-opened only when the server ends them, and resuming: no list, no
        # object sent again.
        assert served["WATCH"] <= reopens, served
        assert served["watched"] == 0, served
        # Lists: none. The watches' copy answers the passes.
        assert served["LIST"] == 0 and served["listed"] == 0, (served, passes)
    (small, small_passes), (large, large_passes) = results[sizes[0]], results[sizes[-1]]
    total_small = sum(small[r] for r in REQUESTS)
    total_large = sum(large[r] for r in REQUESTS)
    if interval > WINDOW:  # no passes: nothing but the watches' re-opens, at any N
        assert small["LIST"] == 0 and large["LIST"] == 0
        assert total_small <= reopens and total_large <= reopens
    else:  # per pass, the same at any N: the Lease
        per_pass_small = total_small / max(small_passes, 1)
        assert total_large / max(large_passes, 1) <= per_pass_small + 1


# ~26 s each: all run in CI (CI=true) and with -m slow; tests/k8s/test_watch.py is the quick check.
MODES = pytest.mark.parametrize(
    ("interval", "watch_seconds"),
    [
        pytest.param(3600.0, wakeup.WATCH_SECONDS, id="on-changes", marks=pytest.mark.slow),
        pytest.param(3600.0, 3, id="on-changes-3s-watches", marks=pytest.mark.slow),
        pytest.param(2.0, wakeup.WATCH_SECONDS, id="every-2s", marks=pytest.mark.slow),
    ],
)


@MODES
def test_an_idle_controller_costs_the_same_at_20_and_200_backups(
    env: Env, interval: float, watch_seconds: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(wakeup, "WATCH_SECONDS", watch_seconds)
    check_idle(env, [20, 200], 20, interval, watch_seconds)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("interval", "watch_seconds"), [(3600.0, 3)], ids=["on-changes-3s-watches"]
)  # ~41 s: one mode at this size (the others are measured at 20 and 200)
def test_an_idle_controller_costs_the_same_with_200_apps_and_1000_backups(
    env: Env, interval: float, watch_seconds: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(wakeup, "WATCH_SECONDS", watch_seconds)
    check_idle(env, [20, 200, 1000], 200, interval, watch_seconds)
