"""Waking a polling loop as soon as something it reconciles changes.

The loops stay level-triggered (each pass reads everything it needs); watches only cut the wait
between passes from `--interval` to the time an event takes to arrive. One thread per watched
kind; every change wakes the loop (its own status writes come back as events too: those wake it
once, and the pass they cause writes nothing new).

What a watch costs the API server does not grow with the number of objects: the collection's
resourceVersion is read once (a one-item list), and the watch asks for the changes after it,
with bookmarks; when the server ends it (after `WATCH_SECONDS`) the next one resumes where the
last event or bookmark got to. Only a 410 Gone (the server no longer has that version) reads
the version again, and wakes the loop once: whatever changed meanwhile, its pass reads. Stopping
does not wait for the server: `running` shuts the open watches' connections down.

Given a `Cache`, the watches also keep a copy of what they watch (an informer): the first read
of a kind (and the read after a 410) is then a full list that fills it, each event is applied to
it before the loop is woken, and the loop's lists are answered from memory
(mover_k8s.k8s.cache).

Failures are retried with exponential backoff and jitter (the loop polls meanwhile), and logged
once per outage: a warning when the first watch fails, an info line when they all work again.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from mover_k8s.errors import KubeError
from mover_k8s.k8s.cache import Cache
from mover_k8s.k8s.client import WATCH_SECONDS, Kube, ResourceType, Watch

log = logging.getLogger("mover.k8s.wakeup")
CHANGES = frozenset({"ADDED", "MODIFIED", "DELETED"})
BACKOFF_FIRST = 1.0
BACKOFF_MAX = 60.0


def backoff(failures: int) -> float:
    """Seconds to wait after `failures` failures in a row: doubling from BACKOFF_FIRST up to
    BACKOFF_MAX, each drawn between half and all of that, so that watchers do not retry in step."""
    delay = min(BACKOFF_MAX, BACKOFF_FIRST * 2.0 ** min(max(failures, 1) - 1, 30))
    return delay * random.uniform(0.5, 1.0)


class Wakeup:
    def __init__(
        self,
        kube: Kube,
        kinds: tuple[ResourceType, ...],
        namespace: str | None = None,
        label_selector: str | None = None,
        cache: Cache | None = None,
    ) -> None:
        self.kube = kube
        self.cache = cache
        if cache is not None:
            for rt in kinds:
                cache.hold(rt, namespace, label_selector)
        self.kinds = kinds
        self.namespace = namespace
        self.label_selector = label_selector
        self.event = threading.Event()
        self.watch_seconds = WATCH_SECONDS
        self._lock = threading.Lock()
        self._open: set[Watch] = set()  # what a stop shuts down
        self._failing: set[str] = set()  # the kinds whose watch fails now
        self._outage_began = 0.0

    def wait(self, timeout: float) -> None:
        """Until something changed, or `timeout`."""
        self.event.wait(timeout)
        self.event.clear()

    def _follow(self, rt: ResourceType, stop: threading.Event) -> None:
        version = ""  # where the next watch starts; "": read the collection's first
        failures = 0  # attempts in a row that failed or ended at once
        while not stop.is_set():
            began = time.monotonic()
            try:
                if not version:
                    version = self._read(rt)
                    self.event.set()  # what changed before `version`: the pass reads it
                with self.kube.watch(
                    rt, self.namespace, self.label_selector, version, self.watch_seconds
                ) as watch:
                    self._works(rt)
                    with self._registered(watch):
                        if stop.is_set():
                            return
                        for event in watch:
                            if stop.is_set():
                                return
                            if event.get("type") in CHANGES:
                                if self.cache is not None:
                                    self.cache.apply(rt, event)
                                self.event.set()
                    version = watch.resource_version
            except KubeError as exc:
                if exc.status == 410:  # the server no longer has `version`
                    log.debug("watch of %s: %s; reading it again", rt.plural, exc)
                    version = ""
                else:
                    self._fails(rt, exc)
                    if self.cache is not None:
                        # Until the watch works again the copy may miss changes: the loop
                        # lists from the API meanwhile, and the copy is filled anew after.
                        self.cache.stale(rt)
                        version = ""
            if stop.is_set():
                return
            # A watch that ran a while ended as watches do: the next one starts at once.
            failures = 0 if time.monotonic() - began >= 1.0 else failures + 1
            if failures:
                stop.wait(backoff(failures))

    def _read(self, rt: ResourceType) -> str:
        """Where the watch of `rt` starts: the version of a one-item list, or with a cache, of
        the full list that fills it."""
        if self.cache is None:
            return self.kube.resource_version(rt, self.namespace, self.label_selector)
        items, version = self.kube.list_versioned(rt, self.namespace, self.label_selector)
        self.cache.fill(rt, items)
        return version

    @contextmanager
    def _registered(self, watch: Watch) -> Iterator[None]:
        with self._lock:
            self._open.add(watch)
        try:
            yield
        finally:
            with self._lock:
                self._open.discard(watch)

    def _fails(self, rt: ResourceType, exc: KubeError) -> None:
        with self._lock:
            first = not self._failing
            self._failing.add(rt.plural)
            if first:
                self._outage_began = time.monotonic()
        if first:
            log.warning(
                "watching %s failed: %s; retrying with backoff (the loop polls meanwhile)",
                rt.plural,
                exc,
            )
        else:
            log.debug("watching %s failed: %s", rt.plural, exc)

    def _works(self, rt: ResourceType) -> None:
        with self._lock:
            if rt.plural not in self._failing:
                return
            self._failing.discard(rt.plural)
            if self._failing:
                return
            lasted = time.monotonic() - self._outage_began
        log.info("watches work again (after %.0f s)", lasted)

    @contextmanager
    def running(self, stop: threading.Event) -> Iterator[Wakeup]:
        threads = [
            threading.Thread(
                target=self._follow, args=(rt, stop), daemon=True, name=f"watch-{rt.plural}"
            )
            for rt in self.kinds
        ]

        def relay() -> None:  # a stop wakes the loop, and ends the watches, at once
            stop.wait()
            self.event.set()
            with self._lock:
                watches = list(self._open)
            for watch in watches:
                watch.close()

        threads.append(threading.Thread(target=relay, daemon=True, name="watch-stop"))
        for thread in threads:
            thread.start()
        try:
            yield self
        finally:
            stop.set()
            for thread in threads:
                thread.join(30)
