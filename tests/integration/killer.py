"""Kill -9 at a precise storage operation: a driver for tests/integration/test_kill_repairs.py.

    python -m tests.integration.killer VERB --repo PATH [--other PATH] [--kill KIND:N:WHEN]

runs the real function behind a verb (repair-index: mover.maintenance.repair.rebuild_index,
repair-data: repair_data from the replica --other, prune: mover.maintenance.prune.prune with
--repack-below 100 and --unindexed-grace 0, replicate: mover.pipeline.replicate.replicate to the
target --other; replicate-init: the same, the target created first as `replicate --init-target`
does) on repositories opened through KillAfter, a storage wrapper that counts calls: mutating ones
(write, delete, a pack stream's commit) and reading ones (read, list, size, mtime, exists), over
both repositories together. With --kill write:7:before the process SIGKILLs itself just before
the 7th mutating call; `after` kills just after that call returned; `read:N:...` counts reading
calls instead.
Without --kill the verb runs to its end and the counts are printed as JSON on stdout, so that
a test learns how many kill points a run has. The password is $MOVER_PASSWORD.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from mover.crypto import KdfParams
from mover.maintenance.prune import prune
from mover.maintenance.repair import rebuild_index, repair_data
from mover.objects.repository import Repository
from mover.pipeline.replicate import open_target, replicate
from mover.storage.base import Backend, Stream
from mover.storage.local import LocalBackend
from mover.storage.wrapper import PassingStream, Wrapper

T = TypeVar("T")
KINDS = ("write", "read")
WHENS = ("before", "after")
VERBS = ("repair-index", "repair-data", "prune", "replicate", "replicate-init")


@dataclass(frozen=True)
class KillPoint:
    kind: str  # "write": count write and delete calls; "read": count the others
    n: int  # the n-th such call (1-based), over every repository of the run
    when: str  # "before" the call starts, or "after" it returned

    def __str__(self) -> str:
        return f"{self.kind}:{self.n}:{self.when}"

    @classmethod
    def parse(cls, text: str) -> KillPoint:
        kind, n, when = text.split(":")
        if kind not in KINDS or when not in WHENS or int(n) < 1:
            raise ValueError(f"not a kill point: {text!r} (KIND:N:WHEN)")
        return cls(kind, int(n), when)


class Counter:
    """Calls of each kind so far, shared by the wrappers of one run (and its threads)."""

    def __init__(self, kill: KillPoint | None = None) -> None:
        self.kill = kill
        self.counts = dict.fromkeys(KINDS, 0)
        self._lock = threading.Lock()

    def call(self, kind: str, fn: Callable[[], T]) -> T:
        with self._lock:
            self.counts[kind] += 1
            hit = self.kill is not None and (kind, self.counts[kind]) == (
                self.kill.kind,
                self.kill.n,
            )
        if hit and self.kill is not None and self.kill.when == "before":
            die()
        result = fn()
        if hit:
            die()
        return result


def die() -> None:
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


class KillAfter(Wrapper):
    """The real storage interface, passed through to `inner`, with every call counted and the
    process killed at the counter's kill point."""

    def __init__(self, inner: Backend, counter: Counter) -> None:
        super().__init__(inner)
        self.counter = counter

    def write(self, name: str, data: bytes | memoryview) -> None:
        self.counter.call("write", lambda: self.inner.write(name, data))

    def delete(self, name: str) -> None:
        self.counter.call("write", lambda: self.inner.delete(name))

    def read(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        return self.counter.call("read", lambda: self.inner.read(name, offset, length))

    def list(self, prefix: str) -> Iterator[str]:
        # Listed whole within the call, so that a kill "after" it falls after the listing.
        return iter(self.counter.call("read", lambda: [*self.inner.list(prefix)]))

    def size(self, name: str) -> int:
        return self.counter.call("read", lambda: self.inner.size(name))

    def mtime(self, name: str) -> float:
        return self.counter.call("read", lambda: self.inner.mtime(name))

    def exists(self, name: str) -> bool:
        return self.counter.call("read", lambda: self.inner.exists(name))

    def open_stream(self, prefix: str) -> Stream | None:
        # Passed through, so that packs take the path they take in production (a local
        # directory streams them), with each commit a kill point like a write.
        inner = self.inner.open_stream(prefix)
        return None if inner is None else CountedStream(inner, self.counter)


class CountedStream(PassingStream):
    """A stream whose commit is a mutating call of the counter's: a kill before it leaves the
    temp file (a leftover), after it a stored pack that no index names yet. Its appends are not
    counted: until the commit nothing of them is visible."""

    def __init__(self, inner: Stream, counter: Counter) -> None:
        super().__init__(inner)
        self.counter = counter

    def commit(self, name: str) -> None:
        self.counter.call("write", lambda: self.inner.commit(name))


def run(verb: str, repo_path: str, other_path: str | None, kill: KillPoint | None) -> Counter:
    password = os.environ["MOVER_PASSWORD"].encode()
    counter = Counter(kill)

    def open_repo(path: str) -> Repository:
        return Repository.open(KillAfter(LocalBackend(path), counter), password)

    repo = open_repo(repo_path)
    if verb == "replicate-init":
        assert other_path is not None, "replicate-init needs --other TARGET"
        backend = KillAfter(LocalBackend(other_path), counter)
        target, _ = open_target(repo, backend, password, create=True, kdf=KdfParams(8 << 10))
        replicate(repo, target)
        return counter
    other = open_repo(other_path) if other_path is not None else None
    if verb == "repair-index":
        rebuild_index(repo)
    elif verb == "repair-data":
        assert other is not None, "repair-data needs --other REPLICA"
        repair_data(repo, other)
    elif verb == "prune":
        prune(repo, unindexed_grace=0.0, repack_below=1.0)
    elif verb == "replicate":
        assert other is not None, "replicate needs --other TARGET"
        replicate(repo, other)
    else:
        raise ValueError(f"unknown verb {verb!r}")
    return counter


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.integration.killer")
    parser.add_argument("verb", choices=VERBS)
    parser.add_argument("--repo", required=True)
    parser.add_argument("--other", help="the replica (repair-data) or target (replicate)")
    parser.add_argument("--kill", type=KillPoint.parse, help="KIND:N:WHEN, e.g. write:7:after")
    args = parser.parse_args(argv)
    counter = run(args.verb, args.repo, args.other, args.kill)
    json.dump(counter.counts, sys.stdout)


if __name__ == "__main__":
    main()
