"""What restic users type works: global -r/--json/--password-file before the verb,
--password-command, `mover key list|add|passwd|remove`, `restore latest --target DIR`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import (
    PASSWORD,
    MiB,
    assert_one_error_line,
    assert_same_file,
    backup,
    init_repo,
    mover,
    ok,
    tree_state,
    write_image,
)

NO_PASSWORD = {"MOVER_PASSWORD": None}


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_image(tmp_path_factory.mktemp("habits") / "image.img", seed=1, size=4 * MiB)


@pytest.fixture
def populated(tmp_path: Path, image: Path) -> tuple[Path, dict[str, Any]]:
    repo = init_repo(tmp_path / "repo")
    return repo, backup(repo, image)


def test_global_options_before_the_verb(
    populated: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    repo, snap = populated
    listed = json.loads(ok(mover("-r", repo, "--json", "snapshots")).stdout)
    assert [s["id"] for s in listed] == [snap["id"]]
    # After the verb as well; the verb's own --repo wins over the global one.
    listed = json.loads(ok(mover("--json", "snapshots", "--repo", repo)).stdout)
    assert [s["id"] for s in listed] == [snap["id"]]
    other = init_repo(tmp_path / "other")
    listed = json.loads(ok(mover("-r", repo, "snapshots", "--repo", other, "--json")).stdout)
    assert listed == []

    password_file = tmp_path / "password"
    password_file.write_text(PASSWORD + "\n")
    proc = mover("-r", repo, "--password-file", password_file, "--json", "stats", env=NO_PASSWORD)
    assert json.loads(ok(proc).stdout)["snapshots"] == 1
    proc = mover("stats", "-r", repo, "--password-file", password_file, env=NO_PASSWORD)
    ok(proc)


def test_password_command(populated: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    repo, _ = populated
    secret = tmp_path / "secret"
    secret.write_text(PASSWORD)
    proc = mover(
        "--json", "stats", "-r", repo, "--password-command", f"cat {secret}", env=NO_PASSWORD
    )
    assert json.loads(ok(proc).stdout)["snapshots"] == 1
    # --password-command wins over MOVER_PASSWORD (the flag is what the user typed last).
    proc = mover(
        "stats", "-r", repo, "--password-command", f"cat {secret}", env={"MOVER_PASSWORD": "wrong"}
    )
    ok(proc)
    proc = mover(
        "stats", "-r", repo, "--password-command", "echo oops >&2; exit 3", env=NO_PASSWORD
    )
    line = assert_one_error_line(proc, exit_code=2)
    assert "exit 3" in line and "oops" in line


def test_restore_target_option(
    populated: tuple[Path, dict[str, Any]], image: Path, tmp_path: Path
) -> None:
    repo, _ = populated
    target = tmp_path / "restored.img"
    ok(mover("-r", repo, "restore", "latest", "--target", target))
    assert_same_file(image, target)
    both = mover("-r", repo, "restore", "latest", tmp_path / "a.img", "--target", tmp_path / "b")
    assert "once" in assert_one_error_line(both, exit_code=2)
    neither = mover("-r", repo, "restore", "latest")
    assert "no restore target" in assert_one_error_line(neither, exit_code=2)
    assert not (tmp_path / "a.img").exists() and not (tmp_path / "b").exists()


def test_key_add_passwd_list_remove(populated: tuple[Path, dict[str, Any]]) -> None:
    repo, _ = populated
    kdf = ("--kdf-memory", "8MiB")
    (first,) = json.loads(ok(mover("key", "list", "-r", repo, "--json")).stdout)
    assert first["current"] is True

    added = json.loads(
        ok(
            mover("key", "add", "-r", repo, *kdf, "--json", env={"MOVER_NEW_PASSWORD": "second"})
        ).stdout
    )["added"]
    # Both passwords open it now.
    ok(mover("snapshots", "-r", repo, env={"MOVER_PASSWORD": "second"}))
    ok(mover("snapshots", "-r", repo))
    keys = json.loads(ok(mover("key", "list", "-r", repo, "--json")).stdout)
    assert {k["id"] for k in keys} == {first["id"], added}

    # passwd: the key of the current password is replaced; the other key stays.
    changed = json.loads(
        ok(
            mover("key", "passwd", "-r", repo, *kdf, "--json", env={"MOVER_NEW_PASSWORD": "third"})
        ).stdout
    )
    assert changed["removed"] == first["id"]
    wrong = mover("snapshots", "-r", repo)  # the old password no longer opens it
    assert_one_error_line(wrong, exit_code=1, starts="wrong password")
    ok(mover("snapshots", "-r", repo, env={"MOVER_PASSWORD": "third"}))

    # remove: never the key of the password given; another one, by prefix.
    as_second = {"MOVER_PASSWORD": "second"}
    before = tree_state(repo / "keys")
    refused = mover("key", "remove", "-r", repo, added[:8], env=as_second)
    assert "this password opens" in assert_one_error_line(refused, exit_code=2)
    assert tree_state(repo / "keys") == before
    ok(mover("key", "remove", "-r", repo, added[:8], env={"MOVER_PASSWORD": "third"}))
    gone = mover("snapshots", "-r", repo, env=as_second)
    assert_one_error_line(gone, exit_code=1, starts="wrong password")
    (left,) = json.loads(
        ok(mover("key", "list", "-r", repo, "--json", env={"MOVER_PASSWORD": "third"})).stdout
    )
    assert left["id"] == changed["added"] and left["current"] is True


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        (("key", "remove", "zz"), {}, "not a key id"),
        (("key", "remove", "0000"), {}, "no key"),
        (("key", "add"), {"MOVER_NEW_PASSWORD": PASSWORD}, "is the current one"),
        (("key", "add"), {}, "MOVER_NEW_PASSWORD"),
    ],
)
def test_key_bad_input(
    populated: tuple[Path, dict[str, Any]],
    args: tuple[str, ...],
    env: dict[str, str],
    expected: str,
) -> None:
    repo, _ = populated
    before = tree_state(repo)
    proc = mover(*args, "-r", repo, env=env)
    line = assert_one_error_line(proc, exit_code=2)
    assert expected in line, line
    assert tree_state(repo) == before


def test_counts_are_worded_for_one_and_for_many(
    populated: tuple[Path, dict[str, Any]], image: Path
) -> None:
    repo, _ = populated
    one = ok(mover("check", "--repo", repo)).stdout.decode()
    assert one.startswith("no errors: 1 snapshot, ") and "1 snapshots" not in one
    backup(repo, image)
    two = ok(mover("check", "--repo", repo)).stdout.decode()
    assert two.startswith("no errors: 2 snapshots, ")
    dry = ok(mover("forget", "--repo", repo, "--keep-last", "1", "--dry-run")).stdout.decode()
    assert "would remove 1 snapshot;" in dry
