"""Files read out of ext2/3/4 images without mounting them (mover.fs.ext4, mover.fs.extract),
against images that e2fsprogs' own mke2fs builds from a directory (`mke2fs -d`: no root, no
mount): every name, kind, size and byte agrees with the source tree; through a snapshot, one
file costs a few chunks, not the volume; damaged images and bad paths are named."""

from __future__ import annotations

import os
import random
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from mover import api
from mover.errors import UsageError
from mover.fs.ext4 import Ext4, Ext4Error
from mover.fs.extract import extract

MKE2FS = shutil.which("mke2fs") or next(
    (p for p in ("/usr/sbin/mke2fs", "/sbin/mke2fs") if os.path.exists(p)), None
)
pytestmark = pytest.mark.skipif(
    MKE2FS is None and not os.environ.get("CI"), reason="mke2fs (e2fsprogs) is not installed"
)
LONG_TARGET = "d/" + "x" * 80  # a slow symlink: its target does not fit in the inode


def source_tree(root: Path) -> Path:
    src = root / "src"
    (src / "etc" / "app").mkdir(parents=True)
    (src / "data" / "deep" / "er").mkdir(parents=True)
    rng = random.Random(3)
    (src / "etc" / "app" / "config.yaml").write_text("port: 8080\nname: shop\n")
    (src / "etc" / "app" / "secret").write_bytes(rng.randbytes(100))
    os.chmod(src / "etc" / "app" / "secret", 0o600)
    (src / "data" / "big.bin").write_bytes(rng.randbytes(700 * 1024))
    with open(src / "data" / "sparse.img", "wb") as f:  # holes inside and at the end
        f.write(rng.randbytes(5000))
        f.seek(3 << 20)
        f.write(rng.randbytes(7000))
        f.truncate(5 << 20)
    (src / "data" / "empty").write_bytes(b"")
    (src / "data" / "deep" / "er" / "ünïcode name.txt").write_text("grüße\n")
    os.symlink("../etc/app/config.yaml", src / "data" / "config-link")
    os.symlink(LONG_TARGET, src / "data" / "long-link")
    os.chmod(src / "etc", 0o555)  # read-only: extraction sets it after its contents
    return src


def image(root: Path, src: Path, fstype: str, *extra: str) -> Path:
    img = root / f"{fstype}.img"
    assert MKE2FS is not None
    subprocess.run(
        [MKE2FS, "-q", "-F", "-t", fstype, *extra, "-d", str(src), str(img), "24M"],
        check=True,
        capture_output=True,
    )
    return img


def open_image(img: Path) -> tuple[Ext4, int]:
    fd = os.open(img, os.O_RDONLY)
    return Ext4(lambda offset, length: os.pread(fd, length, offset), img.stat().st_size), fd


def listing(root: Path) -> dict[str, tuple[str, int, bytes | str]]:
    """path -> (kind, permission bits, contents or link target), as the OS sees the tree."""
    found: dict[str, tuple[str, int, bytes | str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = "/" + str(path.relative_to(root))
            info = path.lstat()
            if stat.S_ISLNK(info.st_mode):
                found[rel] = ("symlink", 0, os.readlink(path))
            elif stat.S_ISDIR(info.st_mode):
                found[rel] = ("dir", info.st_mode & 0o777, b"")
            else:
                found[rel] = ("file", info.st_mode & 0o777, path.read_bytes())
    return found


@pytest.mark.parametrize(
    ("fstype", "extra"),
    [("ext4", ()), ("ext4", ("-O", "64bit", "-I", "512")), ("ext3", ()), ("ext2", ("-b", "1024"))],
)
def test_every_name_kind_and_byte_agrees_with_the_source(
    tmp_path: Path, fstype: str, extra: tuple[str, ...]
) -> None:
    src = source_tree(tmp_path)
    fs, fd = open_image(image(tmp_path, src, fstype, *extra))
    try:
        walked = {
            path: entry for path, entry in fs.walk(fs.inode(2), "/") if "lost+found" not in path
        }
        expected = listing(src)
        assert sorted(walked) == sorted(expected)
        for path, entry in walked.items():
            kind, mode, content = expected[path]
            assert entry.kind == kind, path
            inode = fs.inode(entry.inode)
            if kind == "file":
                assert b"".join(fs.read_file(inode)) == content, path
                assert entry.mode & 0o777 == mode, path
            elif kind == "symlink":
                assert fs.symlink_target(inode) == content, path
        # Paths: through a symlink in the middle, and to one at the end.
        config = fs.lookup("/data/config-link")
        assert b"".join(fs.read_file(config)) == (src / "etc/app/config.yaml").read_bytes()
        assert fs.lookup("/data/config-link", follow=False).is_symlink
        assert fs.lookup("data/../etc/app/config.yaml").number == config.number
    finally:
        os.close(fd)


def test_extraction_recreates_the_tree_with_modes_links_and_holes(tmp_path: Path) -> None:
    src = source_tree(tmp_path)
    fs, fd = open_image(image(tmp_path, src, "ext4"))
    out = tmp_path / "out"
    out.mkdir()
    try:
        whole = extract(fs, "/", out)
        single = tmp_path / "single"
        single.mkdir()
        one = extract(fs, "/data/deep", single)
    finally:
        os.close(fd)
    shutil.rmtree(out / "lost+found")
    assert listing(out) == listing(src)
    assert whole.files == 6 and whole.symlinks == 2
    sparse = out / "data" / "sparse.img"
    assert sparse.stat().st_blocks * 512 < 1 << 20  # the holes stayed holes
    assert (out / "etc" / "app" / "secret").stat().st_mode & 0o777 == 0o600
    assert one.files == 1 and one.directories == 2
    assert (single / "deep" / "er" / "ünïcode name.txt").read_text() == "grüße\n"
    os.chmod(out / "etc", 0o755)  # let tmp_path be removed


def test_one_file_from_a_backed_up_volume_fetches_a_few_chunks(tmp_path: Path) -> None:
    src = source_tree(tmp_path)
    rng = random.Random(8)
    (src / "data" / "filler").write_bytes(rng.randbytes(12 << 20))  # most of the volume
    img = image(tmp_path, src, "ext4")
    url = str(tmp_path / "repo")
    repo = api.init_repository(
        url,
        b"pw",
        options=api.InitOptions(kdf=api.KdfParams(memory_kib=8 * 1024, iterations=1, lanes=1)),
    )
    try:
        with open(img, "rb") as f:
            snapshot = api.backup(repo, f, "volume")
    finally:
        repo.close()
    repo = api.open_repository(url, b"pw")
    try:
        metrics = api.storage_metrics(repo)
        assert metrics is not None
        before = metrics.get("read", "bytes")
        with api.open_snapshot(repo, snapshot, readahead=0) as reader:
            fs = Ext4(reader.read, reader.size)
            config = b"".join(fs.read_file(fs.lookup("/etc/app/config.yaml")))
        fetched = metrics.get("read", "bytes") - before
    finally:
        repo.close()
    assert config == (src / "etc/app/config.yaml").read_bytes()
    # Superblock, group descriptors, a few inodes and directory blocks, one file block: a few
    # chunks (1 MiB on average) of a 24 MiB volume, never the whole of it.
    assert 0 < fetched < img.stat().st_size // 3, (fetched, img.stat().st_size)


def test_damage_and_bad_paths_are_named(tmp_path: Path) -> None:
    src = source_tree(tmp_path)
    img = image(tmp_path, src, "ext4")
    noise = tmp_path / "noise"
    noise.write_bytes(random.Random(1).randbytes(1 << 20))
    with pytest.raises(Ext4Error, match="no superblock magic"):
        open_image(noise)
    fs, fd = open_image(img)
    try:
        with pytest.raises(Ext4Error, match="/etc/nope: no such file"):
            fs.lookup("/etc/nope")
        with pytest.raises(Ext4Error, match=r"/etc/app/config\.yaml is not a directory"):
            fs.lookup("/etc/app/config.yaml/x")
        out = tmp_path / "out"
        out.mkdir()
        (out / "config.yaml").write_text("mine")
        with pytest.raises(UsageError, match="exists already"):
            extract(fs, "/etc/app/config.yaml", out)
        assert (out / "config.yaml").read_text() == "mine"  # left as it was
        with pytest.raises(UsageError, match="not a directory"):
            extract(fs, "/etc", out / "config.yaml")
    finally:
        os.close(fd)
    # A truncated image: whatever lies past its end is named, not read.
    short = tmp_path / "short.img"
    short.write_bytes(img.read_bytes()[: 2 << 20])
    fs, fd = open_image(short)
    try:
        with pytest.raises(Ext4Error, match="outside the image"):
            b"".join(fs.read_file(fs.lookup("/data/big.bin")))
    finally:
        os.close(fd)


def test_a_symlink_loop_is_named(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    os.symlink("b", src / "a")
    os.symlink("a", src / "b")
    fs, fd = open_image(image(tmp_path, src, "ext4"))
    try:
        with pytest.raises(Ext4Error, match="too many levels"):
            fs.lookup("/a")
    finally:
        os.close(fd)
