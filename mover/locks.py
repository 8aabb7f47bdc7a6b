"""Repository locks: objects with an owner, a heartbeat and an expiry.

Backups take a *shared* lock (any number at once: writers never block each other); prune takes
the one *exclusive* lock, which only another prune contends for. Prune does not wait for
writers: it reads their shared locks to know which writers may still hold an index that names
the packs it condemned (see mover.maintenance).

A lock `locks/<random id>` is a sealed object `locks/<id>/<n>`, replaced every `refresh`
seconds by `locks/<id>/<n+1>` (objects are never rewritten in place). It is stale when no newer
one has appeared for `stale_after` seconds (by the backend's clock: the object's modification
time), so a crashed holder never wedges the repository: stale locks are ignored, reported, and
removed by `mover locks --break-stale`. A holder that could not refresh its own lock for too
long stops before it writes anything that others rely on (`ensure_held`).
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
from mover.repository import Repository

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
        found.append(
            LockInfo(lock, doc["kind"], doc["owner"], doc["started"], age, age > stale_after)
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
        self.owner = f"{socket.gethostname()} pid {os.getpid()}"
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
        doc = {"kind": self.kind, "owner": self.owner, "started": self.started}
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
                    f"{lock.age:.0f}s ago); try again when it ends, or if it died, after "
                    f"{self.stale_after:.0f}s run `mover locks --break-stale`"
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
                "lost the repository lock (removed as stale by `mover locks --break-stale`?); "
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
