"""A SnapshotMetadata service for tests, as a CSI driver's external-snapshot-metadata sidecar
serves it: gRPC over TLS on loopback (a certificate signed by a CA made here), each call's
security_token authenticated with `authenticate` (the emulator's TokenReview answer) for the
service's audience, and the answer streamed in messages of at most `max_results` ranges,
resuming from `starting_offset` as the KEP specifies.

Volumes are described, not stored: `allocated[(namespace, snapshot)]` and
`deltas[(base_handle, namespace, target)]` are (capacity, ranges), or `provider` works a
delta out when asked. Faults for the client's
tests: `cut_after` ends the next stream with UNAVAILABLE after that many messages (once),
`reject_next` answers the next call with UNAUTHENTICATED, `bad` replaces the next answer with
these messages verbatim.
"""

from __future__ import annotations

import datetime
import ipaddress
import threading
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from mover_k8s.cbt import snapshot_metadata_pb2 as pb

Ranges = list[tuple[int, int]]


@dataclass(frozen=True)
class Certificates:
    ca_pem: bytes
    key_pem: bytes
    cert_pem: bytes


def make_certificates(host: str = "localhost") -> Certificates:
    """A CA and a server certificate it signed, for `host` and 127.0.0.1."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mover test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    names = [x509.DNSName(host), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    return Certificates(
        ca_pem=ca.public_bytes(pem),
        key_pem=key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
        cert_pem=cert.public_bytes(pem),
    )


@dataclass
class MetadataServer:
    """The service on 127.0.0.1 (a free port); `start()` then `address`; `stop()` at the end."""

    audience: str
    authenticate: Callable[[str, str], bool]  # (token, audience) -> valid
    max_results: int = 3
    fixed_block: int = 0  # > 0: FIXED_LENGTH, every range cut into blocks of this size
    allocated: dict[tuple[str, str], tuple[int, Ranges]] = field(default_factory=dict)
    deltas: dict[tuple[str, str, str], tuple[int, Ranges]] = field(default_factory=dict)
    # Asked for a delta `deltas` lacks: (base handle, namespace, target) -> the answer or None.
    provider: Callable[[str, str, str], tuple[int, Ranges] | None] | None = None
    # Asked for the allocated ranges `allocated` lacks: (namespace, snapshot) -> the answer.
    allocated_provider: Callable[[str, str], tuple[int, Ranges] | None] | None = None
    cut_after: int | None = None
    reject_next: bool = False
    bad: list[pb.GetMetadataDeltaResponse] | None = None
    calls: list[tuple[str, int]] = field(default_factory=list)  # (method, starting_offset)
    certificates: Certificates = field(default_factory=make_certificates)
    port: int = 0
    _server: grpc.Server | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> MetadataServer:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        handlers = {
            "GetMetadataAllocated": grpc.unary_stream_rpc_method_handler(
                self._allocated,
                request_deserializer=pb.GetMetadataAllocatedRequest.FromString,
                response_serializer=pb.GetMetadataAllocatedResponse.SerializeToString,
            ),
            "GetMetadataDelta": grpc.unary_stream_rpc_method_handler(
                self._delta,
                request_deserializer=pb.GetMetadataDeltaRequest.FromString,
                response_serializer=pb.GetMetadataDeltaResponse.SerializeToString,
            ),
        }
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("snapshotmetadata.SnapshotMetadata", handlers),)
        )
        credentials = grpc.ssl_server_credentials(
            [(self.certificates.key_pem, self.certificates.cert_pem)]
        )
        self.port = server.add_secure_port("127.0.0.1:0", credentials)
        server.start()
        self._server = server
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(grace=None)

    # -- the two calls --

    def _allocated(
        self, request: pb.GetMetadataAllocatedRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.GetMetadataAllocatedResponse]:
        self._admit(
            "GetMetadataAllocated", request.security_token, request.starting_offset, context
        )
        found = self.allocated.get((request.namespace, request.snapshot_name))
        if found is None and self.allocated_provider is not None:
            found = self.allocated_provider(request.namespace, request.snapshot_name)
        if found is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"no snapshot {request.snapshot_name}")
        yield from self._answer(pb.GetMetadataAllocatedResponse, found, request, context)

    def _delta(
        self, request: pb.GetMetadataDeltaRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.GetMetadataDeltaResponse]:
        self._admit("GetMetadataDelta", request.security_token, request.starting_offset, context)
        key = (request.base_snapshot_id, request.namespace, request.target_snapshot_name)
        with self._lock:
            bad, self.bad = self.bad, None
        if bad is not None:
            yield from bad
            return
        found = self.deltas.get(key)
        if found is None and self.provider is not None:
            found = self.provider(*key)
        if found is None:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"no delta for {key}")
        yield from self._answer(pb.GetMetadataDeltaResponse, found, request, context)

    def _admit(self, method: str, token: str, start: int, context: grpc.ServicerContext) -> None:
        with self._lock:
            self.calls.append((method, start))
            reject, self.reject_next = self.reject_next, False
        if reject or not self.authenticate(token, self.audience):
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "the security token is not valid")

    def _answer(
        self,
        message: type[pb.GetMetadataAllocatedResponse] | type[pb.GetMetadataDeltaResponse],
        found: tuple[int, Ranges] | None,
        request: pb.GetMetadataAllocatedRequest | pb.GetMetadataDeltaRequest,
        context: grpc.ServicerContext,
    ) -> Iterator[pb.GetMetadataAllocatedResponse | pb.GetMetadataDeltaResponse]:
        assert found is not None
        capacity, ranges = found
        blocks = [
            (max(o, request.starting_offset), o + n)
            for o, n in self._blocks(ranges)
            if o + n > request.starting_offset
        ]
        kind = pb.FIXED_LENGTH if self.fixed_block else pb.VARIABLE_LENGTH
        per = request.max_results or self.max_results
        with self._lock:
            cut, self.cut_after = self.cut_after, None
        for sent, i in enumerate(range(0, len(blocks), per)):
            if cut is not None and sent == cut:
                context.abort(grpc.StatusCode.UNAVAILABLE, "the sidecar restarted")
            yield message(
                block_metadata_type=kind,
                volume_capacity_bytes=capacity,
                block_metadata=[
                    pb.BlockMetadata(byte_offset=s, size_bytes=e - s)
                    for s, e in blocks[i : i + per]
                ],
            )

    def _blocks(self, ranges: Ranges) -> Ranges:
        if not self.fixed_block:
            return ranges
        out: Ranges = []
        for offset, length in ranges:
            first = offset - offset % self.fixed_block
            for start in range(first, offset + length, self.fixed_block):
                out.append((start, self.fixed_block))
        return out
