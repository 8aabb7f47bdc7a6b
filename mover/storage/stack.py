"""The one place where a repository URL becomes a stack of storage layers.

    metrics-visible retries        RetryingBackend      (outermost: a retry passes every layer)
    counts requests and bytes      MetricsBackend       (each attempt, as the link saw it)
    bandwidth                      ThrottlingBackend    (waits before taking a slot)
    calls in flight                LimitingBackend
    the store                      LocalBackend | S3Backend | MemoryBackend

URLs: a path (or file://PATH) is a local directory; s3://BUCKET[/PREFIX] is S3 or any
S3-compatible store; memory://NAME is an in-process store for tests.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from mover.errors import UsageError
from mover.storage.base import Backend
from mover.storage.limiting import LimitingBackend
from mover.storage.local import LocalBackend
from mover.storage.memory import MemoryBackend
from mover.storage.metrics import Metrics, MetricsBackend
from mover.storage.retrying import RetryingBackend, RetryPolicy
from mover.storage.s3config import (
    DEFAULT_MULTIPART_THRESHOLD,
    DEFAULT_PART_SIZE,
    ObjectLock,
    S3Config,
)
from mover.storage.throttling import ThrottlingBackend
from mover.storage.wrapper import layers

DEFAULT_S3_CONCURRENCY = 16
LOCAL_CONCURRENCY = 64  # a local directory is bounded by the disk, not by connections


@dataclass(frozen=True)
class Location:
    scheme: str  # "local", "s3" or "memory"
    path: str = ""  # local directory, or memory store name
    bucket: str = ""
    prefix: str = ""


@dataclass(frozen=True)
class StorageOptions:
    s3_endpoint: str | None = None
    s3_region: str | None = None
    s3_path_style: bool = False
    s3_profile: str | None = None
    s3_access_key: str | None = None
    s3_secret_key: str | None = None
    s3_session_token: str | None = None
    s3_concurrency: int = DEFAULT_S3_CONCURRENCY
    s3_multipart_threshold: int = DEFAULT_MULTIPART_THRESHOLD
    s3_part_size: int = DEFAULT_PART_SIZE
    s3_list_page_size: int = 1000
    limit_upload: float | None = None  # bytes/s; None: unlimited
    limit_download: float | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)


def parse_location(url: str) -> Location:
    if not url:
        raise UsageError("no repository given: pass --repo PATH or s3://BUCKET/PREFIX")
    if "://" not in url:
        return Location("local", path=url)
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "file":
        return Location("local", path=parts.path)
    if scheme == "memory":
        return Location("memory", path=parts.netloc + parts.path)
    if scheme == "s3":
        bucket = parts.netloc
        if not bucket or parts.query or parts.fragment:
            raise UsageError(f"repository {url!r}: write s3://BUCKET or s3://BUCKET/PREFIX")
        return Location("s3", bucket=bucket, prefix=parts.path.strip("/"))
    raise UsageError(
        f"repository {url!r}: unknown scheme {parts.scheme!r}; use a directory, "
        "s3://BUCKET/PREFIX, or memory://NAME"
    )


def s3_config(location: Location, options: StorageOptions) -> S3Config:
    env = os.environ
    return S3Config(
        bucket=location.bucket,
        prefix=location.prefix,
        endpoint=options.s3_endpoint,
        region=options.s3_region,
        path_style=options.s3_path_style,
        profile=options.s3_profile,
        access_key=options.s3_access_key or env.get("MOVER_S3_ACCESS_KEY_ID"),
        secret_key=options.s3_secret_key or env.get("MOVER_S3_SECRET_ACCESS_KEY"),
        session_token=options.s3_session_token or env.get("MOVER_S3_SESSION_TOKEN"),
        connections=options.s3_concurrency,
        multipart_threshold=options.s3_multipart_threshold,
        part_size=options.s3_part_size,
        list_page_size=options.s3_list_page_size,
    )


def open_base(location: Location, options: StorageOptions) -> Backend:
    if location.scheme == "local":
        return LocalBackend(Path(location.path))
    if location.scheme == "memory":
        return MemoryBackend.named(location.path)
    from mover.storage.s3 import S3Backend  # aiobotocore costs ~0.2 s to import: only for S3

    s3 = S3Backend(s3_config(location, options))
    try:
        s3.check_bucket()
    except BaseException:
        s3.close()
        raise
    return s3


def open_backend(
    url: str, options: StorageOptions | None = None, metrics: Metrics | None = None
) -> Backend:
    """The composed stack for `url`; close() it when done (it closes every layer)."""
    options = options or StorageOptions()
    location = parse_location(url)
    base = open_base(location, options)
    concurrency = options.s3_concurrency if location.scheme == "s3" else LOCAL_CONCURRENCY
    backend: Backend = LimitingBackend(base, concurrency)
    backend = ThrottlingBackend(backend, options.limit_upload, options.limit_download)
    metrics = metrics or Metrics()
    backend = MetricsBackend(backend, metrics)
    return RetryingBackend(backend, options.retry, metrics)


def base_of(backend: Backend) -> Backend:
    """The store at the bottom of a stack."""
    *_, last = layers(backend)
    return last


def metrics_of(backend: Backend) -> Metrics | None:
    for layer in layers(backend):
        if isinstance(layer, MetricsBackend):
            return layer.metrics
    return None


def throttle_of(backend: Backend) -> ThrottlingBackend | None:
    for layer in layers(backend):
        if isinstance(layer, ThrottlingBackend):
            return layer
    return None


def apply_object_lock(backend: Backend, lock: ObjectLock | None) -> bool:
    """Sets retention on the S3 store under `backend`; False when it is not S3."""
    set_lock = getattr(base_of(backend), "set_object_lock", None)
    if set_lock is None:
        return False
    set_lock(lock)
    return True
