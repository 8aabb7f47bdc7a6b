"""The damage matrix (issue 13): each kind of damage (a flipped byte, a truncation, a deletion)
to each kind of object (a data pack, a pack shared by two snapshots, the pack holding a
snapshot's tree node, an index file, a snapshot file, the config, a key file), through the real
command line on real repositories.

For each case: `check` (plain and --read-data) exits 1 and names exactly the snapshots that
depend on the damaged object, worked out independently from the pristine repository through
the API; every other snapshot still restores bit-exact and is listed; the matching `mover
repair` brings the repository back to a clean `check --read-data` with every snapshot whole;
and nothing the repair should not touch changed. Last, `repair data --from` a replica that
lacks the lost data too: it says which snapshots stay damaged and `restore --partial` restores
everything else.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mover.content.index import Location
from mover.content.pack import KIND_TREE, pack_name
from mover.objects.repository import Repository
from mover.objects.tree import leaf_chunks, nodes, walk
from mover.storage.local import LocalBackend
from tests.integration.conftest import (
    PASSWORD,
    MiB,
    assert_one_error_line,
    assert_same_file,
    backup,
    init_repo,
    mover,
    ok,
    pack_files,
    restore,
    stderr_lines,
    tree_state,
    write_image,
)
from tests.integration.test_damage import flip_byte

# ~65 s on 2 cores: runs in CI (CI=true) and with -m slow; test_damage.py is the quick check.
pytestmark = pytest.mark.slow

IMAGE_SIZE = 8 * MiB
KINDS = ("flip", "truncate", "delete")
PACKS = ("pack", "shared-pack", "tree-pack")
OBJECTS = (*PACKS, "index", "snapshot", "config", "key")
KDF = ("--kdf-memory", "8MiB")


# -- the pristine repository, its replicas, and what depends on what -----------------------


@dataclass
class Pristine:
    repo: Path
    replica: Path  # made by `replicate --init-target` after every backup
    old_replica: Path  # made the same way before the last backup (D)
    ids: list[str]  # A, B, C, D: oldest first
    images: dict[str, Path]  # snapshot id -> the image it holds
    uses: dict[str, set[bytes]]  # snapshot id -> every blob it needs (tree nodes and chunks)
    roots: dict[str, bytes]
    locations: dict[bytes, Location]
    index_files: dict[str, set[bytes]]  # index file name -> the blob ids it names
    replica_locations: dict[bytes, Location]
    old_replica_blobs: set[bytes]

    def users(self, blobs: Iterable[bytes]) -> set[str]:
        """The snapshots that need any of `blobs`."""
        wanted = set(blobs)
        return {s for s, used in self.uses.items() if used & wanted}

    def pack_blobs(self, pack_id: bytes) -> set[bytes]:
        return {c for c, loc in self.locations.items() if loc.pack_id == pack_id}

    def extents(self, snapshot_id: str, blobs: set[bytes]) -> list[tuple[int, int]]:
        """(offset, length) of the snapshot's extents whose chunk is one of `blobs`, merged."""
        repository = _open(self.repo)
        out: list[tuple[int, int]] = []
        for e in walk(repository.read_blob, self.roots[snapshot_id]):
            if e.chunk_id not in blobs:
                continue
            if out and out[-1][0] + out[-1][1] == e.offset:
                out[-1] = (out[-1][0], out[-1][1] + e.length)
            else:
                out.append((e.offset, e.length))
        return out


def _open(path: Path) -> Repository:
    return Repository.open(LocalBackend(path), PASSWORD.encode())


def _survey(repo: Path) -> tuple[dict[str, set[bytes]], dict[str, bytes], dict[bytes, Location]]:
    repository = _open(repo)
    uses, roots = {}, {}
    for snapshot in repository.snapshots():
        root = bytes.fromhex(snapshot.tree)
        needed: set[bytes] = set()
        for node_id, node in nodes(repository.read_blob, root):
            needed.add(node_id)
            needed.update(leaf_chunks(node))
        uses[snapshot.id], roots[snapshot.id] = needed, root
    return uses, roots, dict(repository.index.items())


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Pristine:
    base = tmp_path_factory.mktemp("matrix")
    repo = init_repo(base / "repo", "--pack-size", "1MiB")
    image_a = write_image(base / "a.img", 1, IMAGE_SIZE)
    image_b = write_image(base / "b.img", 2, IMAGE_SIZE)
    image_c = write_image(base / "c.img", 3, IMAGE_SIZE)
    # D: A with 2 MiB in the middle replaced (other data): the pair that shares data.
    image_d = base / "d.img"
    patch = write_image(base / "patch.img", 4, 2 * MiB).read_bytes()
    data = bytearray(image_a.read_bytes())
    data[3 * MiB : 5 * MiB] = patch
    image_d.write_bytes(bytes(data))
    images = {}
    for image in (image_a, image_b, image_c):
        images[backup(repo, image)["id"]] = image
    old_replica = base / "old-replica"
    ok(mover("replicate", "--repo", repo, "--to", old_replica, "--init-target", *KDF))
    d = backup(repo, image_d)
    assert d["stats"]["reused_bytes"] > 0 and d["stats"]["new_chunks"] > 0, d["stats"]
    images[d["id"]] = image_d
    replica = base / "replica"
    ok(mover("replicate", "--repo", repo, "--to", replica, "--init-target", *KDF))

    uses, roots, locations = _survey(repo)
    repository = _open(repo)
    ids = [s.id for s in repository.snapshots()]
    assert ids == list(images), "snapshots are listed oldest first"
    index_files = {
        name: {c for c, _ in repository.read_index_file(name)}
        for name in repository.backend.list("index/")
    }
    replica_uses, _, replica_locations = _survey(replica)
    assert replica_uses == uses, "the replica holds the same snapshots and blobs"
    old_uses, _, _ = _survey(old_replica)
    assert sorted(old_uses) == sorted(ids[:3])
    return Pristine(
        repo=repo,
        replica=replica,
        old_replica=old_replica,
        ids=ids,
        images=images,
        uses=uses,
        roots=roots,
        locations=locations,
        index_files=index_files,
        replica_locations=replica_locations,
        old_replica_blobs=set().union(*old_uses.values()),
    )


# -- the damaged object and what check must say about it -----------------------------------


@dataclass(frozen=True)
class Victim:
    name: str  # the object, relative to the repository's root
    flip_at: int  # where a flipped byte goes
    damaged: set[str]  # the snapshots `check --read-data` must name
    damaged_plain: set[str]  # ... and plain `check` (it reads no data, only tree nodes)
    objects: list[str]  # the damaged objects `check --read-data` must name
    objects_plain: list[str]


def _data_pack(p: Pristine, users: set[str]) -> bytes:
    """A pack without tree nodes each of whose blobs is needed by exactly `users` (of those,
    the one with the most blobs)."""
    found: dict[bytes, set[bytes]] = {}
    for chunk_id, loc in p.locations.items():
        found.setdefault(loc.pack_id, set()).add(chunk_id)
    fits = [
        (len(blobs), pack_id)
        for pack_id, blobs in found.items()
        if all(p.locations[c].kind != KIND_TREE and p.users({c}) == users for c in blobs)
    ]
    assert fits, f"no data pack used by exactly {sorted(users)}"
    return max(fits)[1]


def victim(p: Pristine, obj: str, kind: str) -> Victim:
    a, b, c, d = p.ids
    if obj in PACKS:
        if obj == "pack":
            pack_id = _data_pack(p, {b})
        elif obj == "shared-pack":
            pack_id = _data_pack(p, {a, d})
        else:
            pack_id = p.locations[p.roots[c]].pack_id
        name = pack_name(pack_id)
        in_pack = p.pack_blobs(pack_id)
        if obj == "tree-pack":
            root = p.locations[p.roots[c]]
            assert p.users({p.roots[c]}) == {c}
            at = root.offset + root.length // 2  # in the tree node itself
        else:
            at = (p.repo / name).stat().st_size // 2
        if kind != "flip":
            lost = p.users(in_pack)
            return Victim(name, at, lost, lost, [name], [name])
        hit = [
            cid
            for cid in in_pack
            if p.locations[cid].offset <= at < p.locations[cid].offset + p.locations[cid].length
        ]
        lost = p.users(hit or in_pack)  # no blob there: the header, which loses them all
        tree_hit = any(p.locations[cid].kind == KIND_TREE for cid in hit)
        # Plain check reads tree nodes, no data: it sees a damaged node, not a damaged chunk.
        return Victim(name, at, lost, lost if tree_hit else set(), [name], [])
    if obj == "index":
        # The index file naming A's root; D shares A's data, so it needs this file too.
        name = next(n for n, blobs in p.index_files.items() if p.roots[a] in blobs)
        others = set().union(*(blobs for n, blobs in p.index_files.items() if n != name))
        lost = p.users(p.index_files[name] - others)
        at = (p.repo / name).stat().st_size // 2
        named = [] if kind == "delete" else [name]  # a deleted index file leaves no trace
        return Victim(name, at, lost, lost, named, named)
    if obj == "snapshot":
        name = f"snapshots/{b}"
        at = (p.repo / name).stat().st_size // 2
        if kind == "delete":
            # Nothing refers to a snapshot: one deleted leaves a repository that checks clean.
            return Victim(name, at, set(), set(), [], [])
        return Victim(name, at, {b}, {b}, [name], [name])
    if obj == "config":
        name = "config"
    else:
        (key,) = os.listdir(p.repo / "keys")
        name = f"keys/{key}"
    # Nothing can be opened: check names no snapshot (it cannot list them).
    at = (p.repo / name).stat().st_size // 2
    return Victim(name, at, set(), set(), [], [])


def damage(path: Path, kind: str, at: int) -> None:
    if kind == "flip":
        flip_byte(path, at)
    elif kind == "truncate":
        os.truncate(path, path.stat().st_size // 2)
    else:
        path.unlink()


# -- helpers ---------------------------------------------------------------------------------


def files(root: Path, under: str = "") -> dict[str, str]:
    """Every file under root (or root/under): relative path -> sha256 of its bytes."""
    return {
        path: digest
        for path, digest in tree_state(root).items()
        if digest != "<dir>" and path.startswith(under)
    }


def without(state: dict[str, str], *prefixes: str) -> dict[str, str]:
    return {k: v for k, v in state.items() if not k.startswith(prefixes)}


def copy(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def check(repo: Path, *extra: str) -> tuple[subprocess.CompletedProcess[bytes], dict[str, Any]]:
    proc = mover("check", "--repo", repo, "--json", *extra)
    body: dict[str, Any] = json.loads(proc.stdout)
    return proc, body


def assert_check(repo: Path, read_data: bool, snapshots: set[str], objects: list[str]) -> None:
    proc, body = check(repo, *(["--read-data"] if read_data else []))
    damaged = body["damaged_snapshots"]
    assert len(damaged) == len(set(damaged)), damaged
    assert set(damaged) == snapshots, (read_data, body)
    assert body["damaged_objects"] == objects, (read_data, body)
    if snapshots or objects:
        assert proc.returncode == 1 and body["ok"] is False, (read_data, body)
        (line,) = stderr_lines(proc)
        assert line.startswith("mover: error: check found"), line
        for snapshot_id in snapshots:
            assert snapshot_id[:8] in line, line
    else:
        assert proc.returncode == 0 and body["ok"] is True, (read_data, body)
        assert body["errors"] == [] and stderr_lines(proc) == []


def assert_clean(repo: Path) -> None:
    proc, body = check(repo, "--read-data")
    assert proc.returncode == 0, body
    assert body["ok"] is True and body["errors"] == [] and body["damaged_snapshots"] == []


def restore_exact(p: Pristine, repo: Path, ids: Iterable[str], out: Path) -> None:
    """Each snapshot restores bit-exact (several restores at once: they only read)."""
    out.mkdir(exist_ok=True)

    def one(snapshot_id: str) -> None:
        target = out / f"{snapshot_id}.img"
        restore(repo, snapshot_id, target)
        assert_same_file(p.images[snapshot_id], target)
        target.unlink()

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(one, sorted(ids)))


def listing(repo: Path) -> tuple[list[str], list[str]]:
    """`snapshots --json`: the ids listed, and the lines on stderr."""
    proc = ok(mover("snapshots", "--repo", repo, "--json"))
    return [s["id"] for s in json.loads(proc.stdout)], stderr_lines(proc)


def listed(repo: Path) -> list[str]:
    ids, warnings = listing(repo)
    assert warnings == []
    return ids


def assert_fails(proc: subprocess.CompletedProcess[bytes], exit_code: int) -> str:
    """A failed run: one error line last, after warnings naming the damaged objects it skipped
    (if any); nothing on stdout. Returns the error line."""
    lines = stderr_lines(proc)
    assert proc.returncode == exit_code, (proc.returncode, lines)
    assert lines and lines[-1].startswith("mover: error: "), lines
    assert all(line.startswith("mover: warning: ") for line in lines[:-1]), lines
    assert proc.stdout == b""
    return lines[-1]


def one_error_line(proc: subprocess.CompletedProcess[bytes]) -> str:
    """A failed run with --json: the report on stdout, exactly one error line on stderr."""
    lines = stderr_lines(proc)
    assert proc.returncode == 1 and len(lines) == 1, lines
    assert lines[0].startswith("mover: error: "), lines
    return lines[0]


# -- the matrix ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("obj", OBJECTS)
def test_damage(pristine: Pristine, tmp_path: Path, obj: str, kind: str) -> None:
    p = pristine
    repo = copy(p.repo, tmp_path / "repo")
    replica = copy(p.replica, tmp_path / "replica")
    v = victim(p, obj, kind)
    damage(repo / v.name, kind, v.flip_at)
    damaged_state = files(repo)
    replica_state = files(replica)
    if obj in ("config", "key"):
        _config_or_key(p, repo, replica, obj, kind, damaged_state, replica_state, tmp_path)
        return

    # 1. check names exactly the snapshots that depend on the object.
    assert_check(repo, False, v.damaged_plain, v.objects_plain)
    assert_check(repo, True, v.damaged, v.objects)

    # 2. every other snapshot restores bit-exact and is listed; the damaged ones fail.
    lost = v.name.removeprefix("snapshots/") if obj == "snapshot" else None
    readable = [s for s in p.ids if s != lost]
    ids, warnings = listing(repo)
    assert ids == readable
    if lost is not None and kind != "delete":  # named on stderr, beside the JSON list
        assert len(warnings) == 1 and lost[:8] in warnings[0], warnings
    else:
        assert warnings == []
    restore_exact(p, repo, set(readable) - v.damaged, tmp_path / "out")
    for snapshot_id in sorted(v.damaged):
        proc = mover("restore", "--repo", repo, snapshot_id, tmp_path / f"{snapshot_id}.img")
        line = assert_fails(proc, 1)
        assert snapshot_id[:8] in line or "incomplete" in line, line
    if lost is not None and kind == "delete":
        proc = mover("restore", "--repo", repo, lost, tmp_path / "lost.img")
        assert "no snapshot" in assert_fails(proc, 2)
    assert files(repo) == damaged_state, "reading changed the repository"

    # 3. the repair, 4. and what it must not change.
    if obj in PACKS:
        proc = ok(mover("repair", "data", "--repo", repo, "--from", replica, "--json"))
        stats = json.loads(proc.stdout)
        assert stats["unhealed"] == [] and stats["unhealed_snapshots"] == [], stats
        assert stats["healed"] > 0, stats
        if kind != "delete":  # a deleted pack is not there to be found damaged
            assert list(stats["damaged_packs"]) == [v.name], stats
        assert stats["damaged_packs_deleted"] == int(kind != "delete"), stats
        after = files(repo)
        assert v.name not in after
        kept = without(damaged_state, "index/", "locks/", v.name)
        assert {k: after.get(k) for k in kept} == kept, "a pack that was whole changed"
        assert files(replica) == replica_state, "the replica changed"
    elif obj == "index":
        stats = json.loads(ok(mover("repair", "index", "--repo", repo, "--json")).stdout)
        assert stats["damaged_packs"] == {} and stats["index_files_written"] >= 1, stats
        assert without(files(repo), "index/") == without(damaged_state, "index/")
    else:
        _repair_snapshot(p, repo, replica, kind, v, damaged_state, tmp_path)
        return
    assert_clean(repo)
    restore_exact(p, repo, p.ids, tmp_path / "out")
    assert listed(repo) == p.ids


def _repair_snapshot(
    p: Pristine,
    repo: Path,
    replica: Path,
    kind: str,
    v: Victim,
    damaged_state: dict[str, str],
    tmp_path: Path,
) -> None:
    lost = v.name.removeprefix("snapshots/")
    expected = [] if kind == "delete" else [lost]
    dry = json.loads(ok(mover("repair", "snapshots", "--repo", repo, "--dry-run", "--json")).stdout)
    assert [r["id"] for r in dry["would_remove"]] == expected, dry
    assert dry["partial"] == [] and dry["checked"] == len(p.ids) - 1, dry
    assert files(repo) == damaged_state, "--dry-run changed the repository"
    if kind != "delete":
        # `forget` removes a damaged snapshot too (on a copy: repair removes it below).
        other = copy(repo, tmp_path / "forget")
        ok(mover("forget", "--repo", other, lost[:12]))
        assert files(other) == without(damaged_state, v.name)
        shutil.rmtree(other)

    done = json.loads(ok(mover("repair", "snapshots", "--repo", repo, "--json")).stdout)
    assert [r["id"] for r in done["removed"]] == expected, done
    assert files(repo) == without(damaged_state, v.name), "repair changed more than it said"
    rest = [s for s in p.ids if s != lost]
    assert_clean(repo)
    assert listed(repo) == rest
    restore_exact(p, repo, rest, tmp_path / "out")

    # The snapshot comes back from the replica: replicate the other way.
    back = json.loads(ok(mover("replicate", "--repo", replica, "--to", repo, "--json")).stdout)
    assert back["snapshots_copied"] == [lost] and back["chunks_sent"] == 0, back
    assert_clean(repo)
    assert listed(repo) == p.ids
    restore_exact(p, repo, p.ids, tmp_path / "out")
    assert without(files(repo), "snapshots/") == without(damaged_state, "snapshots/")


def _config_or_key(
    p: Pristine,
    repo: Path,
    replica: Path,
    obj: str,
    kind: str,
    damaged_state: dict[str, str],
    replica_state: dict[str, str],
    tmp_path: Path,
) -> None:
    # 1. check cannot open the repository: it says why, on stderr and in its JSON report.
    proc, body = check(repo)
    assert body["ok"] is False and body["damaged_snapshots"] == [] and body["snapshots"] == 0
    (error,) = body["errors"]
    assert one_error_line(proc) == f"mover: error: {error}"
    assert "password" not in error, error
    if obj == "key":
        assert "no key file" in error and "could be read" in error, error
    else:
        assert "config" in error and ("damaged" in error or "missing" in error), error
    assert "repair config --from" in error, error
    # 2. nothing else opens it either (every snapshot needs it), with the same line.
    for args in (
        ("snapshots", "--repo", repo, "--json"),
        ("restore", "--repo", repo, p.ids[0], tmp_path / "a.img"),
        ("check", "--repo", repo, "--read-data"),
    ):
        proc = mover(*args)
        assert assert_one_error_line(proc, exit_code=1) == f"mover: error: {error}"
    assert files(repo) == damaged_state

    # 3. the repair, 4. and what it must not change.
    report = json.loads(
        ok(mover("repair", "config", "--repo", repo, "--from", replica, *KDF, "--json")).stdout
    )
    assert report["config_restored"] is (obj == "config"), report
    assert (report["key_written"] is not None) is (obj == "key"), report
    after = files(repo)
    if obj == "config":
        assert without(after, "config") == without(damaged_state, "config")
        if kind != "delete":  # the repository's id was still there to be read
            pristine_id = json.loads((p.repo / "config").read_bytes())["id"]
            assert json.loads((repo / "config").read_bytes())["id"] == pristine_id
    else:
        assert without(after, "keys/") == without(damaged_state, "keys/")
        new_key = report["key_written"]
        assert {k for k in after if k.startswith("keys/")} == {
            *(k for k in damaged_state if k.startswith("keys/")),
            new_key,
        }
    assert files(replica) == replica_state, "the replica changed"
    assert_clean(repo)
    assert listed(repo) == p.ids
    restore_exact(p, repo, p.ids, tmp_path / "out")


# -- a replica that lacks the data too -------------------------------------------------------


@pytest.mark.parametrize("case", ["damaged-on-both", "old-replica"])
def test_replica_lacks_the_data(pristine: Pristine, tmp_path: Path, case: str) -> None:
    p = pristine
    repo = copy(p.repo, tmp_path / "repo")
    if case == "damaged-on-both":
        # B's data pack deleted here, and each of its blobs flipped on the replica.
        replica = copy(p.replica, tmp_path / "replica")
        pack_id = _data_pack(p, {p.ids[1]})
        lost_blobs = p.pack_blobs(pack_id)
        (repo / pack_name(pack_id)).unlink()
        for chunk_id in lost_blobs:
            loc = p.replica_locations[chunk_id]
            flip_byte(replica / pack_name(loc.pack_id), loc.offset + loc.length // 2)
    else:
        # A chunk only D holds, flipped here; the replica was made before D.
        replica = copy(p.old_replica, tmp_path / "replica")
        d = p.ids[3]
        only_d = sorted(
            c
            for c in p.uses[d] - p.old_replica_blobs
            if p.locations[c].kind != KIND_TREE and p.users({c}) == {d}
        )
        assert only_d
        chunk_id = only_d[len(only_d) // 2]
        loc = p.locations[chunk_id]
        flip_byte(repo / pack_name(loc.pack_id), loc.offset + loc.length // 2)
        lost_blobs = {chunk_id}
    (hurt,) = p.users(lost_blobs)
    damaged_pack = pack_name(_pack_of(p, lost_blobs))
    assert_check(repo, True, {hurt}, [damaged_pack])
    replica_before = files(replica)
    repo_before = files(repo)
    packs_before = pack_files(repo)

    proc = mover("repair", "data", "--repo", repo, "--from", replica)
    line = one_error_line(proc)
    assert "lost here and on the replica" in line, line
    assert f"snapshots still damaged: {hurt[:8]} " in line, line
    assert not any(s[:8] in line for s in p.ids if s != hurt), line
    assert "restore --partial" in line, line
    assert files(replica) == replica_before, "the replica changed"
    assert pack_files(repo) >= packs_before - {repo / damaged_pack}
    assert without(files(repo), "data/", "index/") == without(repo_before, "data/", "index/")

    # The rest restores: every other snapshot whole, and the damaged one but for what is lost.
    assert listed(repo) == p.ids
    restore_exact(p, repo, set(p.ids) - {hurt}, tmp_path / "out")
    out = tmp_path / "partial.img"
    proc = mover("restore", "--repo", repo, hurt, out, "--partial")
    assert "unreadable range" in assert_one_error_line(proc, exit_code=1)
    bad = p.extents(hurt, lost_blobs)
    assert bad
    report = json.loads(Path(f"{out}.badranges.json").read_text())
    assert [(r["offset"], r["length"]) for r in report["ranges"]] == bad
    original, restored = p.images[hurt].read_bytes(), out.read_bytes()
    assert len(restored) == len(original)
    at = 0
    for offset, length in [*bad, (len(original), 0)]:
        assert restored[at:offset] == original[at:offset], f"differs in [{at}, {offset})"
        assert restored[offset : offset + length] == bytes(length), f"not zeros at {offset}"
        at = offset + length

    # check still says the same: only that snapshot is damaged.
    proc, body = check(repo, "--read-data")
    assert proc.returncode == 1 and body["damaged_snapshots"] == [hurt], body


def _pack_of(p: Pristine, blobs: set[bytes]) -> bytes:
    (pack_id,) = {p.locations[c].pack_id for c in blobs}
    return pack_id
