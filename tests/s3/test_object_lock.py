"""S3 Object Lock: with `init --s3-object-lock-days N` every object the repository writes is
retained N days; deletes are refused until then, and prune keeps such objects and says so."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from tests.integration.conftest import (
    assert_one_error_line,
    assert_same_file,
    mover,
    ok,
    out_json,
)
from tests.s3.conftest import INIT_SMALL
from tests.s3.server import MotoServer


@pytest.mark.slow  # several seconds: runs in CI (CI=true) and with -m slow
def test_locked_repository(
    moto_server: MotoServer, aws: dict[str, str], small_image: Path, tmp_path: Path
) -> None:
    bucket = moto_server.make_bucket(object_lock=True)
    url = f"s3://{bucket}/locked"
    ok(mover("init", "--repo", url, *INIT_SMALL, "--s3-object-lock-days", "2"))
    snapshot = out_json(mover("backup", "--repo", url, small_image, "--json"))

    client = moto_server.client()
    keys = moto_server.keys(bucket)
    # The backup's lock cannot be deleted under retention: it stays, marked released.
    assert {k.split("/")[1] for k in keys} == {
        "config",
        "keys",
        "data",
        "index",
        "snapshots",
        "locks",
    }
    assert out_json(mover("locks", "--repo", url, "--json"))["locks"] == []
    for key in keys:
        head = client.head_object(Bucket=bucket, Key=key)
        assert head["ObjectLockMode"] == "COMPLIANCE", key
        until = head["ObjectLockRetainUntilDate"]
        assert timedelta(days=1.9) < until - datetime.now(UTC) <= timedelta(days=2), key

    # Someone holding the credentials cannot remove the data (a plain delete only hides it
    # behind a delete marker in a versioned bucket; deleting the version is refused).
    pack = next(k for k in keys if "/data/" in k)
    version = client.head_object(Bucket=bucket, Key=pack)["VersionId"]
    with pytest.raises(ClientError, match="AccessDenied"):
        client.delete_object(Bucket=bucket, Key=pack, VersionId=version)

    line = assert_one_error_line(mover("forget", "--repo", url, snapshot["id"]), exit_code=1)
    assert "under Object Lock retention" in line
    listed = out_json(mover("snapshots", "--repo", url, "--json"))
    assert [s["id"] for s in listed] == [snapshot["id"]]

    # A pack no index names (as a killed backup leaves) under retention: prune would delete
    # it, retention refuses, prune keeps it and reports it.
    orphan = pack.rsplit("/", 1)[0] + "/" + "0" * 64
    client.put_object(
        Bucket=bucket,
        Key=orphan,
        Body=b"orphan",
        ObjectLockMode="COMPLIANCE",
        ObjectLockRetainUntilDate=datetime.now(UTC) + timedelta(days=1),
    )
    pruned = out_json(mover("prune", "--repo", url, "--unindexed-grace", "0", "--json"))
    assert pruned["locked"] == 1 and pruned["unindexed_deleted"] == 0
    assert orphan in moto_server.keys(bucket)
    text = ok(mover("prune", "--repo", url, "--unindexed-grace", "0")).stdout.decode()
    assert "still under Object Lock" in text
    assert out_json(mover("check", "--repo", url, "--read-data", "--json"))["ok"]
    restored = tmp_path / "restored.img"
    ok(mover("restore", "--repo", url, "latest", restored))
    assert_same_file(small_image, restored)
