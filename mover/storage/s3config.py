"""Settings of the S3 backend, apart from it so that reading them does not import aiobotocore
(~0.2 s): commands on local repositories never pay for it."""

from __future__ import annotations

import os
from dataclasses import dataclass

from mover.errors import UsageError

MiB = 1 << 20
# Above this a write is a multipart upload. Packs are 16 MiB by default but end up to one
# chunk (1 MiB) larger, and several upload at once (packwriter.MAX_UPLOADS): a threshold above
# a full pack keeps each pack one PUT (measured with 16 MiB: every pack went up as 3 parts).
# Larger objects (packs of repositories made with a big --pack-size) go up in parts.
DEFAULT_MULTIPART_THRESHOLD = 64 * MiB
DEFAULT_PART_SIZE = 8 * MiB
MIN_PART_SIZE = 5 * MiB  # S3's minimum for every part but the last
PARTS_IN_FLIGHT = 4  # per object; the connection pool bounds the total
LOCK_MODES = ("COMPLIANCE", "GOVERNANCE")


@dataclass(frozen=True)
class ObjectLock:
    """S3 Object Lock retention applied to every object written: `mode` COMPLIANCE (no one can
    delete before the date) or GOVERNANCE (only with the bypass permission)."""

    mode: str
    days: int

    def __post_init__(self) -> None:
        if self.mode not in LOCK_MODES:
            raise UsageError(f"object lock mode {self.mode!r}: use COMPLIANCE or GOVERNANCE")
        if self.days < 1:
            raise UsageError("object lock retention must be at least 1 day")


@dataclass(frozen=True)
class S3Config:
    bucket: str
    prefix: str = ""
    endpoint: str | None = None  # None: AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL, then AWS
    region: str | None = None  # None: the AWS chain (AWS_REGION, profile), then us-east-1
    path_style: bool = False
    profile: str | None = None
    access_key: str | None = None  # None: the standard AWS credential chain
    secret_key: str | None = None
    session_token: str | None = None
    connections: int = 16
    multipart_threshold: int = DEFAULT_MULTIPART_THRESHOLD
    part_size: int = DEFAULT_PART_SIZE
    list_page_size: int = 1000  # keys per LIST request (S3's maximum)
    connect_timeout: float = 10.0
    read_timeout: float = 60.0

    def resolved_endpoint(self) -> str | None:
        return (
            self.endpoint
            or os.environ.get("AWS_ENDPOINT_URL_S3")
            or os.environ.get("AWS_ENDPOINT_URL")
            or None
        )
