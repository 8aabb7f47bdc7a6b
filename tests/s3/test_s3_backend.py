"""S3 backend behaviour beyond the common contract: what it does with what it finds there."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from mover.errors import ObjectLocked, StorageError
from mover.storage.s3 import S3Backend
from mover.storage.s3config import ObjectLock, S3Config
from tests.s3.proxy import FaultProxy
from tests.s3.server import MotoServer


@pytest.fixture
def proxy(moto_server: MotoServer) -> Iterator[FaultProxy]:
    p = FaultProxy(moto_server.port)
    try:
        yield p
    finally:
        p.stop()


@pytest.fixture
def s3(bucket: str, proxy: FaultProxy) -> Iterator[S3Backend]:
    backend = S3Backend(S3Config(bucket=bucket, prefix="r", endpoint=proxy.endpoint))
    try:
        yield backend
    finally:
        backend.close()


def test_damage_that_could_not_be_removed_is_removed_by_the_retry(
    s3: S3Backend, proxy: FaultProxy, moto_server: MotoServer, bucket: str
) -> None:
    data = os.urandom(50_000)
    proxy.queue("PUT", "corrupt")
    proxy.queue("DELETE", "503")  # the clean-up of the damaged object fails
    with pytest.raises(StorageError) as caught:
        s3.write("data/aa/x", data)
    assert caught.value.temporary
    stored = moto_server.client().get_object(Bucket=bucket, Key="r/data/aa/x")["Body"].read()
    assert stored != data and len(stored) == len(data)  # damaged, same size
    s3.write("data/aa/x", data)  # a retry: removes the damaged object, then writes
    assert s3.read("data/aa/x") == data


def test_an_existing_object_with_other_content_is_refused(
    s3: S3Backend, moto_server: MotoServer, bucket: str
) -> None:
    data = os.urandom(10_000)
    moto_server.client().put_object(Bucket=bucket, Key="r/data/bb/y", Body=os.urandom(10_000))
    with pytest.raises(StorageError, match="other content") as caught:
        s3.write("data/bb/y", data)
    assert not caught.value.temporary


def test_prune_aborts_uploads_of_dead_writers(
    s3: S3Backend, moto_server: MotoServer, bucket: str
) -> None:
    client = moto_server.client()
    client.create_multipart_upload(Bucket=bucket, Key="r/data/cc/z")
    client.create_multipart_upload(Bucket=bucket, Key="elsewhere/z")  # not ours
    # (moto reports every upload as initiated in 2010, so the grace period is not tested here)
    assert s3.remove_leftovers(older_than=0) == 1
    left = [u["Key"] for u in client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])]
    assert left == ["elsewhere/z"]


def test_locked_objects_refuse_deletion(moto_server: MotoServer, aws: dict[str, str]) -> None:
    bucket = moto_server.make_bucket(object_lock=True)
    s3 = S3Backend(S3Config(bucket=bucket))
    try:
        assert s3.object_lock_enabled()
        s3.set_object_lock(ObjectLock("GOVERNANCE", 1))
        s3.write("index/locked", b"keep me")
        s3.set_object_lock(None)
        s3.write("index/free", b"delete me")
        s3.set_object_lock(ObjectLock("GOVERNANCE", 1))  # deletes are now by version
        with pytest.raises(ObjectLocked):
            s3.delete("index/locked")
        assert s3.read("index/locked") == b"keep me"
        s3.delete("index/free")
        assert not s3.exists("index/free")
        assert (
            not moto_server.client()
            .list_object_versions(Bucket=bucket, Prefix="index/free")
            .get("Versions")
        )
    finally:
        s3.close()
