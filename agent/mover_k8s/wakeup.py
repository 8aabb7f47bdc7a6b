"""Waking a polling loop as soon as something it reconciles changes.

The loops stay level-triggered (each pass reads everything it needs); watches only cut the wait
between passes from `--interval` to the time an event takes to arrive. One thread per watched
kind; an event wakes the loop only if it is news: an object not seen at that resourceVersion
(a watch restarted without one replays every object as ADDED, and the loop's own status writes
come back as events too: those wake it once, and the pass they cause writes nothing new).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from mover_k8s.errors import KubeError
from mover_k8s.k8s.client import Kube, ResourceType

log = logging.getLogger("mover.k8s.wakeup")


class Wakeup:
    def __init__(
        self,
        kube: Kube,
        kinds: tuple[ResourceType, ...],
        namespace: str | None = None,
        label_selector: str | None = None,
    ) -> None:
        self.kube = kube
        self.kinds = kinds
        self.namespace = namespace
        self.label_selector = label_selector
        self.event = threading.Event()

    def wait(self, timeout: float) -> None:
        """Until something changed, or `timeout`."""
        self.event.wait(timeout)
        self.event.clear()

    def _follow(self, rt: ResourceType, stop: threading.Event) -> None:
        seen: dict[tuple[str, str], str] = {}
        while not stop.is_set():
            began = time.monotonic()
            try:
                for event in self.kube.watch(rt, self.namespace, self.label_selector):
                    if stop.is_set():
                        return
                    meta = (event.get("object") or {}).get("metadata") or {}
                    if event.get("type") == "BOOKMARK" or "name" not in meta:
                        continue
                    key = (str(meta.get("namespace") or ""), str(meta["name"]))
                    version = str(meta.get("resourceVersion") or "")
                    if event.get("type") == "DELETED" or seen.get(key) != version:
                        seen[key] = version
                        self.event.set()
            except KubeError as exc:  # the API is away: the loop polls meanwhile
                log.debug("watch of %s: %s", rt.plural, exc)
                stop.wait(1.0)
                continue
            if time.monotonic() - began < 0.5:
                stop.wait(0.5)  # a server that ends watches at once must not be hammered

    @contextmanager
    def running(self, stop: threading.Event) -> Iterator[Wakeup]:
        threads = [
            threading.Thread(
                target=self._follow, args=(rt, stop), daemon=True, name=f"watch-{rt.plural}"
            )
            for rt in self.kinds
        ]

        def relay() -> None:  # a stop wakes the loop at once
            stop.wait()
            self.event.set()

        threads.append(threading.Thread(target=relay, daemon=True, name="watch-stop"))
        for thread in threads:
            thread.start()
        try:
            yield self
        finally:
            stop.set()
            for thread in threads:
                thread.join(30)
