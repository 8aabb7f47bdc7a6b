"""What `mover app list` and `mover app describe` show people and scripts: sizes in binary units
and rates measured from what was recorded (not `0 MB/s`), ages, states with their reasons,
volumes with their sizes, and a Backup's captured objects by kind and its external names.

Most objects here are written straight into the emulator with the status a controller would
have given them, so that every value shown is known; one Backup is made by the real controller
and agent, for describe's sections read back from its repository."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mover.cli.sizes import format_age, format_duration, format_rate, format_size, parse_size
from mover_k8s import api
from mover_k8s.cli.progress import item_progress
from mover_k8s.cli.render import age_of, state_of
from mover_k8s.k8s.client import Obj
from mover_k8s.k8s.types import ResourceType

from .conftest import SYSTEM, Env, backup_body, deploy_app, restore_body, write_app_data
from .test_cli import as_json, mover

MiB, GiB = 1 << 20, 1 << 30
ROOT = "ab" * 32
LB = "a1b2.elb.eu-west-1.amazonaws.com"
NOT_FOUND = "namespace(s) ghost do not exist in this cluster; fix spec.includedNamespaces"


@pytest.fixture(autouse=True)
def _wide(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tables as wide as they need: rich wraps them at 80 columns where there is no terminal."""
    monkeypatch.setenv("COLUMNS", "250")


def ready(status: str, reason: str, message: str) -> Obj:
    return {
        "type": "Ready",
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": "2024-05-01T12:00:00Z",
    }


# -- formats -----------------------------------------------------------------------------------


def test_sizes_rates_and_durations_for_people() -> None:
    assert format_size(0) == "0 B"
    assert format_size(1023) == "1023 B"
    assert format_size(1024) == "1.0 KiB"
    assert format_size(512 * MiB) == "512.0 MiB"
    assert format_size(int(1.3 * GiB)) == "1.3 GiB"
    assert format_size(GiB - 1) == "1.0 GiB"  # never `1024.0 MiB`
    assert format_size(3 * (1 << 40)) == "3.0 TiB"
    # What is printed reads back as the size it names, to its precision.
    for n in (1536, 512 * MiB, int(1.3 * GiB)):
        assert abs(parse_size(format_size(n), "x") - n) <= 0.05 * n
    assert format_rate(310 * MiB) == "310.0 MiB/s"
    assert format_rate(300_000) == "293.0 KiB/s"
    assert [format_duration(s) for s in (0, 22, 130, 3725, 2 * 86400 + 4 * 3600)] == [
        "0s",
        "22s",
        "2m10s",
        "1h02m",
        "2d04h",
    ]
    assert [format_age(s) for s in (-5, 45, 180, 2 * 3600 + 59, 5 * 86400, 400 * 86400)] == [
        "0s",
        "45s",
        "3m",
        "2h",
        "5d",
        "1y",
    ]


def test_age_and_state_of_an_object() -> None:
    made = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    obj: Obj = {"kind": "Backup", "metadata": {"creationTimestamp": "2024-05-01T12:00:00Z"}}
    assert age_of(obj, made + timedelta(minutes=3, seconds=20)) == "3m"
    assert age_of(obj, made + timedelta(hours=2, minutes=5)) == "2h"
    assert age_of(obj, made + timedelta(days=5, hours=7)) == "5d"
    assert age_of({"metadata": {}}) == ""
    assert state_of(obj) == "New"
    obj["status"] = {"phase": "Completed", "conditions": [ready("True", "Completed", "done")]}
    assert state_of(obj) == "Completed"
    obj["status"] = {
        "phase": "Failed",
        "conditions": [ready("False", "NamespaceNotFound", NOT_FOUND)],
    }
    # Shortened to a table column (60 characters at most).
    assert state_of(obj) == "Failed: NamespaceNotFound: namespace(s) ghost do not exist…"
    # The reason is not repeated when it is the phase.
    obj["status"] = {
        "phase": "WaitingForVolumes",
        "conditions": [ready("False", "WaitingForVolumes", "volumes are being backed up")],
    }
    assert state_of(obj) == "WaitingForVolumes: volumes are being backed up"


def test_rate_from_the_recorded_times_when_the_agent_gave_none() -> None:
    item: Obj = {
        "status": {
            "startTimestamp": "2024-05-01T12:00:00Z",
            "progress": {
                "bytesDone": 600 * MiB,
                "bytesTotal": GiB,
                "updated": "2024-05-01T12:01:00Z",
            },
        }
    }
    assert item_progress(item)["bytesPerSecond"] == 10 * MiB
    # The agent's own rate (measured on a monotonic clock) is kept when it has one.
    item["status"]["progress"]["bytesPerSecond"] = 12 * MiB
    assert item_progress(item)["bytesPerSecond"] == 12 * MiB
    assert item_progress({"status": {}}) == {}


# -- mover app list ------------------------------------------------------------------------------


def make(env: Env, rt: ResourceType, body: Obj, status: Obj | None) -> Obj:
    """An object as the controller would have left it: `status` written as it would."""
    env.kube.create(rt, body)
    name = body["metadata"]["name"]
    if status is not None:
        env.kube.patch_status(rt, SYSTEM, name, status)
    return env.kube.get(rt, SYSTEM, name)


def listed_objects(env: Env) -> None:
    make(
        env,
        api.BACKUP,
        backup_body("nightly", includedNamespaces=["shop"]),
        {
            "phase": "Completed",
            "objectCount": 14,
            "volumeCount": 2,
            "volumes": [
                {"namespace": "shop", "pvc": "data-a", "size": 3 * MiB, "phase": "Completed"},
                {"namespace": "shop", "pvc": "data-b", "size": 512 * MiB, "phase": "Completed"},
            ],
            "rootHash": ROOT,
            "conditions": [ready("True", "Completed", "14 objects and 2 volume(s) stored")],
        },
    )
    make(
        env,
        api.BACKUP,
        backup_body("broken", includedNamespaces=["ghost"]),
        {"phase": "Failed", "conditions": [ready("False", "NamespaceNotFound", NOT_FOUND)]},
    )
    make(
        env,
        api.BACKUP,
        backup_body("objects-only", includedNamespaces=["shop"], snapshotVolumes=False),
        {"phase": "Completed", "objectCount": 14, "volumeCount": 0, "volumes": []},
    )
    make(env, api.BACKUP, backup_body("fresh", includedNamespaces=["shop"]), None)
    make(
        env,
        api.RESTORE,
        restore_body("back", backup="nightly", mode="full"),
        {
            "phase": "WaitingForVolumes",
            "report": {
                "objects": [],
                "volumes": [
                    {
                        "kind": "PersistentVolumeClaim",
                        "namespace": "shop2",
                        "name": "data-a",
                        "result": "pending",
                        "size": GiB,
                    },
                ],
            },
            "conditions": [ready("False", "RestoringVolumes", "1 volume(s) to restore")],
        },
    )


def test_list_shows_age_state_and_volumes(env: Env, tmp_path: Path) -> None:
    listed_objects(env)
    listing = as_json(mover(env, tmp_path, "app", "list", "--json"))
    backups = {b["name"]: b for b in listing["backups"]}
    assert set(backups) == {"nightly", "broken", "objects-only", "fresh"}
    for b in backups.values():
        made = env.kube.get(api.BACKUP, SYSTEM, b["name"])["metadata"]["creationTimestamp"]
        assert b["created"] == made
        assert re.fullmatch(r"\d+[smhdy]", b["age"]), b["age"]
    assert backups["nightly"]["state"] == "Completed"
    assert backups["nightly"]["volumes"] == {"count": 2, "bytes": 515 * MiB}
    assert backups["broken"]["state"].startswith("Failed: NamespaceNotFound: namespace(s) ghost")
    assert backups["broken"]["reason"] == "NamespaceNotFound"
    assert backups["broken"]["volumes"] == {"count": None, "bytes": None}
    assert backups["objects-only"]["volumes"] == {"count": 0, "bytes": None}
    assert backups["fresh"]["state"] == "New"
    (restore,) = listing["restores"]
    assert restore["state"] == "WaitingForVolumes: RestoringVolumes: 1 volume(s) to restore"
    assert restore["volumes"] == {"count": 1, "bytes": GiB}

    text = mover(env, tmp_path, "app", "list")
    assert text.returncode == 0, text.stderr
    table = [
        [c.strip() for c in re.split("[│┃]", line.strip("│┃ "))]
        for line in text.stdout.splitlines()
        if line.startswith(("│", "┃"))
    ]
    headers = [cells for cells in table if cells[0] == "name"]
    assert headers == [
        ["name", "cron", "keep", "age", "last backup"],
        ["name", "objects", "volumes", "age", "root", "state"],
        ["name", "backup", "mode", "volumes", "age", "state"],
    ]
    rows = {cells[0]: cells for cells in table}
    nightly = rows["nightly"]
    assert nightly[1:3] == ["14", "2 (515.0 MiB)"]
    assert re.fullmatch(r"\d+[smhdy]", nightly[3]) and nightly[4:] == [ROOT[:16], "Completed"]
    assert rows["objects-only"][2] == "0"
    assert rows["broken"][2] == "" and rows["broken"][5] == backups["broken"]["state"]
    assert rows["back"][1:4] == ["nightly", "full", "1 (1.0 GiB)"]
    assert rows["back"][5] == restore["state"]


# -- mover app describe --------------------------------------------------------------------------


def test_describe_shows_progress_in_binary_units_with_a_real_rate(env: Env, tmp_path: Path) -> None:
    """A Backup whose volumes are being read: the total and each volume's bytes and rate (the
    first volume's from its recorded times: 1 GiB in 10 s)."""
    items = (
        ("b-data-a", "Running", GiB, 4 * GiB, 0),
        ("b-data-b", "Completed", 512 * MiB, 512 * MiB, 64 * MiB),
    )
    make(
        env,
        api.BACKUP,
        backup_body("b", includedNamespaces=["shop"]),
        {
            "phase": "WaitingForVolumes",
            "volumeCount": 2,
            "volumes": [
                {
                    "namespace": "shop",
                    "pvc": name[2:],
                    "node": "node-a",
                    "phase": phase,
                    "volumeBackup": name,
                    "size": total,
                }
                for name, phase, _, total, _ in items
            ],
            "conditions": [ready("False", "WaitingForVolumes", "volumes are being backed up")],
        },
    )
    for name, phase, done, total, rate in items:
        env.kube.create(
            api.VOLUME_BACKUP,
            {
                "apiVersion": api.API_VERSION,
                "kind": "VolumeBackup",
                "metadata": {"name": name, "namespace": SYSTEM, "labels": {api.BACKUP_LABEL: "b"}},
                "spec": {"backup": "b", "repository": "default", "node": "node-a", "pvc": {}},
            },
        )
        progress = {"bytesDone": done, "bytesTotal": total, "updated": "2024-05-01T12:00:10Z"}
        if rate:
            progress["bytesPerSecond"] = rate
        env.kube.patch_status(
            api.VOLUME_BACKUP,
            SYSTEM,
            name,
            {"phase": phase, "startTimestamp": "2024-05-01T12:00:00Z", "progress": progress},
        )
    shown = mover(env, tmp_path, "app", "describe", "b")
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert "  volume shop/data-a on node-a: Running, 1.0 GiB of 4.0 GiB, 102.4 MiB/s" in lines
    assert "  volume shop/data-b on node-a: Completed, 512.0 MiB of 512.0 MiB, 64.0 MiB/s" in lines
    # 1.5 GiB in the 10 s recorded, 3 GiB left at that rate: 20 s.
    assert "  volumes: 2 (4.5 GiB), 1.5 GiB of 4.5 GiB, 153.6 MiB/s, ETA 20s" in lines
    assert "MB/s" not in shown.stdout and " GB" not in shown.stdout
    assert re.search(r"^  created: \S+Z \(\d+[smhdy] ago\)$", shown.stdout, re.M)
    described = as_json(mover(env, tmp_path, "app", "describe", "b", "--json"))
    assert described["progress"] == {
        "bytesDone": GiB + 512 * MiB,
        "bytesTotal": 4 * GiB + 512 * MiB,
        "bytesPerSecond": (GiB + 512 * MiB) / 10,
        "etaSeconds": 20,
    }
    assert described["volumes"] == {"count": 2, "bytes": 4 * GiB + 512 * MiB}
    assert "captured" not in described  # nothing captured yet


def external_services(env: Env, ns: str) -> None:
    env.kube.create(
        api.SERVICE,
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {
                "name": "public",
                "namespace": ns,
                "annotations": {"external-dns.alpha.kubernetes.io/hostname": "shop.example.com"},
            },
            "spec": {"type": "LoadBalancer", "ports": [{"port": 443}]},
        },
    )
    env.kube.patch_status(
        api.SERVICE, ns, "public", {"loadBalancer": {"ingress": [{"hostname": LB}]}}
    )
    env.kube.create(
        api.SERVICE,
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "db", "namespace": ns},
            "spec": {"type": "ExternalName", "externalName": "db.corp.example"},
        },
    )


def test_describe_lists_captured_objects_by_kind_and_external_names(
    env: Env, tmp_path: Path
) -> None:
    deploy_app(env.kube, "shop")
    external_services(env, "shop")
    write_app_data(env.kube, "shop")
    with env.running():
        env.kube.create(api.BACKUP, backup_body("nightly", includedNamespaces=["shop"]))
        backup = env.wait_phase(api.BACKUP, "nightly")
    assert backup["status"]["phase"] == "Completed", backup["status"]

    described = as_json(mover(env, tmp_path, "app", "describe", "nightly", "--json"))
    kinds = {(k["kind"], k["group"]): k for k in described["captured"]["kinds"]}
    assert kinds[("ConfigMap", "")]["count"] == 2
    assert kinds[("ConfigMap", "")]["objects"] == ["shop/app-config", "shop/other-config"]
    assert kinds[("Service", "")]["objects"] == ["shop/db", "shop/public", "shop/shop"]
    assert kinds[("Deployment", "apps")]["objects"] == ["shop/shop"]
    assert kinds[("Namespace", "")]["objects"] == ["shop"]  # cluster-scoped: no namespace
    assert described["captured"]["objects"] == backup["status"]["objectCount"]
    assert sum(k["count"] for k in kinds.values()) == backup["status"]["objectCount"]
    assert described["external"] == [
        {"kind": "Service", "namespace": "shop", "name": "db", "type": "externalName",
         "value": "db.corp.example"},
        {"kind": "Service", "namespace": "shop", "name": "public",
         "type": "loadBalancerHostname", "value": LB},
        {"kind": "Service", "namespace": "shop", "name": "public",
         "type": "externalDNS:hostname", "value": "shop.example.com"},
    ]  # fmt: skip
    assert described["volumes"] == {"count": 2, "bytes": 6 * MiB}
    assert described["progress"]["bytesDone"] == 6 * MiB and described["progress"]["bytesPerSecond"]

    shown = mover(env, tmp_path, "app", "describe", "nightly")
    assert shown.returncode == 0, shown.stderr
    out = shown.stdout
    count = backup["status"]["objectCount"]
    assert f"\nCaptured objects ({count}; --objects names them):\n" in out
    assert re.search(r"^ConfigMap +2$", out, re.M)
    assert re.search(r"^Service +3$", out, re.M)
    assert "shop/app-config" not in out  # names only with --objects
    assert re.search(
        r"^  volume shop/data-a on node-a: Completed [0-9a-f]{8}, 3\.0 MiB of 3\.0 MiB, "
        r"\d+\.\d (KiB|MiB|GiB)/s$",
        out,
        re.M,
    ), out
    assert "\nExternal names recorded (outside the cluster; they must follow a move):\n" in out
    assert re.search(rf"^Service +shop/public +loadBalancerHostname +{re.escape(LB)}$", out, re.M)
    assert re.search(r"^Service +shop/db +externalName +db\.corp\.example$", out, re.M)

    named = mover(env, tmp_path, "app", "describe", "nightly", "--objects")
    assert named.returncode == 0, named.stderr
    assert f"\nCaptured objects ({count}):\n" in named.stdout
    assert re.search(r"^ConfigMap +shop/app-config$", named.stdout, re.M)
    assert re.search(r"^ConfigMap +shop/other-config$", named.stdout, re.M)
    assert re.search(r"^Namespace +shop$", named.stdout, re.M)


def test_describe_says_when_the_capture_cannot_be_read(env: Env, tmp_path: Path) -> None:
    """The status is still shown; the repository's problem is one line, not a failure."""
    make(
        env,
        api.BACKUP,
        backup_body("elsewhere", includedNamespaces=["shop"]),
        {"phase": "Completed", "objectCount": 3, "objectsSnapshot": "0123abcd"},
    )
    env.kube.patch(api.BACKUP, SYSTEM, "elsewhere", {"spec": {"repository": "missing"}})
    shown = mover(env, tmp_path, "app", "describe", "elsewhere")
    assert shown.returncode == 0, shown.stderr
    assert "  objectCount: 3" in shown.stdout
    (line,) = [x for x in shown.stdout.splitlines() if x.startswith("Captured objects")]
    assert line.startswith("Captured objects: cannot read them: ") and "missing" in line
    described = as_json(mover(env, tmp_path, "app", "describe", "elsewhere", "--json"))
    assert "missing" in described["captureError"] and "captured" not in described
