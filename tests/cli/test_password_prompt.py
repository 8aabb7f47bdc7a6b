"""On a terminal, with no password in the environment, mover asks for it."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pexpect


def spawn(*args: str) -> pexpect.spawn:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOVER_")}
    return pexpect.spawn(
        sys.executable, ["-m", "mover", *args], env=env, encoding="utf-8", timeout=60
    )


def test_prompted_password_creates_and_opens_the_repository(tmp_path: Path) -> None:
    repo = str(tmp_path / "repo")
    child = spawn("init", "--repo", repo, "--kdf-memory", "8MiB")
    child.expect("repository password")
    child.sendline("s3cret")
    child.expect("Repeat for confirmation")
    child.sendline("s3cret")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    assert (tmp_path / "repo" / "config").exists()

    child = spawn("snapshots", "--repo", repo, "--json")
    child.expect("repository password")
    child.sendline("wrong")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 1
    assert "wrong password" in (child.before or "")

    child = spawn("snapshots", "--repo", repo, "--json")
    child.expect("repository password")
    child.sendline("s3cret")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    assert "[]" in (child.before or "")
