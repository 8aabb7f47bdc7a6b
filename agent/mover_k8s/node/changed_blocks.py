"""A node agent's changed-block backup (KEP-3314 through mover_k8s.cbt):

- with a base (a VolumeBackup's spec.changedBlocks, named by the controller): ask the CSI
  driver's SnapshotMetadata service what changed between the base and the snapshot being backed
  up (GetMetadataDelta), and hand mover the ranges and the parent snapshot, so that only they
  are read and the rest reuses the parent's chunks; a share of what is reused is read anyway
  and compared with the parent (`MOVER_CBT_VERIFY_PERCENT`, the chart's
  changedBlockTracking.verifyPercent), so that a list that left out a change is caught;
- without one (a claim's first backup), where the driver offers the service: ask which ranges
  hold data (GetMetadataAllocated) and read only those; the rest is stored as holes.

Any failure on the way (no service, no token, the service refuses, a list that breaks its
promises, the parent snapshot forgotten, a size that differs, a change the list left out) means
reading the whole volume, with the reason in the VolumeBackup's status.changedBlocks: the
snapshot is the same either way; only the time differs.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass, field

from mover import api as mover_api
from mover.errors import MoverError
from mover_k8s.cbt.client import Endpoint, Listing, MetadataClient
from mover_k8s.cbt.discovery import find_endpoint, request_token
from mover_k8s.errors import KubeError
from mover_k8s.k8s.client import Kube, Obj
from mover_k8s.views import WorkItem

log = logging.getLogger("mover.k8s.agent")

SERVICE_ACCOUNT_ENV = "MOVER_SERVICE_ACCOUNT"  # the agent's own, set by the chart
VERIFY_ENV = "MOVER_CBT_VERIFY_PERCENT"  # share of the reused ranges read and compared
DEFAULT_VERIFY_PERCENT = 1.0


@dataclass
class ChangedBlocks:
    """The outcome, for BackupOptions (`changed` or `allocated`; neither: read everything),
    and what status.changedBlocks records."""

    changed: mover_api.ChangedRanges | None = None
    allocated: mover_api.RangeList | None = None
    status: Obj = field(default_factory=dict)

    def close(self) -> None:
        if self.changed is not None:
            self.changed.ranges.close()
        if self.allocated is not None:
            self.allocated.close()

    def refused(self, reason: str) -> None:
        """The backup found the list wrong: it is read in full instead."""
        self.close()
        self.changed = self.allocated = None
        self.status = {"used": False, "reason": reason}


def prepare(
    kube: Kube, namespace: str, repo: mover_api.Repository, item: Obj, size: int
) -> ChangedBlocks:
    """What a VolumeBackup reads; `namespace` is the agent's own (its ServiceAccount's), `size`
    the size of the exposed snapshot."""
    work = WorkItem.of(item)
    if not work.source_snapshot:
        return ChangedBlocks()
    try:
        if work.changed_blocks:
            return _delta(kube, namespace, repo, work, size)
        return _allocated(kube, namespace, work, size)
    except (MoverError, OSError) as exc:  # KubeError and CbtError are MoverErrors
        reason = str(exc) if not isinstance(exc, OSError) else f"ranges file: {exc.strerror}"
        log.warning(
            "changed blocks of %s/%s unavailable, reading it all: %s",
            work.pvc_namespace,
            work.source_snapshot,
            reason,
        )
        return ChangedBlocks(status={"used": False, "reason": reason})


def _delta(
    kube: Kube, namespace: str, repo: mover_api.Repository, work: WorkItem, size: int
) -> ChangedBlocks:
    base = work.changed_blocks
    handle, parent_id = str(base.get("snapshotHandle") or ""), str(base.get("parent") or "")
    if not (handle and parent_id):
        raise KubeError("spec.changedBlocks needs snapshotHandle and parent")
    parent = mover_api.find_snapshot(repo, parent_id)
    if parent.size != size:  # resized since: the parent's chunks do not line up
        raise KubeError(f"the volume is {size} bytes, its parent {parent_id[:8]} {parent.size}")
    endpoint = find_endpoint(kube, work.pvc_namespace, work.source_snapshot)
    if endpoint is None:
        raise KubeError(
            f"the driver of {work.pvc_namespace}/{work.source_snapshot} offers no SnapshotMetadata"
        )
    with _Listed(kube, namespace, endpoint) as listed:
        listing = listed.client.delta(work.pvc_namespace, handle, work.source_snapshot, listed.file)
        ranges = listed.ranges(listing, size)
    log.info(
        "%s/%s: %d changed range(s), %d bytes, since %s",
        work.pvc_namespace,
        work.source_snapshot,
        listing.ranges,
        listing.bytes,
        base.get("volumeSnapshot"),
    )
    verify = float(os.environ.get(VERIFY_ENV) or DEFAULT_VERIFY_PERCENT)
    changed = mover_api.ChangedRanges(parent, ranges, verify)
    status = {"used": True, "kind": "changed", "ranges": listing.ranges}
    return ChangedBlocks(changed=changed, status=status | {"bytesChanged": listing.bytes})


def _allocated(kube: Kube, namespace: str, work: WorkItem, size: int) -> ChangedBlocks:
    try:
        endpoint = find_endpoint(kube, work.pvc_namespace, work.source_snapshot)
    except KubeError as exc:
        if exc.status == 403:  # not granted: changed block tracking is off; nothing to say
            return ChangedBlocks()
        raise
    if endpoint is None:
        return ChangedBlocks()
    with _Listed(kube, namespace, endpoint) as listed:
        listing = listed.client.allocated(work.pvc_namespace, work.source_snapshot, listed.file)
        ranges = listed.ranges(listing, size)
    status = {"used": True, "kind": "allocated", "ranges": listing.ranges}
    return ChangedBlocks(allocated=ranges, status=status | {"bytesAllocated": listing.bytes})


class _Listed:
    """A client of the service with the agent's own token, and a temporary file the listing is
    written to and read back from as a `--changed-ranges` file (mover.api.read_ranges)."""

    def __init__(self, kube: Kube, namespace: str, endpoint: Endpoint) -> None:
        account = os.environ.get(SERVICE_ACCOUNT_ENV)
        if not account:
            raise KubeError(
                f"{SERVICE_ACCOUNT_ENV} is not set: the agent does not know its account"
            )

        def token() -> str:
            return request_token(kube, namespace, account, endpoint.audience)

        self.client = MetadataClient(endpoint, token)
        self.file = tempfile.NamedTemporaryFile("w", prefix="mover-ranges-", suffix=".txt")  # noqa: SIM115

    def ranges(self, listing: Listing, size: int) -> mover_api.RangeList:
        self.file.flush()
        if listing.capacity != size:
            raise KubeError(
                f"the service says the volume holds {listing.capacity} bytes, the snapshot "
                f"exposed here {size}"
            )
        return mover_api.read_ranges(self.file.name, size, "changed blocks")

    def __enter__(self) -> _Listed:
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.close()
        self.file.close()
