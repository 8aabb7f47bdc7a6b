"""Reading without restoring: the mount, files inside a snapshot; and the node benchmark. Part
of mover.api: import from mover.api, not from here."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mover.objects.snapshot import Snapshot

if TYPE_CHECKING:
    from mover.fs.ext4 import Entry as FileEntry
    from mover.fs.ext4 import Ext4 as FileSystem
    from mover.fs.extract import Extracted
    from mover.mount import Namespace as MountView
    from mover.objects.repository import (
        Repository,
    )
    from mover.tools.nodebench import NodeBenchmark


# -- the mount ----------------------------------------------------------------------------
# Snapshots as read-only image files over FUSE (mover.mount, docs/mount.md).


@dataclass(frozen=True, kw_only=True)
class MountOptions:
    """How mount() serves the snapshots."""

    # Memory for decoded chunks, shared by all snapshots; at least two of the repository's
    # largest chunks. None: DEFAULT_MOUNT_CACHE_SIZE.
    cache_size: int | None = None
    allow_other: bool = False  # other users may read the mount (root or user_allow_other)
    on_mounted: Callable[[MountView], None] | None = None  # told once the mount is live


def load_fuse() -> None:
    """Check that the FUSE binding and libfuse can be loaded, before anything else is asked.

    Raises UsageError saying what to install."""
    from mover.mount import load_fuse as load

    load()


def check_mountpoint(path: str) -> None:
    """Check that `path` is an empty directory that can be mounted on.

    Raises UsageError."""
    from mover.mount import check_mountpoint as check_path

    check_path(path)


def mount(repo: Repository, mountpoint: str, *, options: MountOptions | None = None) -> None:
    """Serve every snapshot read-only at `mountpoint` (<short id>.img, latest.img,
    by-source/SOURCE/) until it is unmounted or the process is interrupted (SIGINT, SIGTERM,
    SIGHUP), under the repository's shared lock. Reads fetch only the chunks they touch.

    Raises UsageError (no FUSE; a bad mountpoint; a cache too small; no snapshots),
    StorageError."""
    from mover.mount import run_mount
    from mover.pipeline.reader import DEFAULT_CACHE_SIZE

    o = options or MountOptions()
    cache_size = DEFAULT_CACHE_SIZE if o.cache_size is None else o.cache_size
    run_mount(repo, mountpoint, cache_size, o.allow_other, o.on_mounted)


# -- the node benchmark -------------------------------------------------------------------


def benchmark_node(
    *,
    size: int = 256 << 20,
    threads: int | None = None,
    min_time: float = 0.5,
    progress: Callable[[str], None] | None = None,
) -> NodeBenchmark:
    """How fast this node runs each stage of the data path (chunking, BLAKE3, zstd, AEAD, the
    zero test) on `size` bytes of generated data, on one core and on `threads` (None: the
    CPUs this process may use); each measurement is repeated for `min_time` seconds and the
    best round counts. `progress` is told each stage's name as it starts."""
    from mover.tools import nodebench

    return nodebench.run(size=size, threads=threads, min_time=min_time, progress=progress)


# -- files inside a snapshot ----------------------------------------------------------------
# The ext2/3/4 file system of a volume snapshot, read through random access (mover.fs): only
# the chunks its structures and the files asked for lie in are fetched; nothing is restored.


@contextlib.contextmanager
def open_files(repo: Repository, snapshot: Snapshot) -> Iterator[FileSystem]:
    """The file system of `snapshot` (an ext2/3/4 image), under the repository's shared lock
    while the block runs.

    Raises UsageError (Ext4Error: not such a file system, or one damaged)."""
    from mover.fs.ext4 import Ext4
    from mover.pipeline.reader import open_snapshot as reader_of

    with reader_of(repo, snapshot) as reader:
        yield Ext4(reader.read, reader.size)


def list_files(
    fs: FileSystem, path: str, *, recursive: bool = False
) -> list[tuple[str, FileEntry]]:
    """(path, entry) for what is at `path`: a directory's entries (every level below with
    `recursive`), or the one entry of a file or symlink.

    Raises UsageError (no such path)."""
    from mover.fs.ext4 import components

    inode = fs.lookup(path, follow=False)
    names = components(path)
    where = "/" + "/".join(names)
    if not inode.is_dir:
        return [(where, inode.entry(names[-1]))]
    if recursive:
        return list(fs.walk(inode, where))
    entries = sorted(fs.entries(inode), key=lambda e: e.name)
    return [(f"{where.rstrip('/')}/{e.name}", e) for e in entries]


def copy_files(
    fs: FileSystem, path: str, to: str, *, progress: Callable[[Extracted], None] | None = None
) -> Extracted:
    """Copy `path` of the file system (a file, a directory and everything under it, or a
    symlink) into the directory `to`, which must exist; nothing there is overwritten.

    Raises UsageError (no such path; `to` not a directory; a name that exists there)."""
    from mover.fs.extract import extract

    return extract(fs, path, Path(to), progress)
