"""A client of the Kubernetes SnapshotMetadata service (KEP-3314): which byte ranges of a CSI
snapshot hold data (GetMetadataAllocated), and which changed between two snapshots of one
volume (GetMetadataDelta).

The answer is a gRPC stream of range lists. What the stream promises is checked as it arrives,
because a wrong list means a backup that silently misses data: every range has a positive size
and lies within the volume, ranges come in ascending order without overlaps across messages,
the capacity and the metadata type never change mid-stream. A stream that breaks it is refused
with CbtError, and the caller reads the whole volume instead.

Ranges are written as they arrive to a text file of `OFFSET LENGTH` lines, the format of
`mover backup --changed-ranges/--allocated-ranges` (mover.api.read_ranges reads it back and
checks it once more): memory stays O(1) whatever the volume's size, and the file can be kept to
see what a backup was told.

A stream cut short by a temporary failure (UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED,
ABORTED) is resumed from the end of the last range received, as the service allows
(`starting_offset`), up to `attempts` times; UNAUTHENTICATED asks `token` for a new token once
per failure, since tokens expire. Anything else is CbtError.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO, Any, Protocol

import grpc

from mover_k8s.cbt import snapshot_metadata_pb2 as pb
from mover_k8s.errors import CbtError

SERVICE = "/snapshotmetadata.SnapshotMetadata/"
TEMPORARY = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
    }
)
TYPE_NAMES: dict[int, str] = {
    pb.FIXED_LENGTH: "FIXED_LENGTH",
    pb.VARIABLE_LENGTH: "VARIABLE_LENGTH",
}


@dataclass(frozen=True)
class Endpoint:
    """Where a CSI driver's SnapshotMetadata service listens (its SnapshotMetadataService
    object): `address` (host:port), the PEM CA bundle that signed its certificate, and the
    audience its tokens must carry."""

    address: str
    ca_cert: bytes
    audience: str


@dataclass
class Listing:
    """What one call returned: the volume's capacity, the ranges' count and bytes, the metadata
    type (FIXED_LENGTH or VARIABLE_LENGTH), and how many times the stream was resumed."""

    capacity: int = 0
    ranges: int = 0
    bytes: int = 0
    metadata_type: str = ""
    resumed: int = 0


class _Response(Protocol):
    block_metadata_type: int
    volume_capacity_bytes: int

    @property
    def block_metadata(self) -> Any: ...


class _Checker:
    """The stream's promises, checked message by message; writes accepted ranges to `out`."""

    def __init__(self, out: IO[str], what: str) -> None:
        self.out = out
        self.what = what
        self.listing = Listing()
        self.end = 0  # the end of the last range accepted: where a resumed stream starts

    def take(self, message: _Response) -> None:
        kind = message.block_metadata_type
        if kind not in TYPE_NAMES:
            self._refuse(f"block metadata type {kind} is neither FIXED_LENGTH nor VARIABLE_LENGTH")
        capacity = message.volume_capacity_bytes
        listing = self.listing
        if listing.metadata_type:
            if TYPE_NAMES[kind] != listing.metadata_type or capacity != listing.capacity:
                self._refuse("the capacity or metadata type changed in the middle of the stream")
        else:
            if capacity <= 0:
                self._refuse(f"volume capacity {capacity}")
            listing.metadata_type, listing.capacity = TYPE_NAMES[kind], capacity
        lines = []
        for block in message.block_metadata:
            offset, size = block.byte_offset, block.size_bytes
            if size <= 0 or offset < 0:
                self._refuse(f"range {offset}+{size}: offsets and sizes must be positive")
            if offset < self.end:
                self._refuse(
                    f"range {offset}+{size} starts before the end of the previous one "
                    f"(byte {self.end})"
                )
            if offset + size > capacity:
                self._refuse(f"range {offset}+{size} ends past the volume ({capacity} bytes)")
            self.end = offset + size
            listing.ranges += 1
            listing.bytes += size
            lines.append(f"{offset} {size}\n")
        self.out.write("".join(lines))

    def _refuse(self, problem: str) -> None:
        raise CbtError(f"{self.what}: the snapshot metadata service sent a bad list: {problem}")


class MetadataClient:
    """One connection to a SnapshotMetadata service. `token` returns a security token for the
    endpoint's audience (a new one on each call). Close it, or use it as a context manager."""

    def __init__(
        self,
        endpoint: Endpoint,
        token: Callable[[], str],
        *,
        attempts: int = 5,
        backoff: float = 0.5,
        timeout: float = 600.0,
        max_results: int = 0,
        server_name: str | None = None,
    ) -> None:
        self.endpoint = endpoint
        self._token = token
        self.attempts = attempts
        self.backoff = backoff
        self.timeout = timeout
        self.max_results = max_results
        options = [("grpc.ssl_target_name_override", server_name)] if server_name else []
        credentials = grpc.ssl_channel_credentials(root_certificates=endpoint.ca_cert)
        self._channel = grpc.secure_channel(endpoint.address, credentials, options=options)
        self._allocated = self._channel.unary_stream(
            SERVICE + "GetMetadataAllocated",
            request_serializer=pb.GetMetadataAllocatedRequest.SerializeToString,
            response_deserializer=pb.GetMetadataAllocatedResponse.FromString,
        )
        self._delta = self._channel.unary_stream(
            SERVICE + "GetMetadataDelta",
            request_serializer=pb.GetMetadataDeltaRequest.SerializeToString,
            response_deserializer=pb.GetMetadataDeltaResponse.FromString,
        )

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> MetadataClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def allocated(self, namespace: str, snapshot: str, out: IO[str]) -> Listing:
        """Write the ranges of VolumeSnapshot `namespace/snapshot` that hold data to `out`."""

        def call(token: str, start: int) -> Iterator[_Response]:
            request = pb.GetMetadataAllocatedRequest(
                security_token=token,
                namespace=namespace,
                snapshot_name=snapshot,
                starting_offset=start,
                max_results=self.max_results,
            )
            return iter(self._allocated(request, timeout=self.timeout))

        return self._run(call, out, f"allocated ranges of {namespace}/{snapshot}")

    def delta(self, namespace: str, base_snapshot_id: str, target: str, out: IO[str]) -> Listing:
        """Write the ranges of VolumeSnapshot `namespace/target` that may differ from the
        snapshot whose CSI handle is `base_snapshot_id` to `out`."""

        def call(token: str, start: int) -> Iterator[_Response]:
            request = pb.GetMetadataDeltaRequest(
                security_token=token,
                namespace=namespace,
                base_snapshot_id=base_snapshot_id,
                target_snapshot_name=target,
                starting_offset=start,
                max_results=self.max_results,
            )
            return iter(self._delta(request, timeout=self.timeout))

        return self._run(call, out, f"changes of {namespace}/{target} since {base_snapshot_id}")

    def _run(
        self, call: Callable[[str, int], Iterator[_Response]], out: IO[str], what: str
    ) -> Listing:
        checker = _Checker(out, what)
        token = self._token()
        failures = 0
        while True:
            try:
                for message in call(token, checker.end):
                    checker.take(message)
                    failures = 0  # progress made: a later cut gets its own attempts
                if not checker.listing.metadata_type:
                    raise CbtError(f"{what}: the snapshot metadata service sent no answer")
                return checker.listing
            except grpc.RpcError as exc:
                code = exc.code() if isinstance(exc, grpc.Call) else None
                detail = exc.details() if isinstance(exc, grpc.Call) else str(exc)
                failures += 1
                if failures >= self.attempts or (
                    code not in TEMPORARY and code is not grpc.StatusCode.UNAUTHENTICATED
                ):
                    name = code.name if code is not None else "error"
                    raise CbtError(
                        f"{what}: the snapshot metadata service at {self.endpoint.address} "
                        f"answered {name}: {detail}"
                    ) from None
                if code is grpc.StatusCode.UNAUTHENTICATED:
                    token = self._token()
                else:
                    time.sleep(self.backoff * 2 ** (failures - 1))
                checker.listing.resumed += 1
