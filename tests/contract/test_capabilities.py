"""What each backend and wrapper says it is (mover.storage.base.Capabilities)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from mover.storage.base import Backend, Capabilities
from mover.storage.limiting import LimitingBackend
from mover.storage.local import LocalBackend
from mover.storage.memory import MemoryBackend
from mover.storage.metrics import Metrics, MetricsBackend
from mover.storage.retrying import RetryingBackend
from mover.storage.stack import StorageOptions, open_backend
from mover.storage.throttling import ThrottlingBackend
from tests.contract.conftest import Harness
from tests.s3.server import MotoServer

LOCAL = Capabilities(local=True, connections=1, conditional_writes=False)
MEMORY = Capabilities(local=True, connections=16, conditional_writes=True)
S3 = Capabilities(local=False, connections=16, conditional_writes=True, object_lock=True)
EXPECTED = {"local": LOCAL, "local-stack": LOCAL, "memory": MEMORY, "s3": S3, "s3-stack": S3}


def test_every_backend_says_what_it_is(harness: Harness) -> None:
    assert harness.backend.capabilities == EXPECTED[harness.kind]


def test_conditional_writes_hold_after_a_write_meets_an_existing_name(harness: Harness) -> None:
    """A store that honours create-if-absent (moto does, as S3 has since 2024) keeps saying so
    once a write found its name taken."""
    harness.backend.write("k", b"same")
    harness.backend.write("k", b"same")
    assert harness.backend.capabilities == EXPECTED[harness.kind]


def test_s3_connections_are_its_pool(bucket: str, moto_server: MotoServer) -> None:
    options = StorageOptions(s3_endpoint=moto_server.endpoint, s3_concurrency=3)
    backend = open_backend(f"s3://{bucket}/repo", options)
    try:
        assert backend.capabilities.connections == 3
        assert not backend.capabilities.local
    finally:
        backend.close()


WRAPS: dict[str, Callable[[Backend], Backend]] = {
    "retrying": RetryingBackend,
    "metrics": lambda b: MetricsBackend(b, Metrics()),
    "throttling": lambda b: ThrottlingBackend(b, 1e6, 1e6),
    "limiting-above": lambda b: LimitingBackend(b, 64),
}


@pytest.mark.parametrize("wrap", WRAPS.values(), ids=WRAPS.keys())
def test_wrappers_pass_capabilities_through(
    wrap: Callable[[Backend], Backend], tmp_path: Path
) -> None:
    assert wrap(MemoryBackend()).capabilities == MEMORY
    assert wrap(LocalBackend(tmp_path)).capabilities == LOCAL


def test_a_limit_lowers_connections_and_nothing_else() -> None:
    limited = LimitingBackend(MemoryBackend(), 3)
    assert limited.capabilities == Capabilities(local=True, connections=3, conditional_writes=True)
    # Seen through the wrappers above it, as the composed stack has them.
    outer = RetryingBackend(MetricsBackend(ThrottlingBackend(limited), Metrics()))
    assert outer.capabilities.connections == 3
    assert LimitingBackend(limited, 2).capabilities.connections == 2
    assert LimitingBackend(limited, 5).capabilities.connections == 3


def test_a_backend_has_at_least_one_connection() -> None:
    with pytest.raises(ValueError, match="at least one connection"):
        Capabilities(local=True, connections=0, conditional_writes=False)
