"""Changed block tracking through the Kubernetes SnapshotMetadata service (mover_k8s.cbt): the
service found from a VolumeSnapshot as KEP-3314 lays out, a token of the caller's own
ServiceAccount for the service's audience (TokenRequest, on the emulator), and the gRPC calls
over TLS to a test service (tests/k8s/cbt_server.py) that authenticates each call with that
token. The ranges come out as a `--changed-ranges` file that mover.api reads back; every
promise the stream makes is checked, and a broken one is refused rather than trusted."""

from __future__ import annotations

import base64
import io
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from mover import api as mover_api
from mover_k8s import api
from mover_k8s.cbt import snapshot_metadata_pb2 as pb
from mover_k8s.cbt.client import Endpoint, MetadataClient
from mover_k8s.cbt.discovery import (
    SERVICE_ACCOUNT,
    SNAPSHOT_METADATA_SERVICE,
    find_endpoint,
    request_token,
    snapshot_handle,
)
from mover_k8s.errors import CbtError, KubeError
from mover_k8s.k8s.client import Kube, Obj

from .cbt_server import MetadataServer
from .emulator import ServedCluster
from .test_snapshot_exposer import snapshot_crd

DRIVER = "hostpath.csi.k8s.io"
AUDIENCE = "cbt-audience-1"
NS = "db"
MIB = 1 << 20
CAPACITY = 64 * MIB
CHANGED = [(0, 4096), (MIB, 65536), (8 * MIB, 4096), (8 * MIB + 8192, 4096), (63 * MIB, MIB)]
ALLOCATED = [(0, 2 * MIB), (10 * MIB, 3 * MIB), (60 * MIB, 4 * MIB)]


def sms_crd() -> Obj:
    crd = snapshot_crd("snapshotmetadataservices", "SnapshotMetadataService", "Cluster")
    crd["metadata"]["name"] = "snapshotmetadataservices.cbt.storage.k8s.io"
    crd["spec"]["group"] = "cbt.storage.k8s.io"
    crd["spec"]["versions"][0]["name"] = "v1beta1"
    return crd


def snapshot(kube: Kube, name: str, handle: str) -> None:
    """A VolumeSnapshot of claim `data` bound to its content, as the snapshot controller and
    the CSI driver leave them once ready."""
    content = f"snapcontent-{name}"
    kube.create(
        api.VOLUME_SNAPSHOT_CONTENT,
        {
            "metadata": {"name": content},
            "spec": {
                "driver": DRIVER,
                "deletionPolicy": "Delete",
                "source": {"volumeHandle": "vol-1"},
                "volumeSnapshotRef": {"namespace": NS, "name": name},
            },
        },
    )
    kube.patch_status(
        api.VOLUME_SNAPSHOT_CONTENT, None, content, {"snapshotHandle": handle, "readyToUse": True}
    )
    kube.create(
        api.VOLUME_SNAPSHOT,
        {
            "metadata": {"name": name, "namespace": NS},
            "spec": {"source": {"persistentVolumeClaimName": "data"}},
        },
    )
    kube.patch_status(
        api.VOLUME_SNAPSHOT,
        NS,
        name,
        {"boundVolumeSnapshotContentName": content, "readyToUse": True},
    )


class Cluster:
    def __init__(self, served: ServedCluster, kube: Kube, server: MetadataServer) -> None:
        self.served = served
        self.kube = kube
        self.server = server

    def token(self) -> str:
        return request_token(self.kube, "mover", "mover-agent", AUDIENCE)

    def client(self, endpoint: Endpoint | None = None, **options: float) -> MetadataClient:
        found = endpoint or find_endpoint(self.kube, NS, "snap-2")
        assert found is not None
        return MetadataClient(found, self.token, **options)  # type: ignore[arg-type]


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    served = ServedCluster().start()
    kube = Kube.at(served.url)

    def authenticate(token: str, audience: str) -> bool:
        return served.cluster.token_holder(token, audience) == ("mover", "mover-agent")

    server = MetadataServer(AUDIENCE, authenticate).start()
    try:
        for plural, kind, scope in [
            ("volumesnapshots", "VolumeSnapshot", "Namespaced"),
            ("volumesnapshotcontents", "VolumeSnapshotContent", "Cluster"),
        ]:
            kube.create(api.CRD, snapshot_crd(plural, kind, scope))
        kube.create(api.CRD, sms_crd())
        for ns in ("mover", NS):
            kube.create(api.NAMESPACE, {"metadata": {"name": ns}})
        kube.create(SERVICE_ACCOUNT, {"metadata": {"name": "mover-agent", "namespace": "mover"}})
        kube.create(
            SNAPSHOT_METADATA_SERVICE,
            {
                "metadata": {"name": DRIVER},
                "spec": {
                    "address": server.address,
                    "audience": AUDIENCE,
                    "caCert": base64.b64encode(server.certificates.ca_pem).decode(),
                },
            },
        )
        snapshot(kube, "snap-1", "handle-1")
        snapshot(kube, "snap-2", "handle-2")
        server.deltas[("handle-1", NS, "snap-2")] = (CAPACITY, CHANGED)
        server.allocated[(NS, "snap-2")] = (CAPACITY, ALLOCATED)
        yield Cluster(served, kube, server)
    finally:
        server.stop()
        kube.close()
        served.stop()


def lines(ranges: list[tuple[int, int]]) -> str:
    return "".join(f"{o} {n}\n" for o, n in ranges)


def test_changed_ranges_come_from_the_drivers_service_over_tls_with_an_audience_token(
    cluster: Cluster, tmp_path: Path
) -> None:
    endpoint = find_endpoint(cluster.kube, NS, "snap-2")
    assert endpoint == Endpoint(
        cluster.server.address, cluster.server.certificates.ca_pem, AUDIENCE
    )
    base = snapshot_handle(cluster.kube, NS, "snap-1")
    assert base == "handle-1"
    out = tmp_path / "changed"
    with cluster.client(endpoint) as client, out.open("w") as f:
        listing = client.delta(NS, base, "snap-2", f)
    assert out.read_text() == lines(CHANGED)
    assert (listing.capacity, listing.ranges, listing.metadata_type) == (
        CAPACITY,
        len(CHANGED),
        "VARIABLE_LENGTH",
    )
    assert listing.bytes == sum(n for _, n in CHANGED)
    assert listing.resumed == 0
    assert cluster.server.calls == [("GetMetadataDelta", 0)]
    # What the backup reads back: the same ranges, touching ones merged.
    with mover_api.read_ranges(str(out), CAPACITY, "--changed-ranges") as ranges:
        assert ranges.total == listing.bytes
        assert list(ranges) == [(o, o + n) for o, n in CHANGED]


def test_allocated_ranges_in_fixed_blocks(cluster: Cluster) -> None:
    cluster.server.fixed_block = MIB
    out = io.StringIO()
    with cluster.client() as client:
        listing = client.allocated(NS, "snap-2", out)
    blocks = [(o, MIB) for start, n in ALLOCATED for o in range(start, start + n, MIB)]
    assert out.getvalue() == lines(blocks)
    assert listing.metadata_type == "FIXED_LENGTH"
    assert listing.bytes == sum(n for _, n in ALLOCATED)


def test_a_stream_cut_short_resumes_after_the_last_range_received(cluster: Cluster) -> None:
    cluster.server.cut_after = 1  # one message of 3 ranges, then UNAVAILABLE
    out = io.StringIO()
    with cluster.client(backoff=0.01) as client:
        listing = client.delta(NS, "handle-1", "snap-2", out)
    assert out.getvalue() == lines(CHANGED)
    end_of_third = CHANGED[2][0] + CHANGED[2][1]
    assert cluster.server.calls == [("GetMetadataDelta", 0), ("GetMetadataDelta", end_of_third)]
    assert listing.resumed == 1


def test_an_expired_token_is_replaced_once(cluster: Cluster) -> None:
    asked: list[str] = []

    def token() -> str:
        asked.append(cluster.token())
        if len(asked) == 1:
            cluster.served.cluster.expire_tokens()  # it expires before the call arrives
        return asked[-1]

    endpoint = find_endpoint(cluster.kube, NS, "snap-2")
    assert endpoint is not None
    out = io.StringIO()
    with MetadataClient(endpoint, token, backoff=0.01) as client:
        client.delta(NS, "handle-1", "snap-2", out)
    assert len(asked) == 2
    assert out.getvalue() == lines(CHANGED)


def test_a_token_for_another_audience_is_refused(cluster: Cluster) -> None:
    endpoint = find_endpoint(cluster.kube, NS, "snap-2")
    assert endpoint is not None

    def wrong() -> str:
        return request_token(cluster.kube, "mover", "mover-agent", "someone-else")

    with (
        MetadataClient(endpoint, wrong, attempts=2, backoff=0.01) as client,
        pytest.raises(CbtError, match="UNAUTHENTICATED"),
    ):
        client.delta(NS, "handle-1", "snap-2", io.StringIO())


def message(capacity: int, *blocks: tuple[int, int], kind: int = pb.VARIABLE_LENGTH) -> Obj:
    return {"capacity": capacity, "blocks": blocks, "kind": kind}


@pytest.mark.parametrize(
    ("messages", "problem"),
    [
        ([message(CAPACITY, (0, 4096), (0, 4096))], "starts before the end of the previous"),
        ([message(CAPACITY, (8192, 4096)), message(CAPACITY, (4096, 4096))], "starts before"),
        ([message(CAPACITY, (CAPACITY - 4096, 8192))], "ends past the volume"),
        ([message(CAPACITY, (0, 0))], "must be positive"),
        ([message(CAPACITY, (-4096, 4096))], "must be positive"),
        ([message(CAPACITY, (0, 4096)), message(2 * CAPACITY, (8192, 4096))], "changed"),
        (
            [message(CAPACITY, (0, 4096)), message(CAPACITY, (8192, 4096), kind=pb.FIXED_LENGTH)],
            "changed",
        ),
        ([message(CAPACITY, (0, 4096), kind=pb.UNKNOWN)], "neither FIXED_LENGTH"),
        ([message(0)], "volume capacity 0"),
        ([], "sent no answer"),
    ],
)
def test_a_list_that_breaks_the_streams_promises_is_refused(
    cluster: Cluster, messages: list[Obj], problem: str
) -> None:
    cluster.server.bad = [
        pb.GetMetadataDeltaResponse(
            block_metadata_type=m["kind"],
            volume_capacity_bytes=m["capacity"],
            block_metadata=[pb.BlockMetadata(byte_offset=o, size_bytes=n) for o, n in m["blocks"]],
        )
        for m in messages
    ]
    with cluster.client() as client, pytest.raises(CbtError, match=problem) as caught:
        client.delta(NS, "handle-1", "snap-2", io.StringIO())
    assert "snap-2" in str(caught.value)


def test_a_service_whose_certificate_the_ca_did_not_sign_is_not_trusted(
    cluster: Cluster,
) -> None:
    other = MetadataServer(AUDIENCE, lambda token, audience: True).start()
    try:
        # The address of the real service, with another CA: the handshake must fail.
        endpoint = Endpoint(cluster.server.address, other.certificates.ca_pem, AUDIENCE)
        with (
            MetadataClient(endpoint, cluster.token, attempts=2, backoff=0.01) as client,
            pytest.raises(CbtError, match="UNAVAILABLE"),
        ):
            client.delta(NS, "handle-1", "snap-2", io.StringIO())
    finally:
        other.stop()
    assert cluster.server.calls == []


def test_an_unknown_base_is_the_services_error_named(cluster: Cluster) -> None:
    with cluster.client() as client, pytest.raises(CbtError, match="INVALID_ARGUMENT"):
        client.delta(NS, "handle-0", "snap-2", io.StringIO())


def test_no_service_for_the_driver_means_no_changed_block_tracking(cluster: Cluster) -> None:
    cluster.kube.delete(SNAPSHOT_METADATA_SERVICE, None, DRIVER)
    assert find_endpoint(cluster.kube, NS, "snap-2") is None
    cluster.kube.delete(api.CRD, None, "snapshotmetadataservices.cbt.storage.k8s.io")
    assert find_endpoint(cluster.kube, NS, "snap-2") is None


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ({"audience": AUDIENCE, "caCert": ""}, "lacks spec.address"),
        ({"address": "x:1", "audience": AUDIENCE, "caCert": "not base64!"}, "not base64"),
        (
            {"address": "x:1", "audience": AUDIENCE, "caCert": base64.b64encode(b"x").decode()},
            "no PEM",
        ),
    ],
)
def test_a_malformed_service_object_is_named(cluster: Cluster, spec: Obj, problem: str) -> None:
    service = cluster.kube.get(SNAPSHOT_METADATA_SERVICE, None, DRIVER)
    service["spec"] = spec
    cluster.kube.replace(SNAPSHOT_METADATA_SERVICE, service)
    with pytest.raises(CbtError, match=problem):
        find_endpoint(cluster.kube, NS, "snap-2")


def test_snapshots_that_are_missing_or_unbound_are_named(cluster: Cluster) -> None:
    with pytest.raises(CbtError, match="db/snap-9 not found"):
        snapshot_handle(cluster.kube, NS, "snap-9")
    cluster.kube.create(
        api.VOLUME_SNAPSHOT,
        {"metadata": {"name": "snap-3", "namespace": NS}, "spec": {}},
    )
    with pytest.raises(CbtError, match="not bound to a content yet"):
        find_endpoint(cluster.kube, NS, "snap-3")


def test_a_token_for_a_service_account_that_does_not_exist_is_refused(cluster: Cluster) -> None:
    with pytest.raises(KubeError) as caught:
        request_token(cluster.kube, "mover", "nobody", AUDIENCE)
    assert caught.value.status == 404


def test_the_committed_python_module_is_what_the_proto_generates(tmp_path: Path) -> None:
    generate = pytest.importorskip("mover_k8s.cbt.generate")
    pytest.importorskip("grpc_tools", reason="grpcio-tools (the test extra) regenerates it")
    with tempfile.TemporaryDirectory(dir=tmp_path) as out:
        generate.generate(Path(out))
        for name in generate.OUTPUTS:
            assert (Path(out) / name).read_bytes() == (generate.HERE / name).read_bytes(), name
