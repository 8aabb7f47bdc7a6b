"""Backup hooks: pre and post commands run in a pod's container (pods/exec through the official
client, against the emulator's exec endpoint, where a container is this host) around the volume
backup. Order is observed through a log file the commands append to, and through the volume
itself: the pre hook writes a marker into the volume, the post hook another; the backup holds the
pre marker and not the post one."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

import pytest

from mover_k8s import api

from .conftest import (
    SYSTEM,
    Env,
    Obj,
    backup_body,
    deploy_app,
    restore_body,
    volume_path,
    write_app_data,
)
from .test_bad_input import ready, snapshot_count

NS = "shop"
POD = "shop-5d9c-x7k2p"
PRE = b"PRE-MARKER"
POST = b"POST-MARKER"


def log_command(log: Path, word: str, extra: str = "") -> list[str]:
    """Appends `word` and the pod/container the emulator ran it in to `log`."""
    line = f'echo "{word} $MOVER_TEST_POD $MOVER_TEST_CONTAINER" >> {shlex.quote(str(log))}'
    return ["sh", "-c", line + (f"; {extra}" if extra else "")]


def mark(path: Path, marker: bytes) -> str:
    """A shell command writing `marker` over the first bytes of the volume's file."""
    return f"printf {marker.decode()} | dd of={shlex.quote(str(path))} conv=notrunc status=none"


def lines(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def annotate(env: Env, notes: dict[str, str]) -> None:
    env.kube.patch(api.POD, NS, POD, {"metadata": {"annotations": notes}})


def backed_up_start(env: Env, backup: str, length: int) -> bytes:
    """The first bytes of data-a as the backup holds them (restored into another namespace)."""
    env.kube.create(
        api.RESTORE,
        restore_body("check", backup=backup, namespaceMapping={NS: "shop-copy"}),
    )
    restore = env.wait_phase(api.RESTORE, "check")
    assert restore["status"]["phase"] == "Completed", restore["status"]
    with open(volume_path(env.kube, "shop-copy", "data-a"), "rb") as f:
        return f.read(length)


@pytest.fixture
def app(env: Env) -> Path:
    deploy_app(env.kube, NS)
    write_app_data(env.kube, NS)
    return volume_path(env.kube, NS, "data-a")


def test_annotation_hooks_run_around_the_volume_backup(env: Env, app: Path, tmp_path: Path) -> None:
    log = tmp_path / "hooks.log"
    annotate(
        env,
        {
            "pre.hook.backup.mover.dev/container": "shop",
            "pre.hook.backup.mover.dev/command": json.dumps(
                log_command(log, "pre", mark(app, PRE))
            ),
            "pre.hook.backup.mover.dev/timeout": "20s",
            "post.hook.backup.mover.dev/command": json.dumps(
                log_command(log, "post", mark(app, POST))
            ),
        },
    )
    with env.running():
        env.kube.create(api.BACKUP, backup_body("frozen", includedNamespaces=[NS]))
        backup = env.wait_phase(api.BACKUP, "frozen")
        status = backup["status"]
        assert status["phase"] == "Completed", status
        assert lines(log) == [f"pre {NS}/{POD} shop", f"post {NS}/{POD} shop"]
        assert backed_up_start(env, "frozen", len(POST)).startswith(PRE)
    assert app.read_bytes().startswith(POST)  # the post hook ran, after the data was read
    runs = status["hooks"]
    assert [(r["pod"], r["container"], r["phase"], r["exitCode"]) for r in runs] == [
        (POD, "shop", "pre", 0),
        (POD, "shop", "post", 0),
    ]
    assert all(r["outcome"] == "Succeeded" and r["durationSeconds"] >= 0 for r in runs)
    assert status["postHooks"] == []


def test_spec_hooks_run_around_the_volume_backup(env: Env, app: Path, tmp_path: Path) -> None:
    log = tmp_path / "hooks.log"
    hooks = [
        {
            "namespace": NS,
            "labelSelector": {"matchLabels": {"app": "shop"}},
            "pre": [log_command(log, "flush"), log_command(log, "freeze", mark(app, PRE))],
            "post": [log_command(log, "thaw", mark(app, POST))],
            "onError": "Fail",
        },
        {"labelSelector": {"matchLabels": {"app": "nothing-has-this"}}, "pre": [["false"]]},
    ]
    with env.running():
        env.kube.create(api.BACKUP, backup_body("frozen", includedNamespaces=[NS], hooks=hooks))
        status = env.wait_phase(api.BACKUP, "frozen")["status"]
        assert status["phase"] == "Completed", status
        assert [line.split()[0] for line in lines(log)] == ["flush", "freeze", "thaw"]
        assert backed_up_start(env, "frozen", len(POST)).startswith(PRE)
    assert app.read_bytes().startswith(POST)
    assert [r["phase"] for r in status["hooks"]] == ["pre", "pre", "post"]


def test_a_failing_pre_hook_fails_the_backup_and_stores_nothing(
    env: Env, app: Path, tmp_path: Path
) -> None:
    log = tmp_path / "hooks.log"
    failing = ["sh", "-c", "echo 'database is locked' >&2; exit 3"]
    annotate(
        env,
        {
            "pre.hook.backup.mover.dev/command": json.dumps(failing),
            "pre.hook.backup.mover.dev/on-error": "Fail",
            "post.hook.backup.mover.dev/command": json.dumps(log_command(log, "post")),
        },
    )
    before = snapshot_count(env)
    with env.running():
        env.kube.create(api.BACKUP, backup_body("frozen", includedNamespaces=[NS]))
        backup = env.wait_phase(api.BACKUP, "frozen")
    status = backup["status"]
    assert status["phase"] == "Failed"
    condition = ready(backup)
    assert condition["reason"] == "HookFailed"
    for part in (f"pod {NS}/{POD}", "container shop", json.dumps(failing), "exit code 3"):
        assert part in condition["message"]
    assert "database is locked" in condition["message"]
    assert lines(log) == [f"post {NS}/{POD} shop"]  # the post hook still ran
    assert [(r["phase"], r["outcome"]) for r in status["hooks"]] == [
        ("pre", "Failed"),
        ("post", "Succeeded"),
    ]
    assert snapshot_count(env) == before
    assert "objectsSnapshot" not in status
    assert env.kube.list(api.VOLUME_BACKUP, SYSTEM) == []


def test_a_failing_hook_under_continue_is_recorded_and_the_backup_goes_on(
    env: Env, app: Path
) -> None:
    hooks = [{"namespace": NS, "pre": [["sh", "-c", "exit 4"]], "onError": "Continue"}]
    with env.running():
        env.kube.create(api.BACKUP, backup_body("frozen", includedNamespaces=[NS], hooks=hooks))
        status = env.wait_phase(api.BACKUP, "frozen")["status"]
    assert status["phase"] == "Completed", status
    (run,) = status["hooks"]
    assert (run["pod"], run["phase"], run["outcome"], run["exitCode"]) == (POD, "pre", "Failed", 4)
    assert {v["phase"] for v in status["volumes"]} == {"Completed"}


def test_a_hook_past_its_timeout_is_reported(env: Env, app: Path, tmp_path: Path) -> None:
    log = tmp_path / "hooks.log"
    hooks = [
        {
            "namespace": NS,
            "pre": [["sleep", "60"]],
            "post": [log_command(log, "post")],
            "timeout": "1s",
        }
    ]
    with env.running():
        env.kube.create(api.BACKUP, backup_body("frozen", includedNamespaces=[NS], hooks=hooks))
        backup = env.wait_phase(api.BACKUP, "frozen")
    assert backup["status"]["phase"] == "Failed"
    assert ready(backup)["reason"] == "HookFailed"
    assert "ran past its timeout of 1s" in ready(backup)["message"]
    assert backup["status"]["hooks"][0]["outcome"] == "TimedOut"
    assert lines(log) == [f"post {NS}/{POD} shop"]
    assert env.kube.list(api.VOLUME_BACKUP, SYSTEM) == []


@pytest.mark.parametrize(
    ("notes", "message"),
    [
        (
            {"pre.hook.backup.mover.dev/command": "fsfreeze --freeze /data"},
            "pre.hook.backup.mover.dev/command is not a JSON array of strings",
        ),
        (
            {
                "post.hook.backup.mover.dev/command": '["true"]',
                "post.hook.backup.mover.dev/on-error": "Maybe",
            },
            "on-error 'Maybe' is neither Fail nor Continue",
        ),
        (
            {
                "pre.hook.backup.mover.dev/command": '["true"]',
                "pre.hook.backup.mover.dev/container": "db",
            },
            "the pod has no container 'db'",
        ),
        (
            {
                "pre.hook.backup.mover.dev/command": '["true"]',
                "pre.hook.backup.mover.dev/timeout": "soon",
            },
            "'soon' is not a duration",
        ),
    ],
)
def test_bad_hook_annotations_fail_the_backup_with_nothing_run_or_stored(
    env: Env, app: Path, tmp_path: Path, notes: dict[str, Any], message: str
) -> None:
    log = tmp_path / "hooks.log"
    annotate(env, notes)
    hooks = [
        {"namespace": NS, "pre": [log_command(log, "pre")], "post": [log_command(log, "post")]}
    ]
    before = snapshot_count(env)
    with env.running():
        env.kube.create(api.BACKUP, backup_body("frozen", includedNamespaces=[NS], hooks=hooks))
        backup: Obj = env.wait_phase(api.BACKUP, "frozen")
    assert backup["status"]["phase"] == "Failed"
    assert ready(backup)["reason"] == "InvalidHook"
    assert message in ready(backup)["message"]
    assert f"pod {NS}/{POD}" in ready(backup)["message"]
    assert lines(log) == []  # not even the valid hooks ran
    assert snapshot_count(env) == before
    assert env.kube.list(api.VOLUME_BACKUP, SYSTEM) == []


def test_a_failing_post_hook_under_fail_keeps_the_data_and_says_so(env: Env, app: Path) -> None:
    hooks = [{"namespace": NS, "post": [["sh", "-c", "echo 'still frozen' >&2; exit 5"]]}]
    with env.running():
        env.kube.create(api.BACKUP, backup_body("frozen", includedNamespaces=[NS], hooks=hooks))
        backup = env.wait_phase(api.BACKUP, "frozen")
    assert backup["status"]["phase"] == "PartiallyFailed"
    assert ready(backup)["reason"] == "HookFailed"
    assert "exit code 5: still frozen" in ready(backup)["message"]
    assert backup["status"]["manifestSnapshot"]
    assert {v["phase"] for v in backup["status"]["volumes"]} == {"Completed"}
