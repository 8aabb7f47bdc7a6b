"""Fixtures shared by tests/s3 and tests/contract (imported by their conftest files): one moto
server per session, an isolated AWS environment per test, a fresh bucket per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.s3.server import AWS_VARS, MotoServer, aws_env


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    server = MotoServer()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def aws(moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """This test's AWS environment: fake credentials and the moto endpoint, nothing else of the
    machine's (so no real AWS, no instance metadata)."""
    for name in AWS_VARS:
        monkeypatch.delenv(name, raising=False)
    env = aws_env(moto_server.endpoint)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


@pytest.fixture
def bucket(moto_server: MotoServer, aws: dict[str, str]) -> str:
    return moto_server.make_bucket()
