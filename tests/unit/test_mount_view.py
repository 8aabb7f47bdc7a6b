"""What `mover mount` shows and serves, without FUSE: the names of the files (short ids that
stay unique, by-source directories that never collide), and the file system's operations
called as the binding calls them, on a real repository."""

from __future__ import annotations

import errno
import os
import random
import stat
from dataclasses import replace
from pathlib import Path

import pytest

from mover.chunking import ChunkerParams
from mover.crypto import KdfParams
from mover.errors import UsageError
from mover.mount import (
    NAME_MAX,
    SnapshotFS,
    check_mountpoint,
    namespace,
    short_ids,
    source_names,
)
from mover.objects.repository import RepoConfig, Repository
from mover.objects.snapshot import Snapshot
from mover.pipeline.backup import run_backup
from mover.storage.local import LocalBackend

KiB = 1 << 10


def snap(
    snapshot_id: str, source: str = "/dev/vdb", time: str = "2026-01-02T03:04:05+00:00"
) -> Snapshot:
    return Snapshot(time, "host", source, 1000, "00" * 32, {"zero_bytes": 200}, snapshot_id)


def test_short_ids_grow_only_where_two_share_a_prefix() -> None:
    a, b, c = "abcdef0123" + "0" * 54, "abcdef0124" + "0" * 54, "12345678" + "9" * 56
    shorts = short_ids([snap(a), snap(b), snap(c)])
    assert shorts == {a: "abcdef0123", b: "abcdef0124", c: "12345678"}
    assert short_ids([snap(c)]) == {c: "12345678"}


def test_source_names_are_unique_and_valid() -> None:
    long = "/" + "x" * 300
    names = source_names(["/dev/vdb", "dev/vdb", "/data/pg.img", "-", "/", ".", long])
    assert names["/data/pg.img"] == "data_pg.img"
    assert names["-"] == "-"
    assert names["/dev/vdb"] != names["dev/vdb"]  # would collide: both get a hash suffix
    assert names["/dev/vdb"].startswith("dev_vdb~") and names["dev/vdb"].startswith("dev_vdb~")
    assert names["/"].startswith("~") and names["."].startswith("~")
    assert len(set(names.values())) == len(names)
    for name in names.values():
        assert "/" not in name and name not in ("", ".", "..")
        assert len(name.encode()) <= NAME_MAX


def test_namespace_layout() -> None:
    old = snap("aa" * 32, "/dev/vdb", "2026-01-01T00:00:00.5+00:00")
    other = snap("bb" * 32, "/data/pg.img", "2026-01-02T00:00:00+00:00")
    new = snap("cc" * 32, "/dev/vdb", "2026-01-03T10:20:30.123456+00:00")
    view = namespace([old, other, new])
    assert view.dirs["/"] == [
        "aaaaaaaa.img",
        "bbbbbbbb.img",
        "by-source",
        "cccccccc.img",
        "latest.img",
    ]
    assert view.files["/latest.img"] == new
    assert view.dirs["/by-source"] == ["data_pg.img", "dev_vdb"]
    assert view.dirs["/by-source/dev_vdb"] == [
        "2026-01-01T00:00:00Z-aaaaaaaa.img",
        "2026-01-03T10:20:30Z-cccccccc.img",
        "latest.img",
    ]
    assert view.files["/by-source/dev_vdb/latest.img"] == new
    assert view.files["/by-source/data_pg.img/latest.img"] == other
    assert namespace([]).dirs == {"/": []}


@pytest.fixture
def filesystem(tmp_path: Path) -> tuple[SnapshotFS, bytes, Snapshot]:
    data = random.Random(3).randbytes(300 * KiB) + bytes(200 * KiB) + b"tail"
    source = tmp_path / "vol.img"
    source.write_bytes(data)
    repo = Repository.init(
        LocalBackend(tmp_path / "repo"),
        b"pw",
        RepoConfig(ChunkerParams(4 * KiB, 16 * KiB, 64 * KiB)),
        KdfParams(8192, 1, 1),
    )
    with open(source, "rb") as f:
        snapshot = run_backup(repo, f, str(source), checkpoint_interval=None)
    return SnapshotFS(repo, namespace(repo.snapshots()), 1 << 20), data, snapshot


def test_operations(filesystem: tuple[SnapshotFS, bytes, Snapshot]) -> None:
    fs, data, snapshot = filesystem
    root = fs.getattr("/")
    assert stat.S_ISDIR(root["st_mode"]) and root["st_mode"] & 0o777 == 0o555
    assert root["st_nlink"] == 3  # ., .. and by-source
    attrs = fs.getattr("/latest.img")
    assert stat.S_ISREG(attrs["st_mode"]) and attrs["st_mode"] & 0o777 == 0o444
    assert attrs["st_size"] == len(data)
    assert attrs["st_blocks"] * 512 < len(data)  # the hole takes no blocks
    names = sorted([f"{snapshot.id[:8]}.img", "by-source", "latest.img"])  # in name order
    assert fs.readdir("/", 0) == [".", "..", *names]
    handle = fs.open("/latest.img", os.O_RDONLY)
    assert fs.read("/latest.img", 4096, 299 * KiB, handle) == data[299 * KiB : 303 * KiB]
    assert fs.read("/latest.img", 4096, len(data) - 2, handle) == b"il"
    assert fs.read("/latest.img", 4096, len(data), handle) == b""
    other = fs.open(f"/{snapshot.id[:8]}.img", os.O_RDONLY)  # the same snapshot: one reader
    assert fs.read("", 10, 0, other) == data[:10]
    assert fs.release("/latest.img", handle) == 0
    assert fs.read("", 10, 5, other) == data[5:15]  # still open through the other handle
    assert fs.release("", other) == 0  # the last: the reader is closed, the caches stay
    assert fs._readers == {} and fs.chunks.size > 0
    third = fs.open("/latest.img", os.O_RDONLY)
    loads = fs.chunks.stats.loads
    assert fs.read("/latest.img", 4096, 299 * KiB, third) == data[299 * KiB : 303 * KiB]
    assert fs.chunks.stats.loads == loads  # served from the shared cache
    fs.destroy("/")

    for call, code in [
        (lambda: fs.getattr("/nothing"), errno.ENOENT),
        (lambda: fs.readdir("/latest.img", 0), errno.ENOTDIR),
        (lambda: fs.open("/by-source", os.O_RDONLY), errno.EISDIR),
        (lambda: fs.open("/latest.img", os.O_RDWR), errno.EROFS),
        (lambda: fs.open("/latest.img", os.O_WRONLY), errno.EROFS),
        (lambda: fs.read("/latest.img", 10, 0, 999), errno.EBADF),
    ]:
        with pytest.raises(OSError) as raised:
            call()
        assert raised.value.errno == code


def test_a_damaged_chunk_is_eio_and_one_line(
    filesystem: tuple[SnapshotFS, bytes, Snapshot], capsys: pytest.CaptureFixture[str]
) -> None:
    fs, _data, _snapshot = filesystem
    # A view whose snapshot names a tree root that is in no index: every read fails.
    broken = replace(fs.view.files["/latest.img"], tree="ab" * 32)
    fs.view.files["/broken.img"] = broken
    handle = fs.open("/broken.img", os.O_RDONLY)
    for _ in range(3):
        with pytest.raises(OSError) as raised:
            fs.read("/broken.img", 10, 0, handle)
        assert raised.value.errno == errno.EIO
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1  # said once, not per read
    assert lines[0].startswith("mover: error: cannot read broken.img at byte 0: chunk abababab")


def test_mountpoint_checks(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="does not exist"):
        check_mountpoint(str(tmp_path / "missing"))
    (tmp_path / "file").write_text("x")
    with pytest.raises(UsageError, match="not a directory"):
        check_mountpoint(str(tmp_path / "file"))
    with pytest.raises(UsageError, match="not empty"):
        check_mountpoint(str(tmp_path))
    (tmp_path / "empty").mkdir()
    check_mountpoint(str(tmp_path / "empty"))
