"""What S3's replies mean, for mover.storage.s3: every failure classified once into mover's
errors, and ETags checked against the MD5 of what was sent.

Classification: ObjectNotFound; StorageError(temporary=True) for throttling (503 SlowDown),
500/502/504, 429, connection errors, timeouts and damaged transfers; everything else permanent,
with one line that says what to do (a missing bucket, wrong credentials, another region).
Anything else is a bug and is raised as it is.
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

import aiohttp
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionError,
    HTTPClientError,
    IncompleteReadError,
    NoCredentialsError,
    PartialCredentialsError,
)

from mover.errors import ObjectNotFound, StorageError

# Error codes worth a retry; plus any 500, 502, 503, 504 and 429.
TEMPORARY_CODES = {
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestTimeout",
    "RequestTimeoutException",
    "InternalError",
    "ServiceUnavailable",
    "BadDigest",  # the body was damaged on the way: re-sending fixes it
    "XAmzContentSHA256Mismatch",
    "IncompleteBody",
    "OperationAborted",
}
DENIED_CODES = {
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "InvalidToken",
    "ExpiredToken",
    "403",
}


def md5(data: bytes | memoryview) -> bytes:
    return hashlib.md5(data, usedforsecurity=False).digest()


def error_code(exc: ClientError) -> str:
    """The reply's error code ("NoSuchKey", "SlowDown", ...); "" when it has none."""
    return str(exc.response.get("Error", {}).get("Code", ""))


def http_status(exc: ClientError) -> int:
    """The reply's HTTP status; 0 when unknown."""
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)


def _where(endpoint: str | None) -> str:
    return f" at {endpoint}" if endpoint else ""


def missing_bucket(bucket: str, endpoint: str | None) -> StorageError:
    return StorageError(
        f"bucket {bucket} does not exist{_where(endpoint)}; create it first "
        "(mover never creates buckets)"
    )


def classify(
    exc: BaseException, action: str, *, bucket: str, location: str, endpoint: str | None
) -> StorageError:
    """The error that the user reads and retries see for `exc`, met trying to `action`
    (e.g. "write data/ab/…"); a StorageError is returned as it is. Raises `exc` itself when it
    is none of the failures a store or a network gives (a bug)."""
    if isinstance(exc, StorageError):
        return exc
    if isinstance(exc, ClientError):
        return _classify_reply(exc, action, bucket=bucket, location=location, endpoint=endpoint)
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return StorageError(
            "no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or "
            "AWS_PROFILE, or run where an instance/pod role provides them"
        )
    if isinstance(exc, ConnectionError):  # includes EndpointConnectionError, timeouts
        return StorageError(
            f"cannot reach the S3 endpoint {endpoint or '(AWS default)'}: {exc}",
            temporary=True,
        )
    if isinstance(
        exc,
        HTTPClientError
        | IncompleteReadError
        | aiohttp.ClientError
        | asyncio.TimeoutError
        | OSError,
    ):
        return StorageError(f"cannot {action}: connection failed ({exc})", temporary=True)
    if isinstance(exc, BotoCoreError):
        return StorageError(f"cannot {action}: {exc}")
    raise exc


def _classify_reply(
    exc: ClientError, action: str, *, bucket: str, location: str, endpoint: str | None
) -> StorageError:
    """An error reply from the store, by its code and HTTP status."""
    error = exc.response.get("Error", {})
    code = error_code(exc)
    status = http_status(exc)
    message = str(error.get("Message", "") or exc)
    if code in ("NoSuchKey", "404", "NotFound"):
        return ObjectNotFound(f"cannot {action}: it is missing from {location}")
    if code == "NoSuchBucket":
        return missing_bucket(bucket, endpoint)
    if code in TEMPORARY_CODES or status in (429, 500, 502, 503, 504):
        return StorageError(f"cannot {action}: {code or status} ({message})", temporary=True)
    if code in DENIED_CODES or status == 403:
        return StorageError(
            f"access denied to s3://{bucket}{_where(endpoint)} ({code}); check the "
            "credentials (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_PROFILE) "
            "and the bucket's policy"
        )
    if code in ("PermanentRedirect", "301", "AuthorizationHeaderMalformed"):
        return StorageError(
            f"bucket {bucket} is in another region{_where(endpoint)}; pass its "
            "region with --s3-region"
        )
    return StorageError(f"cannot {action}: {code or status} ({message})")


def conditional_refused(exc: ClientError) -> bool:
    """The store does not implement conditional writes (If-None-Match: *)."""
    return error_code(exc) == "NotImplemented" or http_status(exc) == 501


def etag_of(resp: dict[str, Any]) -> str:
    return str(resp.get("ETag", "")).strip('"')


def etag_is_md5(resp: dict[str, Any]) -> bool:
    """Whether the reply's ETag is derived from the MD5 of the content: not with SSE-KMS or
    SSE-C."""
    if resp.get("SSECustomerAlgorithm"):
        return False
    return str(resp.get("ServerSideEncryption", "")) in ("", "AES256")


def expected_etag(body: bytes | memoryview, etag: str, part_size: int) -> str | None:
    """The ETag `body` would have as stored: its MD5, or for a multipart object written
    with `part_size` parts the MD5 of the parts' MD5s; None when that cannot be known."""
    if "-" not in etag:
        return md5(body).hex()
    parts = [md5(body[i : i + part_size]) for i in range(0, len(body), part_size)]
    if etag.rsplit("-", 1)[1] != str(len(parts)):
        return None  # written with another part size
    return f"{md5(b''.join(parts)).hex()}-{len(parts)}"
