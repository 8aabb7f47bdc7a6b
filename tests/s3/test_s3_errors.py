"""What a user sees when S3 is not there as told: one clear line, a non-zero exit, nothing
created or changed."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests.integration.conftest import assert_one_error_line, mover
from tests.s3.server import MotoServer

VERBS = [
    ("init", "--kdf-memory", "8MiB"),
    ("snapshots",),
    ("stats",),
    ("check",),
]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("verb", VERBS, ids=[v[0] for v in VERBS])
def test_missing_bucket(
    moto_server: MotoServer, aws: dict[str, str], verb: tuple[str, ...]
) -> None:
    proc = mover(*verb, "--repo", "s3://no-such-bucket-here/repo")
    line = assert_one_error_line(proc, exit_code=1)
    assert "bucket no-such-bucket-here does not exist" in line
    assert "no-such-bucket-here" not in {
        b["Name"] for b in moto_server.client().list_buckets()["Buckets"]
    }


@pytest.mark.parametrize("verb", VERBS[:2], ids=[v[0] for v in VERBS[:2]])
def test_unreachable_endpoint(aws: dict[str, str], verb: tuple[str, ...]) -> None:
    endpoint = f"http://127.0.0.1:{closed_port()}"
    proc = mover(*verb, "--repo", "s3://bucket/repo", "--s3-endpoint", endpoint, timeout=60)
    line = assert_one_error_line(proc, exit_code=1)
    assert f"cannot reach the S3 endpoint {endpoint}" in line


@pytest.mark.slow  # several seconds: runs in CI (CI=true) and with -m slow
def test_wrong_credentials(auth_server: tuple[MotoServer, str, str], aws: dict[str, str]) -> None:
    """moto (5.2) miscomputes signatures of listings whose prefix holds a "/", so the good
    credentials here are shown to pass the access check by reaching the repository check."""
    server, access_key, secret_key = auth_server
    client = server.client(access_key=access_key, secret_key=secret_key)
    client.create_bucket(Bucket="mover-auth-test")
    good = {
        "AWS_ENDPOINT_URL": server.endpoint,
        "AWS_ACCESS_KEY_ID": access_key,
        "AWS_SECRET_ACCESS_KEY": secret_key,
    }
    url = "s3://mover-auth-test"
    line = assert_one_error_line(mover("snapshots", "--repo", url, env=good), exit_code=1)
    assert "is not a mover repository" in line
    for wrong in ({"AWS_SECRET_ACCESS_KEY": "not-the-secret"}, {"AWS_ACCESS_KEY_ID": "AKIANOBODY"}):
        for verb in (("snapshots",), ("init", "--kdf-memory", "8MiB")):
            proc = mover(*verb, "--repo", url, env={**good, **wrong})
            line = assert_one_error_line(proc, exit_code=1)
            assert "access denied to s3://mover-auth-test" in line
            assert "check the credentials" in line
    assert client.list_objects_v2(Bucket="mover-auth-test")["KeyCount"] == 0


def test_no_credentials(bucket: str) -> None:
    no_credentials = {"AWS_ACCESS_KEY_ID": None, "AWS_SECRET_ACCESS_KEY": None}
    line = assert_one_error_line(
        mover("snapshots", "--repo", f"s3://{bucket}/r", env=no_credentials), exit_code=1
    )
    assert "no S3 credentials" in line
    line = assert_one_error_line(
        mover("snapshots", "--repo", f"s3://{bucket}/r", "--s3-profile", "nobody"), exit_code=1
    )
    assert "nobody" in line


def test_no_repository_at_the_prefix(bucket: str) -> None:
    proc = mover("snapshots", "--repo", f"s3://{bucket}/nothing-here")
    line = assert_one_error_line(proc, exit_code=1)
    assert "is not a mover repository" in line


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--repo", "s3://"), "write s3://BUCKET"),
        (("--repo", "ftp://host/x"), "unknown scheme"),
        (("--repo", "s3://b/p", "--s3-part-size", "1MiB"), "below the minimum"),
        (("--repo", "s3://b/p", "--limit-upload", "fast"), "is not a size"),
    ],
)
def test_bad_storage_arguments(aws: dict[str, str], args: tuple[str, ...], message: str) -> None:
    line = assert_one_error_line(mover("snapshots", *args), exit_code=2)
    assert message in line


def test_object_lock_needs_a_lock_enabled_bucket(bucket: str, tmp_path: Path) -> None:
    line = assert_one_error_line(
        mover("init", "--repo", f"s3://{bucket}/r", "--s3-object-lock-days", "1"), exit_code=2
    )
    assert "does not have Object Lock enabled" in line
    line = assert_one_error_line(
        mover("init", "--repo", tmp_path / "local", "--s3-object-lock-days", "1"), exit_code=2
    )
    assert "needs an s3:// repository" in line
