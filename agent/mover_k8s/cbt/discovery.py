"""What a changed-block call needs from the Kubernetes API, found the way KEP-3314 lays out:

- the CSI driver of a VolumeSnapshot (its bound VolumeSnapshotContent's spec.driver);
- that driver's SnapshotMetadataService object (cluster-scoped, named after the driver, group
  cbt.storage.k8s.io): the service's address, CA bundle and token audience; no such object
  means the driver offers no changed block tracking;
- the CSI handle of the base snapshot (its content's status.snapshotHandle): GetMetadataDelta
  names the base by handle, so the base VolumeSnapshot may be deleted once its handle is known;
- a security token for the audience, from the TokenRequest API for the caller's own
  ServiceAccount (`create` on serviceaccounts/token, for that one name: docs/security.md).
"""

from __future__ import annotations

import base64
import binascii

from mover_k8s import api, views
from mover_k8s.cbt.client import Endpoint
from mover_k8s.errors import CbtError, NotFound
from mover_k8s.k8s.client import Kube, Obj, ResourceType
from mover_k8s.views import ContentView, SnapshotView

SNAPSHOT_METADATA_SERVICE = ResourceType(
    "cbt.storage.k8s.io", "v1beta1", "snapshotmetadataservices", "SnapshotMetadataService", False
)
SERVICE_ACCOUNT = ResourceType("", "v1", "serviceaccounts", "ServiceAccount", True)
TOKEN_SECONDS = 600  # as the KEP's reference client asks: long enough for one listing


def snapshot_content(kube: Kube, namespace: str, snapshot: str) -> Obj:
    """The VolumeSnapshotContent bound to VolumeSnapshot `namespace/snapshot`; CbtError when the
    snapshot or its content is missing or not bound yet."""
    found = kube.find(api.VOLUME_SNAPSHOT, namespace, snapshot)
    if found is None:
        raise CbtError(f"VolumeSnapshot {namespace}/{snapshot} not found")
    bound = SnapshotView.of(found).bound_content
    if not bound:
        raise CbtError(f"VolumeSnapshot {namespace}/{snapshot} is not bound to a content yet")
    content = kube.find(api.VOLUME_SNAPSHOT_CONTENT, None, bound)
    if content is None:
        raise CbtError(f"VolumeSnapshotContent {bound} of {namespace}/{snapshot} not found")
    return content


def snapshot_handle(kube: Kube, namespace: str, snapshot: str) -> str:
    """The CSI handle of VolumeSnapshot `namespace/snapshot`, which GetMetadataDelta takes as
    the base."""
    handle = ContentView.of(snapshot_content(kube, namespace, snapshot)).handle
    if not handle:
        raise CbtError(f"VolumeSnapshot {namespace}/{snapshot} has no snapshot handle yet")
    return handle


def find_endpoint(kube: Kube, namespace: str, snapshot: str) -> Endpoint | None:
    """The SnapshotMetadata service of the CSI driver that made VolumeSnapshot
    `namespace/snapshot`; None when the driver publishes none (or the cluster does not serve
    the kind): changed block tracking is then not offered, which is not an error."""
    driver = ContentView.of(snapshot_content(kube, namespace, snapshot)).driver
    if not driver:
        raise CbtError(f"the content of VolumeSnapshot {namespace}/{snapshot} names no driver")
    try:
        service = kube.find(SNAPSHOT_METADATA_SERVICE, None, driver)
    except NotFound:  # the CRD is not installed
        return None
    if service is None:
        return None
    spec = views.spec(service)
    address, audience, ca = spec.get("address"), spec.get("audience"), spec.get("caCert")
    if not (isinstance(address, str) and address and isinstance(audience, str) and audience):
        raise CbtError(f"SnapshotMetadataService {driver} lacks spec.address or spec.audience")
    try:  # []byte in the Go type: base64 in JSON
        ca_cert = base64.b64decode(ca or "", validate=True)
    except (binascii.Error, ValueError):
        raise CbtError(f"SnapshotMetadataService {driver}: spec.caCert is not base64") from None
    if b"BEGIN CERTIFICATE" not in ca_cert:
        raise CbtError(f"SnapshotMetadataService {driver}: spec.caCert holds no PEM certificate")
    return Endpoint(address, ca_cert, audience)


def request_token(
    kube: Kube, namespace: str, service_account: str, audience: str, seconds: int = TOKEN_SECONDS
) -> str:
    """A token of ServiceAccount `namespace/service_account` for `audience`, valid `seconds`."""
    body = {
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "spec": {"audiences": [audience], "expirationSeconds": seconds},
    }
    path = SERVICE_ACCOUNT.path(namespace, service_account, "token")
    answer = kube.request("POST", path, body=body)
    token = views.status(answer).get("token")
    if not isinstance(token, str) or not token:
        raise CbtError(f"the TokenRequest for {namespace}/{service_account} returned no token")
    return token
