"""Listing and resolving snapshots, and small JSON documents stored as snapshots. Part of
mover.api: import from mover.api, not from here."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, cast

from mover.api.volumes import BackupOptions, RestoreOptions, backup, restore
from mover.errors import IntegrityError, UsageError
from mover.objects.snapshot import Snapshot

if TYPE_CHECKING:
    from mover.objects.repository import (
        Repository,
    )
    from mover.objects.tree import Extent


# -- snapshots ----------------------------------------------------------------------------


def snapshots(repo: Repository) -> list[Snapshot]:
    """Every readable snapshot, oldest first. Unreadable ones are skipped and recorded in
    `repo.damage` (one bad object must not hide the others)."""
    return repo.snapshots()


def find_snapshot(repo: Repository, ref: str) -> Snapshot:
    """The snapshot `ref` names: a full id, a unique prefix of 4 or more hex digits, or
    `latest` (the newest readable one).

    Raises UsageError (no such snapshot, an ambiguous prefix, no snapshots yet),
    IntegrityError (the snapshot exists but cannot be read)."""
    return repo.find_snapshot(ref)


def has_snapshot(repo: Repository, snapshot_id: str) -> bool:
    """Whether the snapshot with this full id is stored: one existence check, nothing
    decrypted (docs/format.md: snapshots/<id>)."""
    return repo.backend.exists(f"snapshots/{snapshot_id}")


def extents(repo: Repository, tree: str) -> Iterator[Extent]:
    """The extents (chunks and holes, in offset order) of the chunk tree whose root id is
    `tree` (hex, as Snapshot.tree): reading each chunk by its id (Repository.read_blob)
    verifies it. Memory stays bounded whatever the volume's size.

    Raises (while iterating) IntegrityError or StorageError for a node that cannot be read."""
    from mover.objects.tree import walk

    return walk(repo.read_blob, bytes.fromhex(tree))


def damaged_snapshots(repo: Repository) -> dict[str, str]:
    """The snapshots found unreadable by the listings so far (snapshots()): full id -> why."""
    return repo.damaged_snapshots()


def resolve_snapshot_ids(repo: Repository, refs: Sequence[str]) -> list[str]:
    """The full ids that `refs` (ids, unique prefixes of 4 or more hex digits, or `latest`)
    name, damaged snapshots included (they can be forgotten), each once, sorted. Every ref is
    resolved before the answer: one that names no snapshot, or several, fails them all.

    Raises UsageError (an unknown or ambiguous ref; `latest` with no snapshots)."""
    listed = repo.snapshots()
    readable = [s.id for s in listed]

    def resolve(ref: str) -> str:
        if ref != "latest":
            return repo.resolve_snapshot_id(ref, readable)
        if not listed:
            raise UsageError("the repository has no snapshots yet")
        return listed[-1].id

    return sorted(set(map(resolve, refs)))


@dataclass(frozen=True)
class RepositoryStats:
    """What a repository holds: its snapshots' logical bytes against the bytes its packs
    take (deduplication and compression together)."""

    snapshots: int
    logical_bytes: int  # the sum of every readable snapshot's size
    stored_bytes: int  # the packs' sizes (index and snapshot objects not counted)
    packs: int
    chunks: int  # distinct chunks in the index

    @property
    def ratio(self) -> float | None:
        """logical / stored bytes; None when nothing is stored."""
        return self.logical_bytes / self.stored_bytes if self.stored_bytes else None

    def as_dict(self) -> dict[str, object]:
        ratio = self.ratio
        return {
            "snapshots": self.snapshots,
            "logical_bytes": self.logical_bytes,
            "stored_bytes": self.stored_bytes,
            "packs": self.packs,
            "chunks": self.chunks,
            "ratio": None if ratio is None else round(ratio, 3),
        }


def repository_stats(repo: Repository) -> RepositoryStats:
    """Counts what the repository holds: its snapshots listed and every pack's size asked
    for (one request per pack on S3), the index loaded.

    Raises StorageError."""
    found = repo.snapshots()
    packs = list(repo.backend.list("data/"))
    stored = sum(repo.backend.size(p) for p in packs)
    return RepositoryStats(
        snapshots=len(found),
        logical_bytes=sum(s.size for s in found),
        stored_bytes=stored,
        packs=len(packs),
        chunks=len(repo.index),
    )


# -- documents ----------------------------------------------------------------------------


def put_document(repo: Repository, doc: Mapping[str, Any], name: str) -> Snapshot:
    """Store a JSON document (e.g. a capture manifest) as a snapshot whose source is `name`:
    encrypted, chunked and deduplicated like a volume. It is written canonically (sorted keys,
    no spaces), so the same document has the same tree root: an unchanged document costs
    nothing the second time, and its root attests its content.

    Raises StorageError, RepositoryError (the lock could not be held)."""
    body = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    # Through a file: a backup reads a file descriptor (a volume's), and a document stored
    # this way is the same snapshot as one backed up from a file with these bytes.
    with tempfile.TemporaryFile() as f:
        f.write(body)
        f.flush()
        f.seek(0)
        return backup(repo, cast(BinaryIO, f), name, options=BackupOptions(threads=1))


def get_document(repo: Repository, ref: str, *, kind: str = "JSON document") -> dict[str, Any]:
    """The JSON object stored by put_document in the snapshot `ref` (as find_snapshot takes
    it). `kind` names what was expected, for the error when the snapshot holds something else.

    Raises UsageError (no such snapshot), IntegrityError (damage; or not a JSON object: "snapshot
    ID is not a KIND"), StorageError."""
    snapshot = find_snapshot(repo, ref)
    with tempfile.TemporaryDirectory(prefix="mover-doc-") as tmp:
        target = Path(tmp) / "doc.json"
        restore(repo, snapshot, os.fspath(target), options=RestoreOptions(threads=1))
        raw = target.read_bytes()
    try:
        doc = json.loads(raw)
    except ValueError:
        doc = None
    if not isinstance(doc, dict):
        raise IntegrityError(f"snapshot {ref[:8]} is not a {kind}")
    return doc
