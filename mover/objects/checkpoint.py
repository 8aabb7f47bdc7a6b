"""Backup checkpoints: how far an interrupted backup of a volume got, so that the next backup of
the same source starts there instead of reading and uploading it all again.

Every `interval` bytes of source (1 GiB by default), once the packs and the index entries for
everything up to that point are stored, the backup writes `checkpoints/<source key>.<offset>`,
an ordinary sealed object (docs/format.md) holding:

- the source's identity (below);
- the offset reached: a chunk boundary. FastCDC restarts its state at every cut, so chunking
  from there cuts exactly what a run from the start would have cut;
- the chunk list up to there, as the state of the tree builder
  (mover.objects.tree.TreeBuilder.state): full nodes are already stored as tree blobs, the
  checkpoint holds only their ids and the partial leaf, O(fanout x depth) bytes whatever the
  volume's size. A resumed run restores the builder and feeds it the rest: its root is the root an
  uninterrupted run produces;
- a few sample chunks (offset, length, id) spread over what was backed up.

Identity. A resumed snapshot joins what was read then to what is read now, so the source must
not have changed in between. The checkpoint records the resolved path (the key), the size and
the file type; for a regular file also st_dev, st_ino, st_mtime_ns and st_ctime_ns: every write
through the file system moves mtime and ctime, ctime cannot be set back by a user (utime sets
it to now), and a file replaced at the same path has another inode. A block device has no
modification time: it records st_rdev and the size, and the intended source is a CSI snapshot,
read-only by construction. For both, the sample chunks (at most MAX_SAMPLES, the first chunk
and the last one before each checkpoint, thinned evenly) are re-read and re-hashed with the
repository's keyed BLAKE3 before resuming: a different volume at the same device path (or a
file system rewritten in place: its superblock sits in the first chunk) does not match. That
costs at most MAX_SAMPLES x max chunk size of reads. Any mismatch: the checkpoint is ignored,
with a notice, and the backup starts from 0.

Before resuming, every tree node and chunk id the checkpoint references is looked up in the
index (reading the stored nodes: ~40 bytes a chunk): if a prune removed them (a checkpoint is
not a snapshot: prune does not keep what it references), the checkpoint is ignored.

Objects are immutable, so each checkpoint is a new object (name suffixed by its offset) and the
previous one of this run is deleted after it; a finished backup deletes every checkpoint of its
source. A crash leaves at most one or two; a leftover of a source never backed up again stays
(a few hundred KiB).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import stat
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

from mover.chunking import is_zero
from mover.errors import IntegrityError, MoverError, ObjectLocked, ObjectNotFound
from mover.objects.repository import Repository
from mover.objects.tree import StoreNode, TreeBuilder, leaf_chunks, nodes

PREFIX = "checkpoints/"
DEFAULT_INTERVAL = 1 << 30
INTERVAL_ENV = "MOVER_CHECKPOINT_INTERVAL"
MAX_SAMPLES = 16
FORMAT = 1
AD = b"checkpoint"

Notify = Callable[[str], None]
Sample = tuple[int, int, str | None]  # offset, length, chunk id hex (None: zeros)


@dataclass(frozen=True)
class SourceIdentity:
    name: str
    size: int
    kind: str  # "file" or "device"
    dev: int = 0
    ino: int = 0
    rdev: int = 0
    mtime_ns: int = 0
    ctime_ns: int = 0

    def differences(self, other: SourceIdentity) -> list[str]:
        mine, theirs = asdict(self), asdict(other)
        return [f"{k} {theirs[k]} -> {mine[k]}" for k in mine if mine[k] != theirs[k]]


def identity_of(fd: int, name: str) -> SourceIdentity | None:
    """The identity of a regular file or block device; None for a stream (no resume)."""
    st = os.fstat(fd)
    if stat.S_ISREG(st.st_mode):
        return SourceIdentity(
            name, st.st_size, "file", st.st_dev, st.st_ino, 0, st.st_mtime_ns, st.st_ctime_ns
        )
    if stat.S_ISBLK(st.st_mode):
        here = os.lseek(fd, 0, os.SEEK_CUR)  # the size is found by seeking: put it back
        size = os.lseek(fd, 0, os.SEEK_END)
        os.lseek(fd, here, os.SEEK_SET)
        return SourceIdentity(name, size, "device", rdev=st.st_rdev)
    return None


@dataclass(frozen=True)
class Resume:
    offset: int
    tree_state: bytes
    samples: list[Sample]
    name: str
    check_bytes: int  # bytes re-read to verify the samples


def _human(n: int) -> str:
    return f"{n / 2**20:,.1f} MiB"


class Checkpoints:
    """The checkpoints of one source in one repository."""

    def __init__(
        self,
        repo: Repository,
        fd: int,
        identity: SourceIdentity,
        interval: int,
        notify: Notify | None = None,
    ) -> None:
        self.repo = repo
        self.fd = fd
        self.identity = identity
        self.interval = interval
        self.notify = notify or (lambda _message: None)
        key = repo.master.chunk_id_of(b"checkpoint source\0" + identity.name.encode())
        self.prefix = f"{PREFIX}{key.hex()[:32]}."
        self.samples: list[Sample] = []
        self.written: str | None = None

    # -- writing --------------------------------------------------------------------------

    def write(self, tree: TreeBuilder) -> None:
        """Record tree.size as reached. Call only once everything tree references is stored
        and indexed."""
        offset = tree.size
        if not self.samples and tree.last is not None and offset:
            first = self._first_sample(tree)
            if first is not None:
                self.samples.append(first)
        if tree.last is not None:
            length, chunk_id = tree.last
            self._add_sample((offset - length, length, chunk_id.hex() if chunk_id else None))
        body = {
            "format": FORMAT,
            "source": asdict(self.identity),
            "offset": offset,
            "samples": self.samples,
            "tree": base64.b64encode(tree.state()).decode(),
        }
        name = f"{self.prefix}{offset:016x}"
        sealed = self.repo.sealer.seal(json.dumps(body).encode(), AD)
        self.repo.backend.write(name, sealed)
        previous, self.written = self.written, name
        if previous is not None and previous != name:
            self._delete(previous)

    def _first_sample(self, tree: TreeBuilder) -> Sample | None:
        if tree.first is None:
            return None
        length, chunk_id = tree.first
        return (0, length, chunk_id.hex() if chunk_id else None)

    def _add_sample(self, sample: Sample) -> None:
        if self.samples and self.samples[-1] == sample:
            return
        self.samples.append(sample)
        if len(self.samples) > MAX_SAMPLES:  # thin evenly, keep the first and the newest
            self.samples = [*self.samples[:-1:2], self.samples[-1]]

    def _names(self) -> list[str]:
        return [n for n in self.repo.backend.list(PREFIX) if n.startswith(self.prefix)]

    def remove_all(self) -> None:
        """After the snapshot: this source needs no checkpoint any more."""
        for name in self._names():
            self._delete(name)

    def _delete(self, name: str) -> None:
        # Gone already (a concurrent backup of the same source), or kept by an S3 Object Lock
        # retention: either way harmless, a leftover matches only the unchanged source and
        # resuming from it gives the same snapshot. Never fail a backup over it.
        with contextlib.suppress(ObjectNotFound, ObjectLocked):
            self.repo.backend.delete(name)

    # -- resuming -------------------------------------------------------------------------

    def find(self) -> Resume | None:
        """The furthest checkpoint of this source that still matches it, verified; None when
        there is none (each one ignored is announced through notify)."""
        names = sorted(self._names(), reverse=True)
        for name in names:
            try:
                resume = self._verify(name)
            except (MoverError, OSError, ValueError, KeyError, TypeError) as exc:
                self.notify(f"ignoring checkpoint {name}: {exc}")
                continue
            if resume is not None:
                self.samples = list(resume.samples)
                self.written = name
                return resume
        return None

    def _verify(self, name: str) -> Resume | None:
        raw = self.repo.sealer.open(self.repo.backend.read(name), AD, name)
        body = json.loads(raw)
        if body.get("format") != FORMAT:
            raise IntegrityError(f"unknown checkpoint format {body.get('format')}")
        offset = int(body["offset"])
        recorded = SourceIdentity(**body["source"])
        differences = self.identity.differences(recorded)
        where = f"checkpoint at {_human(offset)} of {self.identity.name}"
        if differences:
            self.notify(f"ignoring {where}: the source changed ({', '.join(differences)})")
            return None
        samples: list[Sample] = [(int(o), int(n), i) for o, n, i in body["samples"]]
        check_bytes = 0
        for sample_offset, length, chunk_hex in samples:
            data = os.pread(self.fd, length, sample_offset)
            check_bytes += len(data)
            same = len(data) == length and (
                is_zero(data)
                if chunk_hex is None
                else self.repo.master.chunk_id_of(data).hex() == chunk_hex
            )
            if not same:
                self.notify(
                    f"ignoring {where}: the source's bytes at {sample_offset} changed since"
                )
                return None
        tree_state = base64.b64decode(body["tree"])
        builder = TreeBuilder.from_state(_no_store, tree_state)
        if builder.size != offset:
            raise IntegrityError(f"tree covers {builder.size} bytes, not {offset}")
        node_ids, chunk_ids = builder.references()
        index = self.repo.index
        missing = sum(1 for chunk_id in chunk_ids if chunk_id not in index)
        for node_id in node_ids:  # one node at a time: memory O(fanout x depth)
            if node_id not in index:
                missing += 1
                continue
            for _, node in nodes(self.repo.read_blob, node_id):
                missing += sum(1 for chunk_id in leaf_chunks(node) if chunk_id not in index)
        if missing:
            self.notify(
                f"ignoring {where}: {missing} of its chunks are no longer in the repository"
            )
            return None
        return Resume(offset, tree_state, samples, name, check_bytes)


def _no_store(node: bytes) -> bytes:
    raise AssertionError("a builder restored to be inspected stores nothing")


def restored_tree(store: StoreNode, resume: Resume | None) -> TreeBuilder:
    return TreeBuilder.from_state(store, resume.tree_state) if resume else TreeBuilder(store)


@dataclass(frozen=True)
class Held:
    """What one checkpoint keeps alive for prune: a resumed backup will reference these."""

    name: str
    age: float  # seconds since it was written
    node_ids: list[bytes]  # stored tree nodes (their subtrees count too)
    chunk_ids: list[bytes]  # chunks of the partial leaf


def held_by_checkpoints(repo: Repository) -> list[Held]:
    """Every checkpoint in the repository, for prune: O(fanout x depth) ids each."""
    found = []
    now = time.time()
    for name in repo.backend.list(PREFIX):
        try:
            body = json.loads(repo.sealer.open(repo.backend.read(name), AD, name))
            age = max(0.0, now - repo.backend.mtime(name))
        except ObjectNotFound:
            continue  # superseded or finished while we listed
        builder = TreeBuilder.from_state(_no_store, base64.b64decode(body["tree"]))
        node_ids, chunk_ids = builder.references()
        found.append(Held(name, age, node_ids, chunk_ids))
    return found
