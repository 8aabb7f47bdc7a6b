"""Every backend, raw and composed, under one contract (mover/storage/base.py).

A Harness gives the backend and, where the backend has a transport to fail, ways to make its
next write fail on the way: cut off midway, or damaged in transit. The nasty-case tests are
generated only for harnesses that have them, so nothing is skipped.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from mover.storage.base import Backend
from mover.storage.local import LocalBackend
from mover.storage.memory import MemoryBackend
from mover.storage.retrying import RetryPolicy
from mover.storage.stack import StorageOptions, open_backend
from tests.s3.fixtures import aws, bucket, moto_server
from tests.s3.proxy import FaultProxy
from tests.s3.server import MotoServer

__all__ = ["aws", "bucket", "moto_server"]

MiB = 1 << 20
# Small multipart settings, so the contract covers multipart objects with a few MiB.
THRESHOLD = 6 * MiB
PART = 5 * MiB
LIST_PAGE = 50  # so that a listing of a few hundred names takes several pages
FAST_RETRIES = RetryPolicy(attempts=8, base_delay=0.01, max_delay=0.1)


@dataclass
class Harness:
    kind: str
    backend: Backend
    cut_next_write: Callable[[], None] | None = None
    corrupt_next_write: Callable[[], None] | None = None


def _local_cut(monkeypatch: pytest.MonkeyPatch) -> Callable[[], None]:
    """The writer dies between writing its bytes and making them durable (fsync fails)."""

    def arm() -> None:
        real = os.fsync
        calls = []

        def failing(fd: int) -> None:
            if not calls:
                calls.append(fd)
                raise OSError(5, "Input/output error")
            real(fd)

        monkeypatch.setattr(os, "fsync", failing)

    return arm


def _s3(bucket: str, proxy: FaultProxy, stacked: bool) -> Backend:
    options = StorageOptions(
        s3_endpoint=proxy.endpoint,
        s3_multipart_threshold=THRESHOLD,
        s3_part_size=PART,
        s3_list_page_size=LIST_PAGE,
        retry=FAST_RETRIES,
    )
    if stacked:
        return open_backend(f"s3://{bucket}/repo", options)
    from mover.storage.s3 import S3Backend
    from mover.storage.stack import parse_location, s3_config

    return S3Backend(s3_config(parse_location(f"s3://{bucket}/repo"), options))


def _twice(proxy: FaultProxy, fault: str) -> Callable[[], None]:
    """aiohttp itself re-sends an idempotent request once when a reused connection drops, so a
    fault must hit two attempts in a row to reach the backend's error path; a multipart upload
    sends its parts at once, so enough faults for every part of the first try are queued."""

    def arm() -> None:
        for _ in range(6):
            proxy.queue("PUT", fault)

    return arm


KINDS = ["local", "memory", "s3", "local-stack", "s3-stack"]


def _make(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Harness]:
    proxy: FaultProxy | None = None
    if kind == "local":
        h = Harness(kind, LocalBackend(tmp_path / "repo"), cut_next_write=_local_cut(monkeypatch))
    elif kind == "local-stack":
        h = Harness(kind, open_backend(str(tmp_path / "repo"), StorageOptions(retry=FAST_RETRIES)))
    elif kind == "memory":
        h = Harness(kind, MemoryBackend())
    else:
        server: MotoServer = request.getfixturevalue("moto_server")
        name: str = request.getfixturevalue("bucket")
        proxy = FaultProxy(server.port, rate=0.0)
        h = Harness(kind, _s3(name, proxy, stacked=kind == "s3-stack"))
        h.cut_next_write = _twice(proxy, "cut")
        h.corrupt_next_write = _twice(proxy, "corrupt")
    try:
        yield h
    finally:
        h.backend.close()
        if proxy is not None:
            proxy.stop()


@pytest.fixture(params=KINDS)
def harness(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Harness]:
    yield from _make(request.param, request, tmp_path, monkeypatch)


@pytest.fixture(params=["local", "s3"])
def cuttable(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Harness]:
    """Raw backends whose next write can be made to die midway."""
    yield from _make(request.param, request, tmp_path, monkeypatch)


@pytest.fixture(params=["s3"])
def corruptible(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Harness]:
    """Raw backends with a transport whose bytes can be damaged on the way (local and memory
    have none: the bytes never leave the process)."""
    yield from _make(request.param, request, tmp_path, monkeypatch)


@pytest.fixture(params=["s3-stack"])
def recovering(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Harness]:
    """A composed stack over a transport: its retries must turn the nasty cases into success."""
    yield from _make(request.param, request, tmp_path, monkeypatch)
