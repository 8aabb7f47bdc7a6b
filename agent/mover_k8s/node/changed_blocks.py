"""A node agent's changed-block backup: when the controller named a base (a VolumeBackup's
spec.changedBlocks), ask the CSI driver's SnapshotMetadata service what changed between the
base and the snapshot being backed up (mover_k8s.cbt), and hand mover the ranges and the
parent snapshot, so that only they are read and the rest reuses the parent's chunks.

Any failure on the way (no service, no token, the service refuses, a list that breaks its
promises, the parent snapshot forgotten, a size that differs) means reading the whole volume,
with the reason recorded in the VolumeBackup's status.changedBlocks: the resulting snapshot is
the same either way; only the time differs.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass, field

from mover import api as mover_api
from mover.errors import MoverError
from mover_k8s.cbt.client import MetadataClient
from mover_k8s.cbt.discovery import find_endpoint, request_token
from mover_k8s.errors import KubeError
from mover_k8s.k8s.client import Kube, Obj

log = logging.getLogger("mover.k8s.agent")

SERVICE_ACCOUNT_ENV = "MOVER_SERVICE_ACCOUNT"  # the agent's own, set by the chart


@dataclass
class ChangedBlocks:
    """The outcome: `changed` for BackupOptions (None: read everything) and the status."""

    changed: mover_api.ChangedRanges | None = None
    status: Obj = field(default_factory=dict)

    def close(self) -> None:
        if self.changed is not None:
            self.changed.ranges.close()


def prepare(
    kube: Kube, namespace: str, repo: mover_api.Repository, spec: Obj, size: int
) -> ChangedBlocks:
    """What a VolumeBackup with spec.changedBlocks reads; `namespace` is the agent's own (its
    ServiceAccount's), `size` the size of the exposed snapshot."""
    base = spec.get("changedBlocks") or {}
    target = str((spec.get("source") or {}).get("volumeSnapshot") or "")
    claim_namespace = spec["pvc"]["namespace"]
    try:
        return _prepare(kube, namespace, repo, base, claim_namespace, target, size)
    except (MoverError, OSError) as exc:  # KubeError and CbtError are MoverErrors
        reason = str(exc) if not isinstance(exc, OSError) else f"ranges file: {exc.strerror}"
        log.warning(
            "changed blocks of %s/%s unavailable, reading it all: %s",
            claim_namespace,
            target,
            reason,
        )
        return ChangedBlocks(status={"used": False, "reason": reason})


def _prepare(
    kube: Kube,
    namespace: str,
    repo: mover_api.Repository,
    base: Obj,
    claim_namespace: str,
    target: str,
    size: int,
) -> ChangedBlocks:
    account = os.environ.get(SERVICE_ACCOUNT_ENV)
    if not account:
        raise KubeError(f"{SERVICE_ACCOUNT_ENV} is not set: the agent does not know its account")
    handle, parent_id = str(base.get("snapshotHandle") or ""), str(base.get("parent") or "")
    if not (handle and parent_id and target):
        raise KubeError("spec.changedBlocks needs snapshotHandle and parent, and a snapshot")
    parent = mover_api.find_snapshot(repo, parent_id)
    if parent.size != size:  # resized since: the parent's chunks do not line up
        raise KubeError(f"the volume is {size} bytes, its parent {parent_id[:8]} {parent.size}")
    endpoint = find_endpoint(kube, claim_namespace, target)
    if endpoint is None:
        raise KubeError(f"the driver of {claim_namespace}/{target} offers no SnapshotMetadata")

    def token() -> str:
        return request_token(kube, namespace, account, endpoint.audience)

    with (
        tempfile.NamedTemporaryFile("w", prefix="mover-changed-", suffix=".txt") as listed,
        MetadataClient(endpoint, token) as client,
    ):
        listing = client.delta(claim_namespace, handle, target, listed)
        listed.flush()
        if listing.capacity != size:
            raise KubeError(
                f"the service says the volume holds {listing.capacity} bytes, the snapshot "
                f"exposed here {size}"
            )
        ranges = mover_api.read_ranges(listed.name, size, "changed blocks")
    status = {
        "used": True,
        "ranges": listing.ranges,
        "bytesChanged": listing.bytes,
    }
    log.info(
        "%s/%s: %d changed range(s), %d bytes, since %s",
        claim_namespace,
        target,
        listing.ranges,
        listing.bytes,
        base.get("volumeSnapshot"),
    )
    return ChangedBlocks(mover_api.ChangedRanges(parent, ranges), status)
