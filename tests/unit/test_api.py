"""mover.api, the library's front door: each entry point on real repositories in a temporary
directory (a cheap key derivation, small chunks), and what importing it costs."""

from __future__ import annotations

import importlib
import json
import random
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, cast

import pytest

from mover import api
from mover.errors import IntegrityError, RepositoryError, UsageError, WrongPassword

PASSWORD = b"api-test password"
KDF = api.KdfParams(memory_kib=8 * 1024, iterations=1, lanes=1)
SMALL = api.InitOptions(chunk_min=4096, chunk_avg=16384, chunk_max=65536, kdf=KDF)
MiB = 1 << 20


@pytest.fixture
def repo(tmp_path: Path) -> Iterator[api.Repository]:
    repository = api.init_repository(str(tmp_path / "repo"), PASSWORD, options=SMALL)
    yield repository
    repository.close()


def volume(path: Path, seed: int = 1) -> Path:
    """1 MiB of random bytes, 1 MiB of zeros, 256 KiB of random bytes."""
    rng = random.Random(seed)
    path.write_bytes(rng.randbytes(MiB) + bytes(MiB) + rng.randbytes(MiB // 4))
    return path


def back_up(repo: api.Repository, path: Path, name: str | None = None) -> api.Snapshot:
    with path.open("rb") as f:
        return api.backup(repo, f, name or str(path), options=api.BackupOptions(threads=2))


def test_importing_the_api_leaves_the_data_path_unloaded() -> None:
    code = "import sys, mover.api; print(' '.join(sorted(sys.modules)))"
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert {"mover.objects.repository", "mover.pipeline.backup", "mover.storage.stack"}.isdisjoint(
        loaded
    )


def test_every_name_is_the_one_of_its_module() -> None:
    for name in api.__all__:
        assert getattr(api, name) is not None, name
    for name, (module, attribute) in api._LAZY.items():
        assert getattr(api, name) is getattr(importlib.import_module(module), attribute)
    with pytest.raises(AttributeError):
        api.no_such_name  # noqa: B018


def test_backup_restore_and_snapshots(repo: api.Repository, tmp_path: Path) -> None:
    source = volume(tmp_path / "disk.img")
    seen: list[int] = []
    with source.open("rb") as f:
        options = api.BackupOptions(threads=2, progress=lambda s: seen.append(s.bytes_read))
        snapshot = api.backup(repo, f, "disk", options=options)
    assert seen and snapshot.size == source.stat().st_size
    assert api.snapshots(repo) == [snapshot]
    assert api.find_snapshot(repo, "latest") == snapshot
    assert api.find_snapshot(repo, snapshot.id[:6]) == snapshot
    assert api.has_snapshot(repo, snapshot.id) and not api.has_snapshot(repo, "0" * 64)
    extents = list(api.extents(repo, snapshot.tree))
    assert sum(e.length for e in extents) == snapshot.size
    assert any(e.chunk_id is None for e in extents)  # the zeros are a hole

    target = tmp_path / "restored.img"
    stats = api.restore(repo, snapshot, str(target), options=api.RestoreOptions(threads=2))
    assert target.read_bytes() == source.read_bytes()
    assert stats.bytes_written + stats.hole_bytes == snapshot.size
    with pytest.raises(UsageError):  # a non-empty target, not forced
        api.restore(repo, snapshot, str(target))
    api.restore(repo, snapshot, str(target), options=api.RestoreOptions(force=True))
    # Any range without restoring: across the hole and the data around it.
    data = source.read_bytes()
    for offset, length in ((0, 10), (len(data) // 3, 200_000), (len(data) - 5, 50)):
        assert api.read_range(repo, snapshot, offset, length) == data[offset : offset + length]
    with api.open_snapshot(repo, snapshot) as reader:
        assert reader.read(1, 4096) == data[1:4097]

    metrics = api.storage_metrics(repo)
    assert metrics is not None and metrics.get("write", "requests") > 0
    with source.open("rb") as f:
        assert api.source_size(f) == snapshot.size


def test_a_changed_range_backup_has_the_tree_of_a_full_read(
    repo: api.Repository, tmp_path: Path
) -> None:
    source = volume(tmp_path / "disk.img")
    with source.open("rb") as f:
        day1 = api.backup(repo, f, "disk")
    data = bytearray(source.read_bytes())
    data[100_000:100_100] = b"\xab" * 100  # one change, in place
    source.write_bytes(bytes(data))
    (tmp_path / "changes").write_text("100000 100\n")
    with (
        source.open("rb") as f,
        api.read_ranges(str(tmp_path / "changes"), len(data), "--changed-ranges") as ranges,
    ):
        parent = api.find_parent(repo, "disk", None)
        changed = api.ChangedRanges(parent, ranges, 0.0)
        day2 = api.backup(repo, f, "disk", options=api.BackupOptions(changed=changed))
    with source.open("rb") as f:
        full = api.backup(repo, f, "disk")
    assert parent == day1 and day2.tree == full.tree != day1.tree
    assert api.read_range(repo, day2, 99_990, 120) == bytes(data[99_990:100_110])


def test_open_and_reopen(repo: api.Repository, tmp_path: Path) -> None:
    url = str(tmp_path / "repo")
    snapshot = back_up(repo, volume(tmp_path / "disk.img"))
    with pytest.raises(WrongPassword):
        api.open_repository(url, b"not the password")
    opened = api.open_repository(url, PASSWORD)
    key = api.repository_key(opened)
    opened.close()
    assert key.master.to_bytes().hex() not in repr(key)
    again = api.reopen_repository(url, key)
    try:
        assert api.find_snapshot(again, "latest") == snapshot
        assert again.id == repo.id
    finally:
        again.close()


def test_init_refuses_bad_options_and_a_used_place(repo: api.Repository, tmp_path: Path) -> None:
    with pytest.raises(UsageError):
        api.init_repository(str(tmp_path / "other"), PASSWORD, options=api.InitOptions(pack_size=1))
    assert not (tmp_path / "other").exists()
    with pytest.raises(RepositoryError, match="already holds a repository"):
        api.init_repository(str(tmp_path / "repo"), PASSWORD, options=SMALL)
    api.open_repository(str(tmp_path / "repo"), PASSWORD).close()  # unchanged: still opens


def test_a_document_is_the_snapshot_of_its_canonical_bytes(repo: api.Repository) -> None:
    doc = {"kind": "List", "items": [{"b": 2, "a": 1}], "format": 1}
    stored = api.put_document(repo, doc, "k8s:ns/backup/objects")
    assert api.get_document(repo, stored.id) == doc
    assert api.get_document(repo, stored.id[:8]) == doc
    # What mover_k8s.store wrote before mover.api: canonical JSON backed up from a file. The same
    # bytes are the same tree, so repositories written then read the same now.
    from mover.pipeline.backup import run_backup

    with tempfile.TemporaryFile() as f:
        f.write(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode())
        f.seek(0)
        before = run_backup(repo, cast(BinaryIO, f), "k8s:ns/backup/objects", threads=1)
    assert (stored.tree, stored.size, stored.source) == (before.tree, before.size, before.source)
    assert stored.stats["new_chunks"] == 1 and before.stats["new_chunks"] == 0


def test_a_volume_is_not_a_document(repo: api.Repository, tmp_path: Path) -> None:
    snapshot = back_up(repo, volume(tmp_path / "disk.img"))
    with pytest.raises(IntegrityError, match=f"snapshot {snapshot.id[:8]} is not a JSON document"):
        api.get_document(repo, snapshot.id)
    with pytest.raises(IntegrityError, match="is not a manifest"):
        api.get_document(repo, snapshot.id, kind="manifest")
    with pytest.raises(UsageError):
        api.get_document(repo, "ffff" if not snapshot.id.startswith("ffff") else "eeee")


def test_forget_prune_check(repo: api.Repository, tmp_path: Path) -> None:
    first = back_up(repo, volume(tmp_path / "one.img"), "vol")
    disk = volume(tmp_path / "two.img", seed=2)
    second, other = back_up(repo, disk, "vol"), back_up(repo, disk, "other")

    groups = api.forget_by_policy(repo, api.Policy(last=1), dry_run=True)
    assert [d.snapshot.id for g in groups for d in g.remove] == [first.id]
    assert len(api.snapshots(repo)) == 3
    api.forget_by_policy(repo, api.Policy(last=1))
    assert {s.id for s in api.snapshots(repo)} == {second.id, other.id}
    with pytest.raises(UsageError):
        api.forget_by_policy(repo, api.Policy())

    with pytest.raises(UsageError):
        api.forget(repo, [first.id])  # gone already
    assert api.forget(repo, [other.id[:8]]) == [other.id]

    stats = api.prune(repo, options=api.PruneOptions(unindexed_grace=0))
    assert stats.chunks_dropped > 0  # the first volume's own chunks
    report = api.check(repo, read_data=True)
    assert report.ok and report.snapshots == 1, report.errors
    target = tmp_path / "after.img"
    api.restore(repo, api.find_snapshot(repo, "latest"), str(target))
    assert target.read_bytes() == disk.read_bytes()


def test_replicate(repo: api.Repository, tmp_path: Path) -> None:
    disk = volume(tmp_path / "disk.img")
    snapshot = back_up(repo, disk)
    replica = api.init_replica(repo, str(tmp_path / "replica"), b"replica password")
    try:
        assert api.replicate(repo, replica, []).snapshots_copied == []  # nothing asked
        stats = api.replicate(repo, replica)
        assert stats.snapshots_copied == [snapshot.id] and stats.bytes_sent > 0
        assert api.replicate(repo, replica, [snapshot.id[:8]]).snapshots_present == [snapshot.id]
        target = tmp_path / "from-replica.img"
        api.restore(replica, api.find_snapshot(replica, snapshot.id), str(target))
        assert target.read_bytes() == disk.read_bytes()
    finally:
        replica.close()
