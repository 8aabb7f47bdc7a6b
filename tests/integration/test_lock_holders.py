"""Locks whose holder is known dead: a lock names its holder (host, pid, the process's start), so
a prune or backup killed on this host frees the repository at once instead of after
MOVER_LOCK_STALE_AFTER, while live holders, and holders on other hosts, keep their locks.

Holders are real processes: `mover backup -` fed through a pipe (it holds its shared lock while
it waits for more input), or a small Python process that takes mover.objects.locks.Lock and sleeps.
Some of them record a changed identity (another host, another process start) before taking the lock:
set-up of what a lock says, through the real Lock class.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil
import pytest

from mover.objects.locks import Lock, list_locks
from mover.objects.repository import Repository
from mover.storage.local import LocalBackend
from tests.integration.conftest import (
    MOVER,
    PASSWORD,
    MiB,
    assert_one_error_line,
    init_repo,
    mover,
    mover_env,
    ok,
    out_json,
    pack_files,
)

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/stat").exists(), reason="holders are identified through /proc"
)

HOLDER = """
import json, os, sys, time
from mover.objects.locks import Lock
from mover.objects.repository import Repository
from mover.storage.local import LocalBackend

repo_dir, kind, changes = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
if "comm" in changes:  # the name /proc/<pid>/stat shows in parentheses
    with open("/proc/self/comm", "w") as f:
        f.write(changes.pop("comm"))
repo = Repository.open(LocalBackend(repo_dir), os.environ["MOVER_PASSWORD"].encode())
lock = Lock(repo, kind)
if "start_ticks_plus" in changes:  # as if this pid were an earlier process's, since reused
    boot, _, ticks = lock.pid_start.rpartition(":")
    lock.pid_start = f"{boot}:{int(ticks) + changes.pop('start_ticks_plus')}"
for name, value in changes.items():
    setattr(lock, name, value)
lock.acquire()
print("held", lock.name, flush=True)
time.sleep(600)
"""


@contextmanager
def holder(repo: Path, kind: str, **changes: Any) -> Iterator[subprocess.Popen[bytes]]:
    """A process holding a `kind` lock on repo until the block ends (or the test kills it)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(repo), kind, json.dumps(changes)],
        env=mover_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None and proc.stderr is not None
        line = proc.stdout.readline()
        assert line.startswith(b"held locks/"), proc.stderr.read().decode(errors="replace")
        yield proc
    finally:
        kill(proc)


def kill(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL, and reaped: what is left of the process is its lock in the repository."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


def open_repo(path: Path) -> Repository:
    return Repository.open(LocalBackend(path), PASSWORD.encode())


def listed(repo: Path) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = out_json(mover("locks", "--repo", repo, "--json"))["locks"]
    return result


def lock_objects(repo: Path) -> list[Path]:
    return sorted(p for p in (repo / "locks").rglob("*") if p.is_file())


def gone(pid: int) -> str:
    return f"holder process {pid} on this host is gone"


def test_killed_prune_does_not_block_the_next_one(tmp_path: Path) -> None:
    repo = init_repo(tmp_path / "repo")
    with holder(repo, "exclusive") as proc:
        kill(proc)
        [lock] = listed(repo)
        assert lock["kind"] == "exclusive" and lock["owner"].endswith(f" pid {proc.pid}")
        assert lock["stale"] is True and lock["reason"] == gone(proc.pid), lock
        table = ok(mover("locks", "--repo", repo, env={"COLUMNS": "250"})).stdout.decode()
        assert "stale (holder gone)" in table, table

        ok(mover("prune", "--repo", repo, "--json"))  # not refused: the lock is ignored
        assert lock_objects(repo), "prune removed a lock (only unlock does)"

        result = out_json(mover("locks", "--repo", repo, "--break-stale", "--json"))
        assert result["locks"] == []
        assert [(b["name"], b["reason"]) for b in result["broken"]] == [
            (lock["name"], gone(proc.pid))
        ]
    assert lock_objects(repo) == []
    assert listed(repo) == []


def test_killed_backup_is_stale_at_once_and_its_packs_go(tmp_path: Path) -> None:
    """A backup reading stdin holds its shared lock while it waits for more input."""
    repo = init_repo(tmp_path / "repo", "--pack-size", "256KiB")
    with open(tmp_path / "backup.err", "wb") as err:
        proc = subprocess.Popen(
            [*MOVER, "backup", "--repo", str(repo), "-"],
            env=mover_env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:
        assert proc.stdin is not None
        proc.stdin.write(random.Random(7).randbytes(40 * MiB))
        proc.stdin.flush()
        deadline = time.monotonic() + 120
        while not pack_files(repo) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert proc.poll() is None, (tmp_path / "backup.err").read_text()
        assert pack_files(repo), "the backup wrote no pack from 40 MiB of input"

        # Alive: listed as such, and unlock leaves it.
        [lock] = listed(repo)
        assert (lock["kind"], lock["stale"], lock["reason"]) == ("shared", False, "")
        result = out_json(mover("unlock", "--repo", repo, "--json"))
        assert result["broken"] == [] and [x["name"] for x in result["locks"]] == [lock["name"]]
    finally:
        kill(proc)

    [dead] = listed(repo)
    assert dead["name"] == lock["name"]
    assert dead["stale"] is True and dead["reason"] == gone(proc.pid), dead
    # Prune does not wait for it: what the killed backup wrote goes now, not in 10 minutes.
    pruned = out_json(mover("prune", "--repo", repo, "--unindexed-grace", "0", "--json"))
    assert pruned["waiting_for"] == [] and pruned["packs_waiting"] == 0, pruned
    assert pack_files(repo) == set(), pruned

    result = out_json(mover("unlock", "--repo", repo, "--json"))
    assert result["locks"] == []
    assert [(b["name"], b["kind"], b["reason"]) for b in result["broken"]] == [
        (lock["name"], "shared", gone(proc.pid))
    ]
    assert lock_objects(repo) == []
    ok(mover("check", "--repo", repo))


@pytest.mark.parametrize("kind", ["exclusive", "shared"])
def test_live_holder_keeps_its_lock(tmp_path: Path, kind: str) -> None:
    repo = init_repo(tmp_path / "repo")
    with holder(repo, kind) as proc:
        [lock] = listed(repo)
        assert lock["owner"].endswith(f" pid {proc.pid}")
        assert (lock["kind"], lock["stale"], lock["reason"]) == (kind, False, "")
        for args in (["unlock"], ["locks", "--break-stale"]):
            result = out_json(mover(*args, "--repo", repo, "--json"))
            assert result["broken"] == [], args
            assert [x["name"] for x in result["locks"]] == [lock["name"]], args
        prune = mover("prune", "--repo", repo)
        if kind == "exclusive":
            line = assert_one_error_line(prune, exit_code=1)
            assert "another prune holds the repository" in line
        else:
            ok(prune)  # prune never waits for writers' locks
        assert proc.poll() is None
        assert [x["name"] for x in listed(repo)] == [lock["name"]]


def test_holder_in_this_process_is_alive(tmp_path: Path) -> None:
    """Listing from the holder's own process (another thread, or the holder itself) finds the
    same host, pid and start: alive."""
    repo_dir = init_repo(tmp_path / "repo")
    repo = open_repo(repo_dir)
    with Lock(repo, "exclusive") as lock:
        seen: list[Any] = []
        thread = threading.Thread(target=lambda: seen.extend(list_locks(open_repo(repo_dir))))
        thread.start()
        thread.join()
        [mine] = list_locks(repo)
        assert [(x.name, x.stale, x.reason) for x in seen] == [(lock.name, False, "")]
        assert (mine.name, mine.stale, mine.reason) == (lock.name, False, "")
        with pytest.raises(Exception, match="another prune holds the repository"):
            Lock(open_repo(repo_dir), "exclusive").acquire()


def test_lock_names_its_holder_process(tmp_path: Path) -> None:
    """host, pid and pid_start (boot id : start time in clock ticks) of the holder, read right
    even when the process's name holds spaces and parentheses; checked against psutil."""
    repo = init_repo(tmp_path / "repo")
    with holder(repo, "shared", comm="a) (b c) d") as proc:
        assert Path(f"/proc/{proc.pid}/comm").read_text().strip() == "a) (b c) d"
        r = open_repo(repo)
        [lock] = list_locks(r)
        [beat] = r.backend.list(f"{lock.name}/")
        doc = json.loads(r.sealer.open(r.backend.read(beat), b"lock", lock.name))
        assert doc["host"] == socket.gethostname() and doc["pid"] == proc.pid
        boot, _, ticks = doc["pid_start"].rpartition(":")
        assert boot == Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        started = psutil.boot_time() + int(ticks) / os.sysconf("SC_CLK_TCK")
        assert started == pytest.approx(psutil.Process(proc.pid).create_time(), abs=0.02)
        assert doc["pid_ns"] == os.readlink(f"/proc/{proc.pid}/ns/pid")
        assert not lock.stale
        kill(proc)
        assert list_locks(r)[0].reason == gone(proc.pid)


def test_reused_pid_is_stale(tmp_path: Path) -> None:
    """The lock's pid runs, but it is not the process that took the lock (another start)."""
    repo = init_repo(tmp_path / "repo")
    with holder(repo, "exclusive", start_ticks_plus=1) as proc:
        [lock] = listed(repo)
        assert lock["stale"] is True and lock["reason"] == gone(proc.pid), lock
        ok(mover("prune", "--repo", repo))
        result = out_json(mover("unlock", "--repo", repo, "--json"))
        assert [b["name"] for b in result["broken"]] == [lock["name"]]
        assert proc.poll() is None  # the pid was alive all along
    assert listed(repo) == []


@pytest.mark.parametrize(
    "changes",
    [
        {"host": "another-host"},
        # The same host name after a reboot, or on another machine: not judged by pid.
        {"pid_start": "00000000-0000-0000-0000-000000000000:1"},
        # A container beside this one with the same host name: its pids are not ours.
        {"pid_ns": "pid:[1]"},
    ],
    ids=["host", "boot", "pid-namespace"],
)
def test_holder_elsewhere_is_judged_by_heartbeat_age(tmp_path: Path, changes: Any) -> None:
    repo = init_repo(tmp_path / "repo")
    with holder(repo, "exclusive", **changes) as proc:
        kill(proc)  # the pid is gone here, which says nothing about a process elsewhere
        [lock] = listed(repo)
        assert (lock["stale"], lock["reason"]) == (False, ""), lock
        result = out_json(mover("unlock", "--repo", repo, "--json"))
        assert result["broken"] == [] and len(result["locks"]) == 1
        line = assert_one_error_line(mover("prune", "--repo", repo), exit_code=1)
        assert "another prune holds the repository" in line

        # Its heartbeat an hour old: stale by age, as every lock.
        [beat] = lock_objects(repo)
        hour_ago = time.time() - 3600
        os.utime(beat, (hour_ago, hour_ago))
        [lock] = listed(repo)
        assert lock["stale"] is True and lock["reason"].startswith("no heartbeat for "), lock
        ok(mover("prune", "--repo", repo))
        assert len(out_json(mover("unlock", "--repo", repo, "--json"))["broken"]) == 1
    assert lock_objects(repo) == []


def test_lock_of_an_older_mover_is_judged_by_age(tmp_path: Path) -> None:
    """A lock without host, pid and pid_start (written by an older mover): alive while fresh,
    even though the pid its owner names does not run here."""
    repo = init_repo(tmp_path / "repo")
    r = open_repo(repo)
    doc = {"kind": "exclusive", "owner": f"{socket.gethostname()} pid 0", "started": time.time()}
    r.backend.write(
        "locks/" + "0" * 32 + "/000000000001", r.sealer.seal(json.dumps(doc).encode(), b"lock")
    )
    [lock] = listed(repo)
    assert (lock["stale"], lock["reason"]) == (False, ""), lock
    assert out_json(mover("unlock", "--repo", repo, "--json"))["broken"] == []
    assert_one_error_line(mover("prune", "--repo", repo), exit_code=1)
