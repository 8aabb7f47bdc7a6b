"""A repository: config and keys, and reading and writing its objects on a backend.

Layout (docs/format.md): config, keys/<id>, data/<xx>/<pack id>, index/<id>, snapshots/<id>.
"""

from __future__ import annotations

import array
import base64
import json
import os
import secrets
import socket
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

import blake3

from mover.chunking import ChunkerParams
from mover.content import blob
from mover.content import index as index_file
from mover.content.index import Index, Location
from mover.content.pack import PackEntry, pack_name
from mover.crypto import WRONG_PASSWORD, KdfParams, MasterKey, unwrap, wrap
from mover.errors import (
    IntegrityError,
    ObjectNotFound,
    RepositoryError,
    UsageError,
    WrongPassword,
)
from mover.objects.snapshot import Snapshot
from mover.objects.tree import leaf_chunks, nodes
from mover.storage.base import Backend, Stream
from mover.storage.s3config import ObjectLock
from mover.storage.stack import apply_object_lock

FORMAT_VERSION = 1
CONFIG = "config"
DEFAULT_PACK_SIZE = 16 << 20  # restic's default too; pack buffers (S3) scale with it
DEFAULT_ZSTD_LEVEL = 3
# Entries per index file that maintenance writes: ~11 MiB sealed; a backup reads them all.
INDEX_FILE_ENTRIES = 1 << 18


@dataclass(frozen=True)
class RepoConfig:
    chunker: ChunkerParams
    pack_size: int = DEFAULT_PACK_SIZE
    zstd_level: int = DEFAULT_ZSTD_LEVEL
    # S3 Object Lock retention for every object written (None: none). In the sealed config so
    # that every writer applies the same retention and no one can lower it unnoticed.
    object_lock: ObjectLock | None = None
    # `compression: auto`: each backup steers the level between 1 and zstd_level by what bounds
    # it (mover.pipeline.level). Absent from older configs, which keep their fixed level.
    adaptive_level: bool = False

    def to_json(self) -> bytes:
        c = self.chunker
        body: dict[str, object] = {
            "chunker": {
                "algorithm": "fastcdc-v1",
                "min_size": c.min_size,
                "avg_size": c.avg_size,
                "max_size": c.max_size,
                "seed": c.seed.hex(),
            },
            "pack_size": self.pack_size,
            "zstd_level": self.zstd_level,
        }
        if self.object_lock is not None:
            body["object_lock"] = {"mode": self.object_lock.mode, "days": self.object_lock.days}
        if self.adaptive_level:
            body["compression"] = "auto"
        return json.dumps(body).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> RepoConfig:
        body = json.loads(raw)
        c = body["chunker"]
        params = ChunkerParams(
            c["min_size"], c["avg_size"], c["max_size"], bytes.fromhex(c["seed"])
        )
        lock = body.get("object_lock")
        object_lock = ObjectLock(lock["mode"], lock["days"]) if lock else None
        adaptive = body.get("compression") == "auto"
        return cls(params, body["pack_size"], body["zstd_level"], object_lock, adaptive)


REPAIR_CONFIG = "`mover repair config --from REPLICA` restores it from a replica"


def _has_keys(backend: Backend) -> bool:
    return any(True for _ in backend.list("keys/"))


class HeldLock(Protocol):
    def ensure_held(self) -> None: ...


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def write_key(backend: Backend, master: MasterKey, password: bytes, kdf: KdfParams) -> str:
    """A new key file: the master key wrapped by a key derived from `password`. Named by the
    BLAKE3 of its bytes, so damage to it is told apart from a wrong password."""
    salt = os.urandom(16)
    key_doc = {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "hostname": socket.gethostname(),
        "kdf": "argon2id",
        "memory_kib": kdf.memory_kib,
        "iterations": kdf.iterations,
        "lanes": kdf.lanes,
        "salt": _b64(salt),
        "wrapped": _b64(wrap(master, password, kdf, salt)),
    }
    key_raw = json.dumps(key_doc).encode()
    name = f"keys/{blake3.blake3(key_raw).hexdigest()}"
    backend.write(name, key_raw)
    return name


def resolve_prefix(ref: str, ids: Iterable[str], noun: str, listing: str, also: str = "") -> str:
    """The one id of `ids` that `ref` (an id or a prefix of at least 4 hex digits) names; a
    UsageError saying what to give otherwise (`also`: other accepted forms, e.g. "`latest` or ")."""
    if len(ref) < 4 or any(c not in "0123456789abcdef" for c in ref):
        raise UsageError(f"{ref!r} is not a {noun} id: give {also}at least 4 hex digits of an id")
    matches = sorted(i for i in set(ids) if i.startswith(ref))
    if not matches:
        raise UsageError(f"no {noun} {ref!r} in this repository; see `{listing}`")
    if len(matches) > 1:
        raise UsageError(f"{noun} id prefix {ref!r} is ambiguous; give more digits")
    return matches[0]


def short_name(name: str) -> str:
    """An object's name for messages: its folder and the first 16 hex digits of its id."""
    folder, _, object_id = name.rpartition("/")
    return f"{folder}/{object_id[:16]}" if folder else name


def unlock_master(backend: Backend, password: bytes) -> MasterKey:
    """The master key, from the first key file the password opens."""
    return find_key(backend, password)[1]


def find_key(backend: Backend, password: bytes) -> tuple[str, MasterKey]:
    """(name of the first key file the password opens, the master key it wraps).

    A key file is named by the BLAKE3 of its bytes, so a damaged one is told apart from one
    that another password wraps: "wrong password" is said only when an intact key refused it."""
    intact = damaged = 0
    for name in backend.list("keys/"):
        try:
            raw = backend.read(name)
        except ObjectNotFound:
            continue
        if blake3.blake3(raw).hexdigest() != name.removeprefix("keys/"):
            damaged += 1
            continue
        try:
            key_doc = json.loads(raw)
            kdf = KdfParams(key_doc["memory_kib"], key_doc["iterations"], key_doc["lanes"])
            wrapped = base64.b64decode(key_doc["wrapped"])
            salt = base64.b64decode(key_doc["salt"])
        except (ValueError, KeyError, TypeError):
            damaged += 1
            continue
        intact += 1
        try:
            return name, unwrap(wrapped, password, kdf, salt)
        except RepositoryError:
            continue
    if not intact:
        raise RepositoryError(
            f"no key file in {backend.location} could be read "
            f"({f'{damaged} damaged, none other' if damaged else 'none present'}); "
            "the repository cannot be "
            "opened: `mover repair config --from REPLICA` restores keys from a replica"
        )
    if damaged:
        raise WrongPassword(f"{WRONG_PASSWORD} ({damaged} other key files are damaged)")
    raise WrongPassword(WRONG_PASSWORD)


class Repository:
    def __init__(self, backend: Backend, master: MasterKey, config: RepoConfig, repo_id: str):
        self.backend = backend
        self.master = master
        self.sealer = master.sealer()
        self.config = config
        self.id = repo_id
        self._index: Index | None = None
        # Objects found damaged while reading (name -> why), skipped so that everything that
        # does not depend on them keeps working; commands report them (and prune refuses to
        # run while any is known: what a damaged index file names would look unreferenced).
        self.damage: dict[str, str] = {}
        # Per thread (one Repository may serve several backups at once): the writer lock held
        # while a backup writes here (mover.objects.locks.writer), checked before index files and
        # snapshots are written; and a restore's or check's shared lock.
        self._held = threading.local()

    @property
    def lock(self) -> HeldLock | None:
        held: HeldLock | None = getattr(self._held, "lock", None)
        return held

    @lock.setter
    def lock(self, value: HeldLock | None) -> None:
        self._held.lock = value

    @property
    def reader_lock(self) -> object | None:
        return getattr(self._held, "reader_lock", None)

    @reader_lock.setter
    def reader_lock(self, value: object | None) -> None:
        self._held.reader_lock = value

    # -- creation and opening -------------------------------------------------------------

    @classmethod
    def init(
        cls,
        backend: Backend,
        password: bytes,
        config: RepoConfig,
        kdf: KdfParams | None = None,
        master: MasterKey | None = None,
    ) -> Repository:
        """A new repository with a fresh master key, or with `master` (a replica that shares
        the key of the repository it copies, see mover.pipeline.replicate)."""
        if backend.exists(CONFIG):
            raise RepositoryError(
                f"{backend.location} already holds a repository; nothing was changed"
            )
        found = list(backend.list(""))
        if found and all(name.startswith("keys/") for name in found):
            # Key files and nothing else: an init killed before its config (written last).
            # Nothing was ever stored with those keys; they are replaced.
            for name in found:
                backend.delete(name)
        elif found:
            raise RepositoryError(
                f"{backend.location} is not empty; init a repository in an empty or new directory"
            )
        if not apply_object_lock(backend, config.object_lock) and config.object_lock:
            raise UsageError(f"{backend.location}: Object Lock retention needs an s3:// repository")
        master = master or MasterKey.generate()
        repo_id = secrets.token_hex(16)
        write_key(backend, master, password, kdf or KdfParams())
        sealed = master.sealer().seal(config.to_json(), b"config")
        doc = {"mover_repository": FORMAT_VERSION, "id": repo_id, "sealed": _b64(sealed)}
        # Written last: a directory without config is not (yet) a repository.
        backend.write(CONFIG, json.dumps(doc).encode())
        return cls(backend, master, config, repo_id)

    @classmethod
    def open(cls, backend: Backend, password: bytes) -> Repository:
        try:
            doc = json.loads(backend.read(CONFIG))
            version = doc["mover_repository"]
        except ObjectNotFound:
            if _has_keys(backend):  # a repository that lost its config, not an empty place
                raise RepositoryError(
                    f"{backend.location}: config is missing while keys are there (damage, or "
                    f"an init that did not finish); {REPAIR_CONFIG}"
                ) from None
            raise RepositoryError(
                f"{backend.location} is not a mover repository (no config); "
                "create one with `mover init`"
            ) from None
        except (ValueError, KeyError, TypeError):
            if _has_keys(backend):
                raise RepositoryError(
                    f"{backend.location}: config is damaged (not a mover config); {REPAIR_CONFIG}"
                ) from None
            raise RepositoryError(f"{backend.location}: config is not a mover config") from None
        if version != FORMAT_VERSION:
            raise RepositoryError(
                f"{backend.location} uses repository format {version}; "
                f"this mover reads format {FORMAT_VERSION}: upgrade mover"
            )
        master = unlock_master(backend, password)
        try:
            sealed = base64.b64decode(doc["sealed"])
        except (ValueError, KeyError, TypeError):
            raise RepositoryError(
                f"{backend.location}: config is damaged; {REPAIR_CONFIG}"
            ) from None
        try:
            raw = master.sealer().open(sealed, b"config", "config")
        except IntegrityError as exc:
            raise IntegrityError(f"{backend.location}: {exc}; {REPAIR_CONFIG}") from None
        try:
            config = RepoConfig.from_json(raw)
        except (ValueError, KeyError, TypeError):
            raise RepositoryError(f"{backend.location}: config has an unknown format") from None
        # Every writer applies the repository's retention (a no-op off S3, e.g. a local replica).
        apply_object_lock(backend, config.object_lock)
        return cls(backend, master, config, doc["id"])

    def close(self) -> None:
        """Releases the backend (connections, the S3 event loop thread)."""
        self.backend.close()

    # -- index ----------------------------------------------------------------------------

    @property
    def index(self) -> Index:
        if self._index is None:
            index = Index()
            self._load_index_files(index, list(self.backend.list("index/")))
            self._index = index
        return self._index

    def _load_index_files(self, index: Index, names: list[str]) -> None:
        """Loads `names`. A file deleted between the listing and the read was replaced by a
        prune, which writes the replacement first: the listing is taken again for files not
        seen yet, until none is missing."""
        missing: list[str] = []

        def files(batch: list[str]) -> Iterator[tuple[str, list[bytes], memoryview, int]]:
            for name in batch:
                if name in self.damage:
                    continue
                try:
                    sealed = self.backend.read(name)
                    rows = index_file.decode_rows(self.sealer, sealed, short_name(name))
                except ObjectNotFound:
                    missing.append(name)
                    continue
                except IntegrityError as exc:
                    self.damage[name] = str(exc)
                    continue
                yield (name, *rows)

        index.load(files(names), self.damage)
        while missing:
            seen = set(index.files) | set(missing) | set(self.damage)
            missing.clear()
            index.load(files(sorted(set(self.backend.list("index/")) - seen)), self.damage)

    def refresh_index(self) -> None:
        """Brings a loaded index up to date: files written by others since are added; if any
        file it read is gone (prune replaced it), the index is read again from scratch, so it
        never names a pack that prune has condemned since."""
        if self._index is None:
            return
        names = set(self.backend.list("index/"))
        if set(self._index.files) - names:
            self._index = None
            return
        self._load_index_files(self._index, sorted(names - set(self._index.files)))

    def read_index_file(self, name: str) -> Iterator[tuple[bytes, Location]]:
        return index_file.decode(self.sealer, self.backend.read(name), name)

    def write_index(self, entries: list[tuple[bytes, PackEntry]], remember: bool = True) -> str:
        """remember=False: not added to the index in memory (prune, which reads it no more)."""
        if self.lock is not None:
            # A writer taken for dead must not publish an index: others would dedup against
            # packs a prune may have deleted meanwhile.
            self.lock.ensure_held()
        sealed = index_file.encode(self.sealer, entries)
        name = f"index/{blake3.blake3(sealed).hexdigest()}"
        self.backend.write(name, sealed)
        if not remember:
            return name
        index = self.index
        for pack_id, e in entries:
            index.add(e.chunk_id, Location(pack_id, e.offset, e.length, e.kind))
        index.files[name] = array.array("I", sorted({index.pack_number(p) for p, _ in entries}))
        return name

    def _index_what_prune_condemned(self, snapshot: Snapshot) -> None:
        """A prune that ran during this backup may have condemned packs this backup used
        (its index was read before): they are still stored (prune waits for this writer to
        end before deleting them), and are indexed again here, before the snapshot that needs
        them exists, so the snapshot restores at once and prune keeps them.

        Costs nothing unless an index file this writer read is gone, i.e. a prune ran."""
        if self._index is None:
            return
        now = set(self.backend.list("index/"))
        if set(self._index.files) <= now:
            return
        current = Index()
        self._load_index_files(current, sorted(now))
        missing: list[tuple[bytes, PackEntry]] = []
        for node_id, node in nodes(self.read_blob, bytes.fromhex(snapshot.tree)):
            for chunk_id in (node_id, *leaf_chunks(node)):
                if chunk_id in current:
                    continue
                location = self._index.get(chunk_id)
                if location is None:
                    raise IntegrityError(f"chunk {chunk_id.hex()[:16]} is in no index")
                current.add(chunk_id, location)
                entry = PackEntry(chunk_id, location.offset, location.length, location.kind)
                missing.append((location.pack_id, entry))
                if len(missing) >= 65536:
                    self.write_index(missing)
                    missing = []
        if missing:
            self.write_index(missing)

    # -- blobs and packs ------------------------------------------------------------------

    def write_pack(self, pack_id: bytes, data: bytes | memoryview) -> None:
        self.backend.write(pack_name(pack_id), data)

    def open_pack_stream(self) -> Stream | None:
        """A stream for a pack whose name is not known yet (None: the backend offers none;
        mover.storage.base); commit_pack names it."""
        return self.backend.open_stream("data/")

    def commit_pack(self, pack_id: bytes, stream: Stream) -> None:
        stream.commit(pack_name(pack_id))

    def locate(self, chunk_id: bytes) -> Location:
        """Where the blob `chunk_id` is stored; IntegrityError when no index names it."""
        location = self.index.get(chunk_id)
        if location is None:
            raise IntegrityError(f"chunk {chunk_id.hex()[:16]} is in no index: repository damaged")
        return location

    def read_blob(self, chunk_id: bytes) -> bytes:
        location = self.locate(chunk_id)
        sealed = self.backend.read(pack_name(location.pack_id), location.offset, location.length)
        return blob.decode(self.master, self.sealer, chunk_id, sealed)

    # -- snapshots ------------------------------------------------------------------------

    def write_snapshot(self, snapshot: Snapshot) -> str:
        if self.lock is not None:
            self.lock.ensure_held()
            self._index_what_prune_condemned(snapshot)  # may walk the whole tree: check again
            self.lock.ensure_held()
        body = snapshot.to_json()
        snapshot_id = self.master.chunk_id_of(b"snapshot" + body).hex()
        self.backend.write(f"snapshots/{snapshot_id}", self.sealer.seal(body, b"snapshot"))
        return snapshot_id

    def snapshots(self) -> list[Snapshot]:
        """Every snapshot that can be read, oldest first. One that cannot (damaged, altered,
        not a manifest) is skipped and recorded in `damage`: one bad object must not hide the
        others (damaged_snapshots() names them)."""
        found = []
        for name in self.backend.list("snapshots/"):
            snapshot_id = name.rsplit("/", 1)[1]
            try:
                sealed = self.backend.read(name)
                raw = self.sealer.open(sealed, b"snapshot", f"snapshot {snapshot_id[:8]}")
                found.append(Snapshot.from_json(raw, snapshot_id))
            except ObjectNotFound:
                continue  # forgotten between the listing and the read
            except IntegrityError as exc:
                self.damage[name] = str(exc)
            except (ValueError, TypeError, KeyError):
                self.damage[name] = f"snapshot {snapshot_id[:8]} is not a snapshot manifest"
        return sorted(found, key=lambda s: (s.time, s.id))

    def damaged_snapshots(self) -> dict[str, str]:
        """Ids of the snapshots found unreadable so far (by snapshots()) -> why."""
        return {
            name.removeprefix("snapshots/"): reason
            for name, reason in self.damage.items()
            if name.startswith("snapshots/")
        }

    def find_snapshot(self, ref: str) -> Snapshot:
        """By id, unique id prefix, or `latest` (the newest that can be read)."""
        snapshots = self.snapshots()
        if ref == "latest":
            if not snapshots:
                raise UsageError("the repository has no snapshots yet")
            return snapshots[-1]
        found = self.resolve_snapshot_id(ref, [s.id for s in snapshots])
        damaged = self.damaged_snapshots()
        if found in damaged:
            raise IntegrityError(
                f"snapshot {found[:8]} cannot be read ({damaged[found]}); "
                "`mover repair snapshots` removes it, `mover forget` too"
            )
        return next(s for s in snapshots if s.id == found)

    def resolve_snapshot_id(self, ref: str, readable: list[str] | None = None) -> str:
        """The full id that `ref` (an id or unique prefix) names among the snapshots, damaged
        ones included (they can still be forgotten)."""
        if readable is None:
            readable = [s.id for s in self.snapshots()]
        ids = {*readable, *self.damaged_snapshots()}
        return resolve_prefix(ref, ids, "snapshot", "mover snapshots", "`latest` or ")


class IndexWriter:
    """Index entries in, index files of INDEX_FILE_ENTRIES out, written as they fill; not
    added to the index in memory (maintenance reads it no more: at 20M chunks re-adding was a
    third of prune's time). `on_file` is told each file written."""

    def __init__(self, repo: Repository, on_file: Callable[[str], None] | None = None) -> None:
        self.repo = repo
        self.on_file = on_file
        self.entries: list[tuple[bytes, PackEntry]] = []
        self.names: list[str] = []
        self.packs: set[bytes] = set()

    def add(self, pack_id: bytes, entry: PackEntry) -> None:
        self.entries.append((pack_id, entry))
        self.packs.add(pack_id)
        if len(self.entries) >= INDEX_FILE_ENTRIES:
            self.flush()

    def flush(self) -> None:
        if self.entries:
            name = self.repo.write_index(self.entries, remember=False)
            self.names.append(name)
            if self.on_file is not None:
                self.on_file(name)
            self.entries = []
