"""Copy files and directories out of a file system image (mover.fs.ext4) into a local directory:
regular files with their permission bits and modification times, directories recursively,
symbolic links as links (never followed while writing), other kinds (devices, sockets, FIFOs)
skipped and counted.

Nothing is overwritten: every name is created exclusively (O_EXCL, O_NOFOLLOW), so an existing
file or a link planted in the destination stops the copy with one line and is left as it was.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from mover.errors import UsageError
from mover.fs.ext4 import Entry, Ext4, Inode, components
from mover.text import plural
from mover.units import format_size


@dataclass
class Extracted:
    files: int = 0
    directories: int = 0
    symlinks: int = 0
    skipped: int = 0  # devices, sockets, FIFOs
    bytes: int = 0
    # Directories' modes and times, set once their contents are written (a read-only
    # directory could not take them otherwise), deepest first.
    _directories: list[tuple[Path, int, int]] = field(default_factory=list, repr=False)

    def summary(self) -> str:
        """`3 files, 1 directory, 0 links, 1.2 MiB`: what a copy wrote, for people."""
        return (
            f"{plural(self.files, 'file')}, "
            f"{plural(self.directories, 'directory', 'directories')}, "
            f"{plural(self.symlinks, 'link')}, {format_size(self.bytes)}"
        )

    def finish_directories(self) -> None:
        for target, mode, mtime in reversed(self._directories):
            os.chmod(target, mode & 0o7777)
            os.utime(target, (mtime, mtime))
        self._directories.clear()


def extract(
    fs: Ext4, path: str, to: Path, progress: Callable[[Extracted], None] | None = None
) -> Extracted:
    """Copy `path` of the image (a file, a directory with everything under it, or a symlink)
    to `to`/NAME, NAME being its last component (the root: its contents go into `to`)."""
    if not to.is_dir():
        raise UsageError(f"--to {to}: not a directory; make it first")
    inode = fs.lookup(path, follow=False)
    name = components(path)
    stats = Extracted()
    base = to
    if name:
        root = inode.entry(name[-1])
        _copy(fs, root, to / root.name, stats, progress)
        base = to / root.name
    if inode.is_dir:
        try:
            for child_path, entry in fs.walk(inode, "/"):
                _copy(fs, entry, base / child_path.lstrip("/"), stats, progress)
        finally:
            stats.finish_directories()
    return stats


def _copy(
    fs: Ext4,
    entry: Entry,
    target: Path,
    stats: Extracted,
    progress: Callable[[Extracted], None] | None,
) -> None:
    try:
        if entry.kind == "dir":
            target.mkdir(mode=0o700)  # its own mode once its contents are written
            stats._directories.append((target, entry.mode, entry.mtime))
            stats.directories += 1
        elif entry.kind == "symlink":
            os.symlink(fs.symlink_target(fs.inode(entry.inode)), target)
            stats.symlinks += 1
        elif entry.kind == "file":
            _write(fs, fs.inode(entry.inode), target, stats, progress)
            stats.files += 1
            os.utime(target, (entry.mtime, entry.mtime))
        else:
            stats.skipped += 1
    except FileExistsError:
        raise UsageError(f"{target} exists already; give an empty --to directory") from None
    except OSError as exc:
        raise UsageError(f"cannot write {target}: {exc.strerror or exc}") from None


def _write(
    fs: Ext4,
    inode: Inode,
    target: Path,
    stats: Extracted,
    progress: Callable[[Extracted], None] | None,
) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(target, flags, 0o600)
    try:
        for piece in fs.read_file(inode):
            if piece.count(0) == len(piece):  # a hole, or zeros: leave the file sparse
                os.lseek(fd, len(piece), os.SEEK_CUR)
            else:
                view = memoryview(piece)
                while view:
                    view = view[os.write(fd, view) :]
            stats.bytes += len(piece)
            if progress is not None:
                progress(stats)
        os.ftruncate(fd, inode.size)
        os.fchmod(fd, inode.mode & 0o7777)
    finally:
        os.close(fd)
