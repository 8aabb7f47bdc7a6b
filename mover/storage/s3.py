"""S3, or any S3-compatible store, over aiobotocore, behind the synchronous Backend interface.

The pipeline calls backends from many threads. This backend owns one asyncio event loop (uvloop
when installed) running in a daemon thread, and one aiobotocore client created on that loop;
each sync method submits a coroutine with run_coroutine_threadsafe and waits for its result.
So many pipeline threads have requests in flight at once over one connection pool, and a large
object's multipart parts go up in parallel even when one thread uploads it.

Writes are atomic and verified:
- one PUT below the multipart threshold, with Content-MD5, so S3 rejects a body damaged in
  transit (BadDigest) and nothing is stored; the returned ETag is compared with the MD5 as
  well, for stores that ignore Content-MD5: a mismatch deletes what was stored and fails as
  temporary (a retry re-sends);
- above it, a multipart upload whose parts each carry Content-MD5 and are checked against their
  ETags; any failure aborts the upload, so no part of it ever becomes visible;
- `If-None-Match: *` makes a write of an existing name a no-op checked by size (the contract);
  a store that rejects conditional writes is asked with HEAD before PUT instead.

Errors are classified once, in mover.storage.s3replies: ObjectNotFound; StorageError(temporary=
True) for throttling (503 SlowDown), 500/502/504, connection errors, timeouts and damaged
transfers; ObjectLocked (here) for a delete refused by Object Lock; everything else permanent.
Botocore's own retries are off: retrying is the job of mover.storage.retrying, so that it is
done once, with jitter, counted.
"""

from __future__ import annotations

import asyncio
import base64
import builtins
import os
import threading
import time
from collections.abc import Awaitable, Coroutine, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import ClientError

from mover.errors import ObjectLocked, ObjectNotFound, StorageError, UsageError
from mover.storage.base import Capabilities
from mover.storage.s3config import MIN_PART_SIZE, PARTS_IN_FLIGHT, ObjectLock, S3Config
from mover.storage.s3replies import (
    classify,
    conditional_refused,
    error_code,
    etag_is_md5,
    etag_of,
    expected_etag,
    http_status,
    md5,
    missing_bucket,
)

T = TypeVar("T")


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # uvloop is a dependency; asyncio's loop works too, a little slower
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


ABORT_TRIES = 4


class S3Backend:
    def __init__(self, config: S3Config) -> None:
        if config.part_size < MIN_PART_SIZE:
            raise UsageError(f"S3 part size must be at least {MIN_PART_SIZE} bytes")
        self.config = config
        self.bucket = config.bucket
        self._root = f"{config.prefix.strip('/')}/" if config.prefix.strip("/") else ""
        self.location = f"s3://{config.bucket}/{self._root}".rstrip("/")
        self.endpoint = config.resolved_endpoint()
        self.object_lock: ObjectLock | None = None
        self._conditional = True  # If-None-Match: * until the store says it cannot
        self._damaged: set[str] = set()  # names we stored damaged and could not yet delete
        self._closed = False
        self._loop = _new_loop()
        self._thread = threading.Thread(target=self._run_loop, name="mover-s3", daemon=True)
        self._thread.start()
        self._client_cm: Any = None
        self._client: Any = None
        try:
            self._call(self._open_client())
        except Exception as exc:
            self._stop_loop()
            raise self._error(exc, f"open {self.location}") from None
        except BaseException:
            self._stop_loop()
            raise

    @property
    def capabilities(self) -> Capabilities:
        """As many connections as its pool holds. Conditional writes (If-None-Match: *) until
        the store refuses them: from then on a write is HEAD, then PUT."""
        return Capabilities(
            local=False,
            connections=self.config.connections,
            conditional_writes=self._conditional,
            object_lock=True,
        )

    # -- the event loop thread ----------------------------------------------------------------

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._closed:
            coro.close()
            raise StorageError(f"{self.location}: backend used after close()")
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()
            raise

    async def _open_client(self) -> None:
        c = self.config
        session = get_session()
        if c.profile:
            session.set_config_variable("profile", c.profile)
        region = c.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        config = AioConfig(
            region_name=region or session.get_config_variable("region") or "us-east-1",
            s3={"addressing_style": "path" if c.path_style else "auto"},
            retries={"total_max_attempts": 1},  # mover.storage.retrying retries, once
            max_pool_connections=c.connections,
            connect_timeout=c.connect_timeout,
            read_timeout=c.read_timeout,
            # We send Content-MD5 ourselves; newer checksum trailers break many S3-compatibles.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        kwargs: dict[str, Any] = {"config": config}
        if self.endpoint:
            kwargs["endpoint_url"] = self.endpoint
        if c.access_key and c.secret_key:
            kwargs["aws_access_key_id"] = c.access_key
            kwargs["aws_secret_access_key"] = c.secret_key
            if c.session_token:
                kwargs["aws_session_token"] = c.session_token
        self._client_cm = session.create_client("s3", **kwargs)
        self._client = await self._client_cm.__aenter__()

    async def _close_client(self) -> None:
        if self._client_cm is not None:
            await self._client_cm.__aexit__(None, None, None)
            self._client_cm = self._client = None
        await asyncio.sleep(0)  # let aiohttp finish closing its transports

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def close(self) -> None:
        if self._closed:
            return
        try:
            self._call(self._close_client())
            self._call(self._loop.shutdown_asyncgens())
        finally:
            self._closed = True
            self._stop_loop()

    # -- errors -------------------------------------------------------------------------------

    def _error(self, exc: BaseException, action: str) -> StorageError:
        """One classification of every failure (mover.storage.s3replies): what the user reads
        and what retries see."""
        return classify(
            exc, action, bucket=self.bucket, location=self.location, endpoint=self.endpoint
        )

    async def _guard(self, action: str, awaitable: Awaitable[T]) -> T:
        try:
            return await awaitable
        except Exception as exc:  # classified into StorageError right here; bugs re-raise
            raise self._error(exc, action) from None

    def _key(self, name: str) -> str:
        return self._root + name

    # -- probes -------------------------------------------------------------------------------

    def check_bucket(self, attempts: int = 3) -> None:
        """Fail early, with one clear line, on a missing bucket, wrong credentials or an
        unreachable endpoint (a few quick tries for the temporary kind)."""
        for attempt in range(attempts):
            try:
                self._call(self._head_bucket())
                return
            except StorageError as exc:
                if not exc.temporary or attempt + 1 == attempts:
                    raise
            time.sleep(0.2 * (attempt + 1))

    async def _head_bucket(self) -> None:
        try:
            await self._client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            if http_status(exc) == 404 or error_code(exc) in ("404", "NoSuchBucket", "NotFound"):
                raise missing_bucket(self.bucket, self.endpoint) from None
            raise self._error(exc, f"open bucket {self.bucket}") from None
        except Exception as exc:
            raise self._error(exc, f"open bucket {self.bucket}") from None

    def object_lock_enabled(self) -> bool:
        return self._call(self._object_lock_enabled())

    async def _object_lock_enabled(self) -> bool:
        try:
            resp = await self._client.get_object_lock_configuration(Bucket=self.bucket)
        except ClientError as exc:
            if "ObjectLockConfigurationNotFound" in str(exc.response.get("Error", {})):
                return False
            raise self._error(exc, f"read the Object Lock setting of {self.bucket}") from None
        except Exception as exc:
            raise self._error(exc, f"read the Object Lock setting of {self.bucket}") from None
        enabled = resp.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled")
        return bool(enabled == "Enabled")

    def set_object_lock(self, lock: ObjectLock | None) -> None:
        """Retention for every object written from now on (set from the repository config)."""
        self.object_lock = lock

    def _lock_args(self) -> dict[str, Any]:
        if self.object_lock is None:
            return {}
        until = datetime.now(UTC) + timedelta(days=self.object_lock.days)
        return {"ObjectLockMode": self.object_lock.mode, "ObjectLockRetainUntilDate": until}

    # -- writing ------------------------------------------------------------------------------

    def write(self, name: str, data: bytes | memoryview) -> None:
        # A multipart upload copies one part at a time out of `data` (which may be a view of a
        # recycled pack buffer: it is not touched after this call returns); a single PUT sends
        # bytes, copied once when given a view.
        if len(data) > self.config.multipart_threshold:
            self._call(self._write_multipart(name, memoryview(data)))
        else:
            self._call(self._write_single(name, data if isinstance(data, bytes) else bytes(data)))

    def open_stream(self, prefix: str) -> None:
        """None: a PUT needs the whole body (its length and MD5) and a multipart upload holds
        a part at a time, so a stream would keep the bytes as the writer's buffer does."""

    async def _existing(self, name: str, body: bytes | memoryview) -> None:
        """The name exists: a no-op when it holds these bytes (content-addressed names), an
        error when it does not, as far as size and ETag can tell."""
        head = await self._head(name)
        if int(head["ContentLength"]) != len(body):
            raise StorageError(f"object {name} exists with a different size; refusing to replace")
        etag = etag_of(head)
        expected = (
            expected_etag(body, etag, self.config.part_size) if etag and etag_is_md5(head) else None
        )
        if expected is not None and etag != expected:
            raise StorageError(
                f"object {name} exists with other content (its ETag does not match); "
                "refusing to replace it: run `mover check --read-data`"
            )

    async def _remove_damaged(self, name: str, key: str) -> None:
        """Delete what a write of ours stored damaged. Until that succeeds the name is kept in
        _damaged, so a retry deletes it first instead of taking it for an equal object."""
        self._damaged.add(name)
        await self._guard(
            f"remove damaged {name}", self._client.delete_object(Bucket=self.bucket, Key=key)
        )
        self._damaged.discard(name)

    async def _clear_damaged(self, name: str) -> None:
        if name in self._damaged:
            await self._remove_damaged(name, self._key(name))

    async def _write_single(self, name: str, body: bytes) -> None:
        key, digest = self._key(name), md5(body)
        args: dict[str, Any] = {
            "Bucket": self.bucket,
            "Key": key,
            "Body": body,
            "ContentMD5": base64.b64encode(digest).decode(),
            **self._lock_args(),
        }
        await self._clear_damaged(name)
        if not self._conditional and await self._exists(name):
            return await self._existing(name, body)
        try:
            resp = await self._client.put_object(
                **args, **({"IfNoneMatch": "*"} if self._conditional else {})
            )
        except ClientError as exc:
            if error_code(exc) in ("PreconditionFailed", "412"):
                return await self._existing(name, body)
            if self._conditional and conditional_refused(exc):
                self._conditional = False
                return await self._write_single(name, body)
            raise self._error(exc, f"write {name}") from None
        except Exception as exc:
            raise self._error(exc, f"write {name}") from None
        etag = etag_of(resp)
        if etag_is_md5(resp) and etag and etag != digest.hex():
            # Stored, but not what we sent (a store that ignores Content-MD5): remove it.
            await self._remove_damaged(name, key)
            raise StorageError(
                f"upload of {name} arrived damaged (ETag {etag} is not the MD5 of what was "
                "sent); removed it",
                temporary=True,
            )

    async def _write_multipart(self, name: str, body: memoryview) -> None:
        key = self._key(name)
        await self._clear_damaged(name)
        if not self._conditional and await self._exists(name):
            return await self._existing(name, body)
        created = await self._guard(
            f"write {name}",
            self._client.create_multipart_upload(Bucket=self.bucket, Key=key, **self._lock_args()),
        )
        upload_id = created["UploadId"]
        try:
            await self._upload_parts_and_complete(name, key, upload_id, body)
        except BaseException:
            # Never leave the parts behind: shielded, so a cancelled write still aborts.
            await asyncio.shield(self._abort(key, upload_id))
            raise

    async def _abort(self, key: str, upload_id: str) -> None:
        # A few tries: an abort that meets a transient error (seen: a 500 from the server under
        # load) would leave a stored, billed, invisible upload. What still fails, prune aborts
        # later (remove_leftovers).
        for attempt in range(ABORT_TRIES):
            try:
                await self._client.abort_multipart_upload(
                    Bucket=self.bucket, Key=key, UploadId=upload_id
                )
                return
            except ClientError as exc:
                if error_code(exc) == "NoSuchUpload":
                    return  # an earlier try went through
                await asyncio.sleep(0.05 * (attempt + 1))
            except Exception:
                await asyncio.sleep(0.05 * (attempt + 1))

    async def _upload_parts_and_complete(
        self, name: str, key: str, upload_id: str, body: memoryview
    ) -> None:
        digests = await self._upload_parts(name, key, upload_id, body)
        parts = [
            {"PartNumber": number, "ETag": f'"{digest.hex()}"'}
            for number, digest in enumerate(digests, 1)
        ]
        args: dict[str, Any] = {
            "Bucket": self.bucket,
            "Key": key,
            "UploadId": upload_id,
            "MultipartUpload": {"Parts": parts},
        }
        try:
            resp = await self._client.complete_multipart_upload(
                **args, **({"IfNoneMatch": "*"} if self._conditional else {})
            )
        except ClientError as exc:
            if error_code(exc) in ("PreconditionFailed", "412"):
                await self._abort(key, upload_id)
                return await self._existing(name, body)
            raise self._error(exc, f"write {name}") from None
        except Exception as exc:
            raise self._error(exc, f"write {name}") from None
        etag = etag_of(resp)
        expected = f"{md5(b''.join(digests)).hex()}-{len(digests)}"
        if etag_is_md5(resp) and etag and etag != expected:
            await self._remove_damaged(name, key)
            raise StorageError(f"upload of {name} arrived damaged; removed it", temporary=True)

    async def _upload_parts(
        self, name: str, key: str, upload_id: str, body: memoryview
    ) -> list[bytes]:
        """Uploads the parts, PARTS_IN_FLIGHT at once, each with Content-MD5 and its ETag
        checked; returns their MD5s in part order. On the first failure the other parts are
        cancelled and it is raised (the caller aborts the upload)."""
        size = self.config.part_size
        ranges = [(n + 1, start) for n, start in enumerate(range(0, len(body), size))]
        slots = asyncio.Semaphore(PARTS_IN_FLIGHT)
        digests: dict[int, bytes] = {}

        async def part(number: int, start: int) -> None:
            chunk = bytes(body[start : start + size])
            digest = md5(chunk)
            async with slots:
                resp = await self._guard(
                    f"write {name} (part {number})",
                    self._client.upload_part(
                        Bucket=self.bucket,
                        Key=key,
                        UploadId=upload_id,
                        PartNumber=number,
                        Body=chunk,
                        ContentMD5=base64.b64encode(digest).decode(),
                    ),
                )
            etag = etag_of(resp)
            if etag_is_md5(resp) and etag and etag != digest.hex():
                raise StorageError(
                    f"upload of {name} part {number} arrived damaged; the upload was aborted",
                    temporary=True,
                )
            digests[number] = digest

        tasks = [asyncio.ensure_future(part(n, s)) for n, s in ranges]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for task in tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                exc = task.exception()
                assert exc is not None
                raise exc
        return [digests[n] for n, _ in ranges]

    # -- reading ------------------------------------------------------------------------------

    def read(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        return self._call(self._read(name, offset, length))

    async def _read(self, name: str, offset: int, length: int | None) -> bytes:
        short = StorageError(
            f"object {name} is shorter than expected "
            f"(wanted {'all' if length is None else length} bytes at {offset})"
        )
        if offset < 0 or (length is not None and length < 0):
            raise short
        if length == 0 or (length is None and offset > 0):
            size = await self._size(name)
            if offset > size or (length is not None and offset + length > size):
                raise short
            if length == 0 or offset == size:
                return b""
        args: dict[str, Any] = {"Bucket": self.bucket, "Key": self._key(name)}
        if length is not None:
            args["Range"] = f"bytes={offset}-{offset + length - 1}"
        elif offset:
            args["Range"] = f"bytes={offset}-"
        try:
            resp = await self._client.get_object(**args)
            async with resp["Body"] as stream:
                data: bytes = await stream.read()
        except ClientError as exc:
            if error_code(exc) == "InvalidRange":
                raise short from None
            raise self._error(exc, f"read {name}") from None
        except Exception as exc:
            raise self._error(exc, f"read {name}") from None
        if length is not None and len(data) != length:
            raise StorageError(
                f"object {name} is shorter than expected "
                f"(wanted {length} bytes at {offset}, got {len(data)})"
            )
        return data

    def list(self, prefix: str) -> Iterator[str]:
        token: str | None = None
        while True:
            names, token = self._call(self._list_page(prefix, token))
            yield from names
            if token is None:
                return

    async def _list_page(self, prefix: str, token: str | None) -> tuple[builtins.list[str], Any]:
        args: dict[str, Any] = {
            "Bucket": self.bucket,
            "Prefix": self._key(prefix),
            "MaxKeys": self.config.list_page_size,
        }
        if token:
            args["ContinuationToken"] = token
        resp = await self._guard(f"list {prefix or '/'}", self._client.list_objects_v2(**args))
        skip = len(self._root)
        names = [str(obj["Key"])[skip:] for obj in resp.get("Contents", [])]
        return names, resp.get("NextContinuationToken") if resp.get("IsTruncated") else None

    async def _head(self, name: str) -> dict[str, Any]:
        resp: dict[str, Any] = await self._guard(
            f"look up {name}", self._client.head_object(Bucket=self.bucket, Key=self._key(name))
        )
        return resp

    async def _size(self, name: str) -> int:
        return int((await self._head(name))["ContentLength"])

    async def _exists(self, name: str) -> bool:
        try:
            await self._head(name)
        except ObjectNotFound:
            return False
        return True

    def size(self, name: str) -> int:
        return self._call(self._size(name))

    def mtime(self, name: str) -> float:
        modified: datetime = self._call(self._head(name))["LastModified"]
        return modified.timestamp()

    def exists(self, name: str) -> bool:
        return self._call(self._exists(name))

    # -- deleting -----------------------------------------------------------------------------

    def delete(self, name: str) -> None:
        self._call(self._delete(name))

    async def _delete(self, name: str) -> None:
        key = self._key(name)
        if self.object_lock is None:
            await self._head(name)  # S3 deletes a missing key without complaint; we must not
            await self._guard(
                f"delete {name}", self._client.delete_object(Bucket=self.bucket, Key=key)
            )
            return
        # A locked bucket is versioned: deleting the key would only add a delete marker and
        # keep the data (and its cost). Delete the versions themselves; a version under
        # retention is refused, which is the lock doing its job.
        resp = await self._guard(
            f"delete {name}",
            self._client.list_object_versions(Bucket=self.bucket, Prefix=key),
        )
        versions = [v for v in resp.get("Versions", []) if v.get("Key") == key]
        markers = [v for v in resp.get("DeleteMarkers", []) if v.get("Key") == key]
        if not versions:
            raise ObjectNotFound(f"object {name} is missing from {self.location}")
        for version in versions + markers:
            try:
                await self._client.delete_object(
                    Bucket=self.bucket, Key=key, VersionId=version["VersionId"]
                )
            except ClientError as exc:
                if error_code(exc) == "AccessDenied":
                    raise ObjectLocked(
                        f"{name} is under Object Lock retention; it can be deleted once its "
                        "retention ends"
                    ) from None
                raise self._error(exc, f"delete {name}") from None
            except Exception as exc:
                raise self._error(exc, f"delete {name}") from None

    # -- leftovers ----------------------------------------------------------------------------

    def remove_leftovers(self, older_than: float = 0.0) -> int:
        """Abort multipart uploads of writers that died (invisible, but stored and billed)."""
        return self._call(self._remove_leftovers(older_than))

    async def _remove_leftovers(self, older_than: float) -> int:
        removed = 0
        args: dict[str, Any] = {"Bucket": self.bucket, "Prefix": self._root}
        cutoff = datetime.now(UTC) - timedelta(seconds=older_than)
        while True:
            resp = await self._guard(
                "list unfinished uploads", self._client.list_multipart_uploads(**args)
            )
            for upload in resp.get("Uploads", []):
                if upload["Initiated"] <= cutoff:
                    await self._abort(upload["Key"], upload["UploadId"])
                    removed += 1
            if not resp.get("IsTruncated"):
                return removed
            args["KeyMarker"] = resp.get("NextKeyMarker")
            args["UploadIdMarker"] = resp.get("NextUploadIdMarker")
