"""Changed-block backups on Kubernetes, end to end: the controller keeps each stored volume's
CSI snapshot as the base of the claim's next backup when the driver publishes a
SnapshotMetadataService, names the base in the next VolumeBackup, and the node agent reads only
the ranges the service lists as changed (mover_k8s.cbt over TLS, with its own audience token),
reusing the parent's chunks for the rest. The result is the snapshot a full read makes; when
the service is gone the agent reads the whole volume and says why.

The cluster's parts are played as in test_snapshot_exposer.py; the SnapshotMetadata service
(tests/k8s/cbt_server.py) works each delta out from the snapshots' data, 4 KiB at a time."""

from __future__ import annotations

import base64
import random
import tempfile
from pathlib import Path

import pytest

from mover import api as mover_api
from mover.pipeline.backup import run_backup
from mover_k8s import api
from mover_k8s.cbt.discovery import SERVICE_ACCOUNT, SNAPSHOT_METADATA_SERVICE
from mover_k8s.controller.cbt_bases import BASE_LABEL, SNAPSHOT_ANNOTATION
from mover_k8s.k8s.client import Obj

from .cbt_server import MetadataServer, Ranges
from .conftest import SYSTEM, Env, backup_body
from .test_capture import open_repo
from .test_cbt import sms_crd
from .test_snapshot_exposer import (
    DRIVER,
    SIZE,
    SNAPSHOT_CLASS,
    FakeCluster,
    components,
    csi_volume,
    snapshot_crd,
)

BLOCK = 4096
MIB = 1 << 20
AUDIENCE = "cbt.example.com"
AGENT_ACCOUNT = "mover-node"


def changed_blocks(old: bytes, new: bytes) -> Ranges:
    ranges: Ranges = []
    for offset in range(0, len(new), BLOCK):
        if old[offset : offset + BLOCK] != new[offset : offset + BLOCK]:
            if ranges and ranges[-1][0] + ranges[-1][1] == offset:
                ranges[-1] = (ranges[-1][0], ranges[-1][1] + BLOCK)
            else:
                ranges.append((offset, BLOCK))
    return ranges


def allocated_blocks(data: bytes) -> Ranges:
    """What a driver would call allocated: the 4 KiB blocks that are not all zeros."""
    zero = bytes(BLOCK)
    return changed_blocks(zero * (len(data) // BLOCK), data)


def item_of(env: Env, backup: str) -> Obj:
    (item,) = env.kube.list(
        api.VOLUME_BACKUP, SYSTEM, label_selector=f"{api.BACKUP_LABEL}={backup}"
    )
    return item


def stored(env: Env, backup: str) -> Obj:
    env.kube.create(api.BACKUP, backup_body(backup, includedNamespaces=["db"]))
    done = env.wait_phase(api.BACKUP, backup)
    assert done["status"]["phase"] == "Completed", done["status"]
    (volume,) = done["status"]["volumes"]
    return volume


def restored(env: Env, snapshot_id: str, tmp_path: Path) -> bytes:
    repo = open_repo(env.repo_dir)
    try:
        target = tmp_path / f"restored-{snapshot_id[:8]}"
        mover_api.restore(repo, mover_api.find_snapshot(repo, snapshot_id), str(target))
        return target.read_bytes()
    finally:
        repo.close()


def full_tree(env: Env, data: bytes) -> str:
    """The tree a full read of `data` stores."""
    with tempfile.NamedTemporaryFile() as image:
        image.write(data)
        image.flush()
        repo = open_repo(env.repo_dir)
        try:
            with open(image.name, "rb") as f:
                return run_backup(repo, f, "full-read").tree
        finally:
            repo.close()


def test_the_next_backup_reads_only_what_the_driver_lists_as_changed(
    env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kube = env.kube
    for plural, kind, scope in [
        ("volumesnapshots", "VolumeSnapshot", "Namespaced"),
        ("volumesnapshotclasses", "VolumeSnapshotClass", "Cluster"),
        ("volumesnapshotcontents", "VolumeSnapshotContent", "Cluster"),
    ]:
        kube.create(api.CRD, snapshot_crd(plural, kind, scope))
    kube.create(api.CRD, sms_crd())
    kube.create(
        api.STORAGE_CLASS,
        {"metadata": {"name": "csi-fast"}, "provisioner": DRIVER, "volumeBindingMode": "Immediate"},
    )
    kube.create(
        SNAPSHOT_CLASS,
        {"metadata": {"name": "csi-snap"}, "driver": DRIVER, "deletionPolicy": "Delete"},
    )
    kube.create(api.NAMESPACE, {"metadata": {"name": "db"}})
    kube.create(SERVICE_ACCOUNT, {"metadata": {"name": AGENT_ACCOUNT, "namespace": SYSTEM}})
    monkeypatch.setenv("MOVER_SERVICE_ACCOUNT", AGENT_ACCOUNT)
    csi_volume(kube, "db", "data", "pv-db")
    rng = random.Random(7)
    data = rng.randbytes(MIB) + bytes(MIB) + rng.randbytes(MIB)  # a MiB never written
    kubelet = tmp_path / "kubelet"
    devices = {"source": data}
    with FakeCluster(kube, kubelet, devices) as cluster:
        lie: list[bool] = []  # set: the next deltas leave out their last range

        def delta(base: str, namespace: str, target: str) -> tuple[int, Ranges] | None:
            new = cluster.snapshots.get(f"snap-{namespace}-{target}")
            old = cluster.snapshots.get(base)
            if new is None or old is None:
                return None
            ranges = changed_blocks(old, new)
            return SIZE, ranges[:-1] if lie else ranges

        def allocated(namespace: str, target: str) -> tuple[int, Ranges] | None:
            data = cluster.snapshots.get(f"snap-{namespace}-{target}")
            return None if data is None else (SIZE, allocated_blocks(data))

        def authenticate(token: str, audience: str) -> bool:
            return env.served.cluster.token_holder(token, audience) == (SYSTEM, AGENT_ACCOUNT)

        server = MetadataServer(
            AUDIENCE, authenticate, max_results=2, provider=delta, allocated_provider=allocated
        ).start()
        try:
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
            with components(env, kubelet):
                first = stored(env, "one")
                # Nothing to compare with yet: only what holds data is read (the rest is a
                # hole); the snapshot is kept as the base.
                assert "changedBlocks" not in item_of(env, "one")["spec"]
                report = item_of(env, "one")["status"]["changedBlocks"]
                assert report == {
                    "used": True,
                    "kind": "allocated",
                    "ranges": 2,
                    "bytesAllocated": 2 * MIB,
                }
                kept = kube.get(api.VOLUME_SNAPSHOT, "db", first["volumeSnapshot"])
                assert kept["metadata"]["labels"][BASE_LABEL] == "true"
                assert kept["metadata"]["annotations"][SNAPSHOT_ANNOTATION] == first["snapshot"]

                changed = bytearray(data)
                for offset in (0, 5 * BLOCK, 6 * BLOCK, 300 * BLOCK + 17, SIZE - 10):
                    changed[offset] ^= 0xFF
                devices["source"] = bytes(changed)
                second = stored(env, "two")
                item = item_of(env, "two")
                assert item["spec"]["changedBlocks"]["parent"] == first["snapshot"]
                assert item["spec"]["changedBlocks"]["volumeSnapshot"] == first["volumeSnapshot"]
                report = item["status"]["changedBlocks"]
                assert report == {
                    "used": True,
                    "kind": "changed",
                    "ranges": 4,
                    "bytesChanged": 5 * BLOCK,
                }
                # The newer snapshot is the base now; the older one is gone.
                assert kube.find(api.VOLUME_SNAPSHOT, "db", first["volumeSnapshot"]) is None
                assert kube.get(api.VOLUME_SNAPSHOT, "db", second["volumeSnapshot"])
                assert [c[0] for c in server.calls] == ["GetMetadataAllocated", "GetMetadataDelta"]

                # A service that leaves a change out: the sampled reuse finds it, and the
                # volume is read in full; the snapshot is right either way.
                monkeypatch.setenv("MOVER_CBT_VERIFY_PERCENT", "100")
                lie.append(True)
                lied = bytearray(changed)
                for offset in (7 * BLOCK, 500 * BLOCK):
                    lied[offset] ^= 0x55
                devices["source"] = bytes(lied)
                fourth = stored(env, "lie")
                report = item_of(env, "lie")["status"]["changedBlocks"]
                assert report["used"] is False
                assert "left out a change" in report["reason"]
                lie.clear()

                # The service gone: the whole volume is read, and the reason is recorded.
                kube.delete(SNAPSHOT_METADATA_SERVICE, None, DRIVER)
                third_data = bytes(changed[:-BLOCK]) + bytes(BLOCK)
                devices["source"] = third_data
                third = stored(env, "three")
                report = item_of(env, "three")["status"]["changedBlocks"]
                assert report["used"] is False
                assert "offers no SnapshotMetadata" in report["reason"]
                # Without the service no base is kept: the snapshot is deleted as before.
                assert kube.find(api.VOLUME_SNAPSHOT, "db", third["volumeSnapshot"]) is None
        finally:
            server.stop()
    assert restored(env, second["snapshot"], tmp_path) == bytes(changed)
    assert second["tree"] == full_tree(env, bytes(changed))
    assert restored(env, third["snapshot"], tmp_path) == third_data
    assert restored(env, fourth["snapshot"], tmp_path) == bytes(lied)
    assert restored(env, first["snapshot"], tmp_path) == data
