"""`mover app` and `mover agent`, run as a user runs them: the `mover` command in a subprocess,
the cluster named by a kubeconfig."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from mover_k8s import api

from .conftest import SYSTEM, Env, deploy_app, read_bytes, volume_path, wait_until, write_app_data


def mover(
    env: Env, tmp_path: Path, *args: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    kubeconfig = env.served.kubeconfig(tmp_path / "kubeconfig")
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("MOVER_", "KUBE"))}
    environ["KUBECONFIG"] = str(kubeconfig)
    return subprocess.run(
        [sys.executable, "-m", "mover", *args],
        env=environ,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def as_json(proc: subprocess.CompletedProcess[str]) -> Any:
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_app_backup_restore_list_describe(env: Env, tmp_path: Path) -> None:
    deploy_app(env.kube, "shop")
    data = write_app_data(env.kube, "shop")
    with env.running():
        backup = as_json(
            mover(
                env,
                tmp_path,
                "app",
                "backup",
                "nightly",
                "--include-namespace",
                "shop",
                "--wait",
                "--json",
            )
        )
        assert backup["phase"] == "Completed" and len(backup["status"]["rootHash"]) == 64
        listing = as_json(mover(env, tmp_path, "app", "list", "--json"))
        assert [b["name"] for b in listing["backups"]] == ["nightly"]
        described = mover(env, tmp_path, "app", "describe", "nightly")
        assert described.returncode == 0, described.stderr
        assert f"rootHash: {backup['status']['rootHash']}" in described.stdout
        assert "volume shop/data-a on node-a: Completed" in described.stdout
        env.kube.delete(api.NAMESPACE, None, "shop")
        restore = as_json(
            mover(
                env,
                tmp_path,
                "app",
                "restore",
                "back",
                "--from-backup",
                "nightly",
                "--namespace-mapping",
                "shop=shop2",
                "--storage-class-mapping",
                "fast=standard",
                "--wait",
                "--json",
            )
        )
    assert restore["phase"] == "Completed", restore
    assert restore["spec"]["namespaceMapping"] == {"shop": "shop2"}
    for pvc, content in data.items():
        assert read_bytes(volume_path(env.kube, "shop2", pvc)) == content
    report = mover(env, tmp_path, "app", "describe", "back", "--restore")
    assert report.returncode == 0, report.stderr
    assert "created: ConfigMap shop2/app-config" in report.stdout
    assert "skipped: ReplicaSet shop2/shop-5d9c (managed by Deployment/shop" in report.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["app", "backup", "b"], "say what to back up: --include-namespace NS and/or --selector"),
        (
            ["app", "restore", "r", "--from-backup", "x", "--namespace-mapping", "shop"],
            "--namespace-mapping 'shop': write OLD=NEW",
        ),
        (
            ["app", "restore", "r", "--from-backup", "x", "--storage-class-mapping", "a=b,a=c"],
            "--storage-class-mapping: 'a' is mapped twice",
        ),
        (
            ["app", "restore", "r", "--from-backup", "x", "--mode", "all"],
            "Invalid value for '--mode'",
        ),
        (["app", "backup", "b", "--selector", "app"], "--selector 'app': write KEY=VALUE"),
        (["app", "describe", "nope"], "no Backup mover-system/nope; see `mover app list`"),
    ],
    ids=["no-scope", "bad-mapping", "double-mapping", "bad-mode", "bad-selector", "no-such"],
)
def test_app_bad_input_is_one_line_and_creates_nothing(
    env: Env, tmp_path: Path, args: list[str], message: str
) -> None:
    proc = mover(env, tmp_path, *args)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr
    assert env.kube.list(api.BACKUP, SYSTEM) == [] and env.kube.list(api.RESTORE, SYSTEM) == []


def test_app_backup_name_taken_and_failed_backup(env: Env, tmp_path: Path) -> None:
    deploy_app(env.kube, "shop")
    with env.running(agent=False):
        first = mover(
            env,
            tmp_path,
            "app",
            "backup",
            "b",
            "--include-namespace",
            "shop",
            "--no-volumes",
            "--wait",
        )
        assert first.returncode == 0, first.stderr
        again = mover(env, tmp_path, "app", "backup", "b", "--include-namespace", "shop")
        assert again.returncode == 2
        assert again.stderr.strip() == (
            "mover: error: Backup mover-system/b exists already; choose another name"
        )
        failed = mover(
            env, tmp_path, "app", "backup", "g", "--include-namespace", "ghost", "--wait"
        )
    assert failed.returncode == 1
    assert failed.stderr.strip().splitlines()[-1] == (
        "mover: error: Backup g Failed: NamespaceNotFound: namespace(s) ghost do not exist in "
        "this cluster; fix spec.includedNamespaces"
    )


def test_agent_commands_run_the_components(env: Env, tmp_path: Path) -> None:
    crds = mover(env, tmp_path, "agent", "crds")
    assert crds.returncode == 0
    kinds = [doc["spec"]["names"]["kind"] for doc in yaml.safe_load_all(crds.stdout)]
    assert kinds == [rt.kind for rt in api.OURS]

    deploy_app(env.kube, "shop")
    data = write_app_data(env.kube, "shop")
    kubeconfig = env.served.kubeconfig(tmp_path / "kubeconfig")
    environ = dict(os.environ, KUBECONFIG=str(kubeconfig), NODE_NAME="node-a")
    common = ["--interval", "0.1", "--metrics-port", "0"]  # tests/k8s/test_metrics.py serves them
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "mover", "agent", *args, *common],
            env=environ,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for args in (["controller"], ["node", "--no-snapshots", "--progress-interval", "0.1"])
    ]
    try:
        env.kube.create(
            api.BACKUP,
            {
                "apiVersion": api.API_VERSION,
                "kind": "Backup",
                "metadata": {"name": "by-agents", "namespace": SYSTEM},
                "spec": {"repository": "default", "includedNamespaces": ["shop"]},
            },
        )
        backup = env.wait_phase(api.BACKUP, "by-agents", timeout=60)
        assert backup["status"]["phase"] == "Completed", backup["status"]
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        outputs = [proc.communicate(timeout=30) for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], outputs
    assert "controller started" in outputs[0][1]
    assert "on node node-a started" in outputs[1][1]
    assert wait_until(lambda: len(backup["status"]["volumes"]) == len(data))


def test_app_without_a_cluster_says_why_in_one_line(tmp_path: Path) -> None:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("MOVER_", "KUBE"))}
    missing = tmp_path / "no-such-kubeconfig"
    proc = subprocess.run(
        [sys.executable, "-m", "mover", "app", "list", "--kubeconfig", str(missing)],
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith(f"mover: error: cannot load {missing}")
    unreachable = tmp_path / "kubeconfig"
    unreachable.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "http://127.0.0.1:9"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    proc = subprocess.run(
        [sys.executable, "-m", "mover", "app", "list", "--kubeconfig", str(unreachable)],
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("mover: error: cannot reach the Kubernetes API at http://127.0.0.1:9")


def test_progress_text_for_people() -> None:
    from mover_k8s.cli.progress import progress_text

    gib, mib = 1 << 30, 1 << 20
    assert progress_text({}) == ""
    text = progress_text(
        {
            "bytesDone": int(1.2 * gib),
            "bytesTotal": 8 * gib,
            "bytesPerSecond": 310 * mib,
            "etaSeconds": 130,
        }
    )
    assert text == " 1.2 GiB of 8.0 GiB, 310.0 MiB/s, ETA 2m10s"
    # A slow volume shows its rate in the unit that fits, not `0 MB/s`; no rate is measured
    # before any byte is done, and none is made up.
    assert progress_text({"bytesDone": 512 * mib, "bytesPerSecond": 300_000}) == (
        " 512.0 MiB, 293.0 KiB/s"
    )
    assert progress_text({"bytesDone": 5 * gib, "bytesPerSecond": 0}) == " 5.0 GiB"
    assert progress_text({"bytesDone": 0, "bytesTotal": 2 * gib}) == " 0 B of 2.0 GiB"


def test_app_verify_checks_the_root_hash_against_the_repository(env: Env, tmp_path: Path) -> None:
    deploy_app(env.kube, "shop")
    data = write_app_data(env.kube, "shop")
    with env.running():
        env.kube.create(
            api.BACKUP,
            {
                "apiVersion": api.API_VERSION,
                "kind": "Backup",
                "metadata": {"name": "audited", "namespace": SYSTEM},
                "spec": {"repository": "default", "includedNamespaces": ["shop"]},
            },
        )
        backup = env.wait_phase(api.BACKUP, "audited")
    root = backup["status"]["rootHash"]
    verified = as_json(mover(env, tmp_path, "app", "verify", "audited", "--read-data", "--json"))
    assert verified["rootHash"] == root
    assert verified["parts"] == ["objects", "volume shop/data-a", "volume shop/data-b"]
    assert verified["bytes"] > sum(len(d) for d in data.values())
    # Damage one stored byte: structure still holds, reading every byte does not.
    packs = sorted(p for p in (env.repo_dir / "data").rglob("*") if p.is_file())
    victim = max(packs, key=lambda p: p.stat().st_size)
    raw = bytearray(victim.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    victim.write_bytes(bytes(raw))
    assert mover(env, tmp_path, "app", "verify", "audited").returncode == 0
    damaged = mover(env, tmp_path, "app", "verify", "audited", "--read-data")
    assert damaged.returncode == 1
    (line,) = damaged.stderr.strip().splitlines()
    assert "of this backup does not verify" in line


def test_app_cancel(env: Env, tmp_path: Path) -> None:
    missing = mover(env, tmp_path, "app", "cancel", "nope")
    assert missing.returncode == 2
    assert (
        missing.stderr.strip() == "mover: error: no Backup mover-system/nope; see `mover app list`"
    )
    deploy_app(env.kube, "shop")
    env.kube.create(
        api.BACKUP,
        {
            "apiVersion": api.API_VERSION,
            "kind": "Backup",
            "metadata": {"name": "b", "namespace": SYSTEM},
            "spec": {"repository": "default", "includedNamespaces": ["shop"]},
        },
    )
    asked = mover(env, tmp_path, "app", "cancel", "b")
    assert asked.returncode == 0, asked.stderr
    assert env.kube.get(api.BACKUP, SYSTEM, "b")["spec"]["cancel"] is True
    with env.running(agent=False):
        backup = env.wait_phase(api.BACKUP, "b")
    assert backup["status"]["phase"] == "Cancelled"
    again = mover(env, tmp_path, "app", "cancel", "b")
    assert again.returncode == 2
    assert "Backup b is Cancelled already; nothing to cancel" in again.stderr


def test_app_schedule(env: Env, tmp_path: Path) -> None:
    bad = mover(
        env, tmp_path, "app", "schedule", "s", "--cron", "nightly", "--include-namespace", "x"
    )
    assert bad.returncode == 2
    assert bad.stderr.strip() == (
        "mover: error: --cron 'nightly' is not a cron expression (e.g. '0 2 * * *')"
    )
    assert env.kube.list(api.SCHEDULE, SYSTEM) == []
    made = as_json(
        mover(
            env,
            tmp_path,
            "app",
            "schedule",
            "nightly",
            "--cron",
            "0 2 * * *",
            "--include-namespace",
            "shop",
            "--keep-last",
            "3",
            "--json",
        )
    )
    assert made["spec"] == {
        "schedule": "0 2 * * *",
        "keepLast": 3,
        "template": {
            "repository": "default",
            "includedNamespaces": ["shop"],
            "snapshotVolumes": True,
        },
    }
    listing = as_json(mover(env, tmp_path, "app", "list", "--json"))
    assert [s["name"] for s in listing["schedules"]] == ["nightly"]

    # Every retention tier, as the Schedule's spec.retention (restic's semantics).
    tiers = as_json(
        mover(
            env,
            tmp_path,
            "app",
            "schedule",
            "tiered",
            "--cron",
            "0 2 * * *",
            "--include-namespace",
            "shop",
            *("--keep-daily", "7", "--keep-weekly", "4", "--keep-monthly", "12"),
            *("--keep-yearly", "2", "--keep-hourly", "0", "--keep-last", "1"),
            "--json",
        )
    )
    assert tiers["spec"]["retention"] == {
        "last": 1,
        "hourly": 0,
        "daily": 7,
        "weekly": 4,
        "monthly": 12,
        "yearly": 2,
    }
    assert "keepLast" not in tiers["spec"]
    with env.running(agent=False):  # the controller takes the policy as it is
        wait_until(
            lambda: (env.kube.get(api.SCHEDULE, SYSTEM, "tiered").get("status") or {}).get(
                "nextScheduleTime"
            ),
            what="the Schedule's next run",
        )
    tiered = env.kube.get(api.SCHEDULE, SYSTEM, "tiered")
    assert not [
        c for c in tiered["status"].get("conditions") or [] if c.get("status") == "False"
    ], tiered["status"]
    nothing = mover(
        env, tmp_path, "app", "schedule", "none", "--cron", "0 2 * * *",
        "--include-namespace", "shop", "--keep-last", "0", "--keep-daily", "0",
    )  # fmt: skip
    assert nothing.returncode == 2
    assert nothing.stderr.strip() == (
        "mover: error: the --keep-* rules keep nothing (every count is 0); keep at least one"
    )
    assert [s["metadata"]["name"] for s in env.kube.list(api.SCHEDULE, SYSTEM)] == [
        "nightly",
        "tiered",
    ]


def test_the_apps_namespace_given_as_movers_is_one_clear_line(env: Env, tmp_path: Path) -> None:
    """-n is mover's own namespace (as Velero's): given the app's, nothing is created and the
    line says which option names the app."""
    env.kube.create(api.NAMESPACE, {"metadata": {"name": "shop"}})
    for verb in (
        ["backup", "b", "--include-namespace", "shop"],
        ["schedule", "s", "--cron", "0 2 * * *", "--include-namespace", "shop"],
    ):
        wrong = mover(env, tmp_path, "app", *verb, "-n", "shop")
        assert wrong.returncode == 2, wrong.stderr
        assert wrong.stderr.strip() == (
            "mover: error: no Repository 'default' in namespace 'shop': -n/--namespace is "
            "mover's own namespace (default mover-system), where its Repositories are; name "
            "the app's namespaces with --include-namespace"
        )
    assert env.kube.list(api.BACKUP) == [] and env.kube.list(api.SCHEDULE) == []
    # --mover-namespace says the same as -n, unambiguously.
    made = as_json(
        mover(
            env, tmp_path, "app", "schedule", "s", "--cron", "0 2 * * *",
            "--include-namespace", "shop", "--mover-namespace", SYSTEM, "--json",
        )
    )  # fmt: skip
    assert made["namespace"] == SYSTEM


def test_status_line_sums_the_volumes_progress(env: Env) -> None:
    from mover_k8s.cli.progress import status_line

    backup = env.kube.create(
        api.BACKUP,
        {
            "apiVersion": api.API_VERSION,
            "kind": "Backup",
            "metadata": {"name": "b", "namespace": SYSTEM},
            "spec": {"repository": "default", "includedNamespaces": ["shop"]},
        },
    )
    assert status_line(env.kube, backup) == "Backup b: New"
    gib = 1 << 30
    # v1 read 2 GiB from :00 to :20, v2 1 GiB of 2 GiB from :20 to :30 (the agent's own rate
    # left out: the recorded times give it); v3 has not begun: its 1 GiB comes from the
    # Backup's volumes. 3 GiB in 30 s: 102.4 MiB/s; 2 GiB left at that rate: 20 s.
    items = (
        ("v1", "Completed", 2 * gib, 2 * gib, "12:00:00", "12:00:20"),
        ("v2", "Running", 1 * gib, 2 * gib, "12:00:20", "12:00:30"),
        ("v3", "New", 0, 0, "", ""),
    )
    env.kube.patch_status(
        api.BACKUP,
        SYSTEM,
        "b",
        {
            "phase": "WaitingForVolumes",
            "volumes": [
                {"namespace": "shop", "pvc": name, "volumeBackup": name, "size": gib}
                for name, *_ in items
            ],
        },
    )
    for name, phase, done, total, start, updated in items:
        env.kube.create(
            api.VOLUME_BACKUP,
            {
                "apiVersion": api.API_VERSION,
                "kind": "VolumeBackup",
                "metadata": {"name": name, "namespace": SYSTEM, "labels": {api.BACKUP_LABEL: "b"}},
                "spec": {"backup": "b", "repository": "default", "node": "n", "pvc": {}},
            },
        )
        if not start:
            continue
        progress = {
            "bytesDone": done,
            "bytesTotal": total,
            "updated": f"2024-05-01T{updated}Z",
        }
        env.kube.patch_status(
            api.VOLUME_BACKUP,
            SYSTEM,
            name,
            {"phase": phase, "startTimestamp": f"2024-05-01T{start}Z", "progress": progress},
        )
    line = status_line(env.kube, env.kube.get(api.BACKUP, SYSTEM, "b"))
    assert line == (
        "Backup b: WaitingForVolumes, 1 of 3 volumes, 3.0 GiB of 5.0 GiB, 102.4 MiB/s, ETA 20s"
    )
