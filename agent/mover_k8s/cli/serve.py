"""A component run in its pod: logs, until SIGTERM or SIGINT, its metrics served meanwhile."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from mover.errors import UsageError

if TYPE_CHECKING:  # imported when a component runs: `mover` starts fast without them
    from prometheus_client import CollectorRegistry


def run_until_signal(
    run: Callable[[threading.Event], None], registry: CollectorRegistry, metrics_port: int
) -> None:
    """Run `run(stop)` with logging set up; `stop` is set on SIGTERM or SIGINT. The registry's
    metrics are served on `metrics_port` meanwhile (0: not served); a port that cannot be bound
    is a usage error before `run` starts."""
    from mover_k8s.metrics import Server

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    server = None
    if metrics_port:
        try:
            server = Server(registry, metrics_port)
        except OSError as exc:
            raise UsageError(f"--metrics-port {metrics_port}: {exc.strerror or exc}") from None
        logging.getLogger("mover.k8s").info("metrics on port %d (/metrics)", server.port)
    try:
        run(stop)
    finally:
        if server is not None:
            server.close()
