"""Repository locks: objects with an owner, a heartbeat and an expiry.

Backups take a *shared* lock (any number at once: writers never block each other); prune takes
the one *exclusive* lock, which only another prune contends for. Prune does not wait for
writers: it reads their shared locks to know which writers may still hold an index that names
the packs it condemned (see mover.maintenance.prune).

A lock `locks/<random id>` is a sealed object `locks/<id>/<n>`, replaced every `refresh`
seconds by `locks/<id>/<n+1>` (objects are never rewritten in place). It is stale when no newer
one has appeared for `stale_after` seconds (by the backend's clock: the object's modification
time), so a crashed holder never wedges the repository: stale locks are ignored, reported, and
removed by `mover unlock` (or `mover locks --break-stale`). A holder that could not refresh its
own lock for too long stops before it writes anything that others rely on (`ensure_held`).

A lock also names its holder process: host, pid, pid namespace and the process's start (boot
id and start time). A lock whose holder ran on this host (same host name, same boot, same pid
namespace) is stale at once, whatever its age, when that process is gone or its pid now belongs
to another process (`process_alive`): a killed prune or backup does not hold the repository for
`stale_after`. Locks written elsewhere, or by an older mover, are judged by their age alone.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import secrets
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Concatenate, Literal, ParamSpec, TypeVar

from mover.errors import MoverError, ObjectNotFound, RepositoryError
from mover.objects.repository import Repository

Kind = Literal["shared", "exclusive"]
RELEASED = "released"
P = ParamSpec("P")
R = TypeVar("R")

REFRESH = float(os.environ.get("MOVER_LOCK_REFRESH", "60"))
STALE_AFTER = float(os.environ.get("MOVER_LOCK_STALE_AFTER", "600"))


@dataclass(frozen=True)
class LockInfo:
    name: str
    kind: Kind
    owner: str
    started: float
    age: float  # seconds since the last heartbeat reached the repository
    stale: bool
    reason: str = ""  # why it is stale ("" when alive)


_PROC = "/proc"


@functools.cache
def _boot_id() -> str | None:
    """This boot of this machine's kernel (a new random id at every boot); None without /proc."""
    try:
        with open(f"{_PROC}/sys/kernel/random/boot_id") as f:
            return f.read().strip() or None
    except OSError:
        return None


@functools.cache
def _pid_namespace() -> str | None:
    """Our pid namespace ("pid:[4026531836]"): pids mean the same process only inside one."""
    try:
        return os.readlink(f"{_PROC}/self/ns/pid")
    except OSError:
        return None


def _stat(pid: int) -> tuple[str, int] | None:
    """Process pid's state letter and start time (clock ticks after boot) from /proc/<pid>/stat;
    None when it cannot be read. The command name (field 2) is in parentheses and may itself
    hold spaces and parentheses, so the fields are counted after the last ')'."""
    try:
        with open(f"{_PROC}/{pid}/stat", "rb") as f:
            text = f.read().decode(errors="replace")
        fields = text[text.rindex(")") + 1 :].split()
        return fields[0], int(fields[19])  # fields 3 (state) and 22 (starttime)
    except (OSError, ValueError, IndexError):
        return None


def pid_start(pid: int) -> str | None:
    """Which process pid is: "<boot id>:<start time in clock ticks>", None without /proc."""
    boot, stat = _boot_id(), _stat(pid)
    if boot is None or stat is None:
        return None
    return f"{boot}:{stat[1]}"


def process_alive(pid: int, start: str) -> bool:
    """Whether the process that recorded (pid, start) on this host and boot still runs.

    A pid alone does not say: once its process ends, the kernel hands the number to a later
    one, so "pid exists" can be a stranger. The start time (ticks since boot, from pid_start)
    tells them apart. False only when sure: no such pid, a zombie, or a different start time.
    A pid that exists but whose /proc entry cannot be read (another user's under hidepid, or
    it ended just now) counts as alive: a lock wrongly taken for dead lets prune delete what a
    running backup wrote, one wrongly kept alive only waits for its heartbeat to age."""
    if pid <= 0:
        return True  # not a process id: os.kill would signal a group; cannot tell
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, another user's
    except (OSError, OverflowError):
        return True
    stat = _stat(pid)
    if stat is None:
        return True
    state, ticks = stat
    return state not in ("Z", "X") and start.rpartition(":")[2] == str(ticks)


def _holder_gone(doc: dict[str, object]) -> str | None:
    """Why the lock's holder is certainly dead, or None (elsewhere, unknown, or alive). Judged
    only for a holder on this host, in this boot and this pid namespace: another machine with
    the same host name, a container beside this one, or a holder from before a reboot is left
    to the age of its heartbeat."""
    host, pid, start, ns = doc.get("host"), doc.get("pid"), doc.get("pid_start"), doc.get("pid_ns")
    if host != socket.gethostname() or not isinstance(pid, int) or not isinstance(start, str):
        return None
    boot = _boot_id()
    if boot is None or start.rpartition(":")[0] != boot or ns is None or ns != _pid_namespace():
        return None
    if process_alive(pid, start):
        return None
    return f"holder process {pid} on this host is gone"


def _groups(repo: Repository) -> dict[str, list[str]]:
    """lock name -> its heartbeat objects, oldest first."""
    groups: dict[str, list[str]] = {}
    for name in repo.backend.list("locks/"):
        lock, _, _seq = name.rpartition("/")
        if lock != "locks":
            groups.setdefault(lock, []).append(name)
    return {
        lock: sorted(names) for lock, names in groups.items() if f"{lock}/{RELEASED}" not in names
    }


def _backend_now(repo: Repository) -> float:
    """The backend's clock, which stamps heartbeats: ages are judged by it, so a host whose
    clock is off does not take live locks for stale (or stale ones for live). The local
    clock when the repository cannot be written to."""
    probe = f"locks/clock-{secrets.token_hex(8)}"
    try:
        repo.backend.write(probe, b"")
        now = repo.backend.mtime(probe)
    except MoverError:
        return time.time()
    with contextlib.suppress(MoverError):
        repo.backend.delete(probe)
    return now


def list_locks(repo: Repository, stale_after: float = STALE_AFTER) -> list[LockInfo]:
    found = []
    now = _backend_now(repo)
    for lock, beats in _groups(repo).items():
        try:
            doc = json.loads(repo.sealer.open(repo.backend.read(beats[-1]), b"lock", lock))
            age = max(0.0, now - repo.backend.mtime(beats[-1]))
        except ObjectNotFound:
            continue  # released or refreshed while we listed; the next listing sees it
        reason = _holder_gone(doc) or (f"no heartbeat for {age:.0f}s" if age > stale_after else "")
        found.append(
            LockInfo(lock, doc["kind"], doc["owner"], doc["started"], age, bool(reason), reason)
        )
    return sorted(found, key=lambda lock: lock.started)


def _remove(repo: Repository, lock: str) -> None:
    refused = False
    for name in list(repo.backend.list(f"{lock}/")):
        try:
            repo.backend.delete(name)
        except ObjectNotFound:
            continue
        except MoverError:
            refused = True
    if refused:
        # Object Lock retention keeps the heartbeats: a marker says the holder let go, so the
        # lock does not look alive until it goes stale.
        with contextlib.suppress(MoverError):
            repo.backend.write(f"{lock}/{RELEASED}", b"")


def break_stale(repo: Repository, stale_after: float = STALE_AFTER) -> list[LockInfo]:
    broken = []
    for lock in list_locks(repo, stale_after):
        if lock.stale:
            _remove(repo, lock.name)
            broken.append(lock)
    return broken


class Lock:
    """Held from `acquire` to `release` (or the end of a `with` block); a daemon thread keeps
    the heartbeat going meanwhile."""

    def __init__(
        self,
        repo: Repository,
        kind: Kind,
        refresh: float = REFRESH,
        stale_after: float = STALE_AFTER,
    ) -> None:
        self.repo = repo
        self.kind = kind
        self.refresh = refresh
        self.stale_after = stale_after
        self.name = f"locks/{secrets.token_hex(16)}"
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.pid_start = pid_start(self.pid)
        self.pid_ns = _pid_namespace()
        self.owner = f"{self.host} pid {self.pid}"
        self.started = time.time()
        self._beats = 0
        self._writing = threading.Lock()  # a heartbeat and ensure_held name the same object
        self._last_ok = 0.0  # monotonic time of the last heartbeat that reached the repository
        self._lost: str | None = None
        self._expired: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _beat_name(self, n: int) -> str:
        return f"{self.name}/{n:012d}"

    def _write(self) -> None:
        with self._writing:
            self._write_beat()

    def _write_beat(self) -> None:
        doc = {
            "kind": self.kind,
            "owner": self.owner,
            "started": self.started,
            "host": self.host,
            "pid": self.pid,
            "pid_start": self.pid_start,
            "pid_ns": self.pid_ns,
        }
        sealed = self.repo.sealer.seal(json.dumps(doc).encode(), b"lock")
        self.repo.backend.write(self._beat_name(self._beats + 1), sealed)
        self._beats += 1
        done = time.monotonic()
        if self._last_ok and done - self._last_ok > self.stale_after / 2:
            # Two heartbeats this far apart (a stalled request, a paused process or VM): a
            # prune may have taken this holder for dead in between, for good.
            self._expired = f"no heartbeat reached the repository for {done - self._last_ok:.0f}s"
        self._last_ok = done
        if self._beats > 1:
            with contextlib.suppress(MoverError):
                self.repo.backend.delete(self._beat_name(self._beats - 1))

    def acquire(self) -> Lock:
        if self.kind == "exclusive":
            self._write()
            others = [
                lock
                for lock in list_locks(self.repo, self.stale_after)
                if lock.kind == "exclusive" and not lock.stale and lock.name != self.name
            ]
            # Both of two racing prunes may see each other; both back off. Never both proceed.
            if others:
                self._delete()
                lock = others[0]
                raise RepositoryError(
                    f"another prune holds the repository ({lock.owner}, heartbeat "
                    f"{lock.age:.0f}s ago); try again when it ends (if it died on another "
                    f"host, its lock is ignored {self.stale_after:.0f}s after its last "
                    "heartbeat, and `mover unlock` removes it then)"
                )
        else:
            self._write()
        self._thread = threading.Thread(target=self._beat, name="mover-lock", daemon=True)
        self._thread.start()
        return self

    def _beat(self) -> None:
        while not self._stop.wait(self.refresh):
            try:
                if not self.repo.backend.exists(self._beat_name(self._beats)):
                    self._lost = "the lock was removed (broken as stale?)"
                    return
                self._write()
            except MoverError as exc:  # keep trying; ensure_held decides when it is too late
                self._lost = str(exc)

    def ensure_held(self) -> None:
        """Raises when this holder may have been taken for dead: its lock was removed or marked
        released (broken as stale), or heartbeats were ever too far apart, or none has reached
        the repository for half the stale period. Called before anything others rely on is
        written (index files, snapshots, prune's records and deletes)."""
        with self._writing:
            present = self.repo.backend.exists(self._beat_name(self._beats))
            released = self.repo.backend.exists(f"{self.name}/{RELEASED}")
        if not present or released:
            raise RepositoryError(
                "lost the repository lock (removed as stale by `mover unlock`?); "
                "nothing more was written: run again"
            )
        quiet = time.monotonic() - self._last_ok
        if self._expired or quiet > self.stale_after / 2:
            reason = self._expired or f"no heartbeat for {quiet:.0f}s ({self._lost or 'stalled'})"
            raise RepositoryError(
                f"the repository lock may have been taken for stale: {reason}; nothing more "
                "was written: run again"
            )

    def _delete(self) -> None:
        _remove(self.repo, self.name)

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._delete()

    def __enter__(self) -> Lock:
        return self.acquire()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


@contextmanager
def writer(repo: Repository, required: bool = True) -> Iterator[Lock | None]:
    """Holds a shared lock while a backup (or replication) writes into repo, or a restore or
    check reads it: taken before the index is read, so a prune that condemns packs waits for
    this holder before deleting them; for writers, checked again before the snapshot is
    written (Repository.write_snapshot). A reader (required=False) whose lock cannot be
    written (read-only credentials) goes on without one, and says so."""
    if isinstance(repo.lock, Lock) or repo.reader_lock is not None:
        yield None  # nested: the outer holder has it
        return
    lock = Lock(repo, "shared")
    try:
        lock.acquire()
    except MoverError as exc:
        if required:
            raise
        print(
            f"mover: note: reading without a lock ({exc}); a prune running now may delete "
            "what this reads",
            file=sys.stderr,
        )
        yield None
        return
    if required:
        repo.lock = lock
    else:
        repo.reader_lock = lock
    try:
        repo.refresh_index()
        yield lock
    finally:
        repo.lock = None
        repo.reader_lock = None
        lock.release()


def as_writer(
    fn: Callable[Concatenate[Repository, P], R],
) -> Callable[Concatenate[Repository, P], R]:
    """run_backup and friends: the repository (first argument) is written under writer()."""

    @functools.wraps(fn)
    def wrapper(repo: Repository, /, *args: P.args, **kwargs: P.kwargs) -> R:
        with writer(repo):
            return fn(repo, *args, **kwargs)

    return wrapper


def as_reader(
    fn: Callable[Concatenate[Repository, P], R],
) -> Callable[Concatenate[Repository, P], R]:
    """run_restore and run_check: the repository (first argument) is read under a shared lock
    when one can be written."""

    @functools.wraps(fn)
    def wrapper(repo: Repository, /, *args: P.args, **kwargs: P.kwargs) -> R:
        with writer(repo, required=False):
            return fn(repo, *args, **kwargs)

    return wrapper
