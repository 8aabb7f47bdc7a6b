"""S3 suites: the real `mover` command line against moto's S3 server on loopback.

Shared fixtures (server, isolated AWS environment, fresh bucket) come from tests.s3.fixtures;
the command-line helpers from the integration suite.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import write_image
from tests.s3.fixtures import aws, bucket, moto_server
from tests.s3.server import MotoServer

__all__ = ["auth_server", "aws", "bucket", "moto_server", "small_image"]

MiB = 1 << 20
# Small repositories: many packs and chunks from a few MiB, and multipart above 6 MiB.
INIT_SMALL = ("--kdf-memory", "8MiB", "--chunk-min", "16KiB", "--chunk-avg", "64KiB")
INIT_SMALL += ("--chunk-max", "256KiB", "--pack-size", "512KiB")
MULTIPART = ("--s3-multipart-threshold", "6MiB", "--s3-part-size", "5MiB")


@pytest.fixture(scope="session")
def small_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """6 MiB of SampleData (text, binary, compressed, zeros); read-only, shared."""
    path = write_image(tmp_path_factory.mktemp("s3-images") / "small.img", 5, 6 * MiB)
    path.chmod(0o444)
    return path


@pytest.fixture(scope="session")
def auth_server() -> Iterator[tuple[MotoServer, str, str]]:
    """A moto server that checks credentials (IAM): (server, access key, secret key) of a user
    allowed everything. The first 3 requests (creating that user) are let through unsigned."""
    import boto3

    server = MotoServer({"INITIAL_NO_AUTH_ACTION_COUNT": "3"})
    try:
        iam = boto3.client(
            "iam",
            endpoint_url=server.endpoint,
            region_name="us-east-1",
            aws_access_key_id="bootstrap",
            aws_secret_access_key="bootstrap",
        )
        iam.create_user(UserName="mover")
        policy = {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
        }
        iam.put_user_policy(UserName="mover", PolicyName="all", PolicyDocument=json.dumps(policy))
        key = iam.create_access_key(UserName="mover")["AccessKey"]
        yield server, key["AccessKeyId"], key["SecretAccessKey"]
    finally:
        server.stop()
