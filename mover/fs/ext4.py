"""Read files out of an ext2/3/4 image through a `read(offset, length)` function, without
mounting it: with a snapshot's reader (mover.api.open_snapshot) only the blocks of the
superblock, the group descriptors, the inodes, directories and files walked are fetched, so one
file comes back from a TiB volume by fetching a few chunks.

What is read, and what is not:
- the superblock, group descriptors (32 or 64 bytes), inodes of any size, extent trees of any
  depth (uninitialized extents read as zeros), the ext2/3 block map (direct, indirect, double
  and triple), directories as linear lists of entries (an htree directory's blocks are such a
  list too; its index is not needed to list everything), fast and slow symlinks, holes;
- not: meta_bg (group descriptors spread over the disk, for file systems grown past 16 TiB
  without resize_inode), inline data (files or directories stored inside the inode: named as
  unsupported), encryption, and the journal: an image is read as it stands on disk, as `mount
  -o ro,noload` would; a snapshot of a mounted volume is crash-consistent, so writes still in
  the journal are not seen.

Every structure is checked before use (magics, sizes, offsets inside the image); a damaged
image raises Ext4Error naming what is wrong, never reads out of bounds.
"""

from __future__ import annotations

import stat
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

from mover.errors import UsageError

Read = Callable[[int, int], bytes]

MAGIC = 0xEF53
EXTENT_MAGIC = 0xF30A
EXTENTS_FL = 0x80000
INLINE_DATA_FL = 0x10000000
INCOMPAT_META_BG = 0x10
INCOMPAT_64BIT = 0x80
INCOMPAT_ENCRYPT = 0x10000
ROOT_INODE = 2
MAX_SYMLINK_DEPTH = 40


class Ext4Error(UsageError):
    """The image is not an ext2/3/4 file system this reader handles, or a path is not in it."""


@dataclass(frozen=True)
class Inode:
    number: int
    mode: int
    size: int
    flags: int
    blocks: bytes  # i_block: the extent tree's root, the block map, or a fast symlink
    mtime: int

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)

    @property
    def is_file(self) -> bool:
        return stat.S_ISREG(self.mode)

    @property
    def is_symlink(self) -> bool:
        return stat.S_ISLNK(self.mode)

    @property
    def kind(self) -> str:
        """ "file", "dir", "symlink" or "other" (devices, sockets, FIFOs)."""
        if self.is_file:
            return "file"
        if self.is_dir:
            return "dir"
        return "symlink" if self.is_symlink else "other"

    def entry(self, name: str) -> Entry:
        """This inode as the directory entry `name`."""
        return Entry(name, self.number, self.kind, self.size, self.mode, self.mtime)


@dataclass(frozen=True)
class Entry:
    """One name in a directory."""

    name: str
    inode: int
    kind: str  # "file", "dir", "symlink", "other"
    size: int
    mode: int
    mtime: int

    def describe(self, path: str) -> dict[str, object]:
        """The entry at `path` as a listing shows it (JSON)."""
        when = datetime.fromtimestamp(self.mtime, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return {
            "path": path,
            "kind": self.kind,
            "size": self.size,
            "mode": stat.filemode(self.mode),
            "modified": when,
        }

    def line(self, path: str) -> str:
        """The entry at `path` as one line of a listing, as `ls -l` would order it."""
        when = datetime.fromtimestamp(self.mtime, UTC).strftime("%Y-%m-%d %H:%M")
        return f"{stat.filemode(self.mode)} {self.size:>12} {when} {path}"


class Ext4:
    """An ext2/3/4 file system read through `read` (the image is `size` bytes)."""

    def __init__(self, read: Read, size: int) -> None:
        self._read_raw = read
        self.size = size
        sb = self._read(1024, 1024)
        (magic,) = struct.unpack_from("<H", sb, 56)
        if magic != MAGIC:
            raise Ext4Error("not an ext2/3/4 file system (no superblock magic at byte 1080)")
        (self.inodes_count, _, _, _, _, self.first_data_block, log_block) = struct.unpack_from(
            "<7I", sb, 0
        )
        self.block_size = 1024 << log_block
        if not 1024 <= self.block_size <= 65536:
            raise Ext4Error(f"block size {self.block_size} is not one ext4 uses")
        (self.blocks_per_group,) = struct.unpack_from("<I", sb, 32)
        (self.inodes_per_group,) = struct.unpack_from("<I", sb, 40)
        (rev,) = struct.unpack_from("<I", sb, 76)
        self.inode_size = struct.unpack_from("<H", sb, 88)[0] if rev >= 1 else 128
        (incompat,) = struct.unpack_from("<I", sb, 96)
        if incompat & INCOMPAT_ENCRYPT:
            raise Ext4Error("the file system is encrypted; mount it to read it")
        if incompat & INCOMPAT_META_BG:  # group descriptors scattered: not read here
            raise Ext4Error("the file system uses meta_bg, which is not read; mount it instead")
        self.desc_size = 32
        if incompat & INCOMPAT_64BIT:
            self.desc_size = struct.unpack_from("<H", sb, 254)[0] or 64
        if not self.inodes_per_group or not self.blocks_per_group or self.inode_size < 128:
            raise Ext4Error("the superblock is damaged (zero group sizes or inode size)")
        self._tables: dict[int, int] = {}

    # -- raw access --

    def _read(self, offset: int, length: int) -> bytes:
        if offset < 0 or offset + length > self.size:
            raise Ext4Error(
                f"a structure at byte {offset} (+{length}) lies outside the image "
                f"({self.size} bytes): the file system is damaged"
            )
        data = self._read_raw(offset, length)
        if len(data) != length:
            raise Ext4Error(f"short read at byte {offset}")
        return data

    def _block(self, number: int, count: int = 1) -> bytes:
        return self._read(number * self.block_size, count * self.block_size)

    def _inode_table(self, group: int) -> int:
        table = self._tables.get(group)
        if table is None:
            descs = (self.first_data_block + 1) * self.block_size
            desc = self._read(descs + group * self.desc_size, self.desc_size)
            (table,) = struct.unpack_from("<I", desc, 8)
            if self.desc_size >= 64:
                table |= struct.unpack_from("<I", desc, 0x28)[0] << 32
            self._tables[group] = table
        return table

    def inode(self, number: int) -> Inode:
        if not 1 <= number <= self.inodes_count:
            raise Ext4Error(f"inode {number} is out of range: the file system is damaged")
        group, index = divmod(number - 1, self.inodes_per_group)
        raw = self._read(self._inode_table(group) * self.block_size + index * self.inode_size, 128)
        mode, _, size_lo, _, _, mtime = struct.unpack_from("<HHIIII", raw, 0)
        (flags,) = struct.unpack_from("<I", raw, 0x20)
        (size_hi,) = struct.unpack_from("<I", raw, 0x6C)
        return Inode(number, mode, size_lo | size_hi << 32, flags, raw[0x28:0x64], mtime)

    # -- file contents --

    def _runs(self, inode: Inode) -> Iterator[tuple[int, int, int | None]]:
        """(logical block, count, physical block or None for zeros), in logical order."""
        if inode.flags & INLINE_DATA_FL:
            raise Ext4Error(f"inode {inode.number} keeps its data inline, which is not read")
        if inode.flags & EXTENTS_FL:
            yield from self._extents(inode.blocks, inode.number, 0)
        else:
            yield from self._block_map(inode.blocks)

    def _extents(
        self, node: bytes, number: int, level: int
    ) -> Iterator[tuple[int, int, int | None]]:
        magic, entries, _, depth = struct.unpack_from("<HHHH", node, 0)
        if magic != EXTENT_MAGIC or level > 8 or 12 + 12 * entries > len(node):
            raise Ext4Error(f"inode {number} has a damaged extent tree")
        for i in range(entries):
            at = 12 + 12 * i
            if depth == 0:
                first, length, start_hi, start_lo = struct.unpack_from("<IHHI", node, at)
                uninitialized = length > 32768
                count = length - 32768 if uninitialized else length
                yield first, count, None if uninitialized else start_lo | start_hi << 32
            else:
                _, leaf_lo, leaf_hi = struct.unpack_from("<IIH", node, at)
                child = self._block(leaf_lo | leaf_hi << 32)
                yield from self._extents(child, number, level + 1)

    def _block_map(self, blocks: bytes) -> Iterator[tuple[int, int, int | None]]:
        pointers = struct.unpack_from("<15I", blocks, 0)
        per = self.block_size // 4
        logical = 0
        for p in pointers[:12]:
            yield logical, 1, p or None
            logical += 1
        for depth, p in enumerate(pointers[12:], 1):
            span = per**depth
            if p:
                yield from self._indirect(p, depth, logical)
            else:
                yield logical, span, None
            logical += span

    def _indirect(
        self, block: int, depth: int, logical: int
    ) -> Iterator[tuple[int, int, int | None]]:
        per = self.block_size // 4
        span = per ** (depth - 1)
        for i, p in enumerate(struct.unpack(f"<{per}I", self._block(block))):
            if not p:
                yield logical + i * span, span, None
            elif depth == 1:
                yield logical + i, 1, p
            else:
                yield from self._indirect(p, depth - 1, logical + i * span)

    def read_file(self, inode: Inode, chunk: int = 1 << 20) -> Iterator[bytes]:
        """The file's bytes, in pieces of at most `chunk` bytes; holes as zeros."""
        size, bs = inode.size, self.block_size
        done = 0
        for first, count, physical in self._runs(inode):
            start = first * bs
            if start >= size:
                break
            if start > done:  # a hole before this run
                yield from _zeros(start - done, chunk)
                done = start
            end = min(size, (first + count) * bs)
            while done < end:
                n = min(chunk, end - done)
                if physical is None:
                    yield bytes(n)
                else:
                    yield self._read(physical * bs + (done - start), n)
                done += n
            if done >= size:
                break
        if done < size:
            yield from _zeros(size - done, chunk)

    def symlink_target(self, inode: Inode) -> str:
        if inode.size < 60 and not inode.flags & (EXTENTS_FL | INLINE_DATA_FL):
            raw = inode.blocks[: inode.size]  # a fast symlink: the target is in i_block
        else:
            raw = b"".join(self.read_file(inode))
        return raw.decode("utf-8", "surrogateescape")

    # -- directories and paths --

    def entries(self, inode: Inode) -> Iterator[Entry]:
        """The names in a directory, '.' and '..' left out."""
        if not inode.is_dir:
            raise Ext4Error(f"inode {inode.number} is not a directory")
        data = b"".join(self.read_file(inode))
        bs = self.block_size
        for block in range(0, len(data), bs):
            pos, end = block, min(block + bs, len(data))
            while pos + 8 <= end:
                number, rec_len, name_len = struct.unpack_from("<IHB", data, pos)
                if rec_len < 8 or pos + rec_len > end or name_len > rec_len - 8:
                    raise Ext4Error(f"directory inode {inode.number} has a damaged entry")
                name = data[pos + 8 : pos + 8 + name_len].decode("utf-8", "surrogateescape")
                if number and name not in (".", ".."):
                    yield self.inode(number).entry(name)
                pos += rec_len

    def lookup(self, path: str, follow: bool = True) -> Inode:
        """The inode at `path` (absolute or relative to the root); symlinks in the middle of
        the path are followed, the last one only with `follow`."""
        return self._lookup(path, follow, 0)

    def _lookup(self, path: str, follow: bool, depth: int) -> Inode:
        if depth > MAX_SYMLINK_DEPTH:
            raise Ext4Error(f"{path}: too many levels of symbolic links")
        parts = components(path)
        current = self.inode(ROOT_INODE)
        trail: list[Inode] = []
        for i, part in enumerate(parts):
            if part == "..":
                current = trail.pop() if trail else current
                continue
            if not current.is_dir:
                raise Ext4Error(f"{'/' + '/'.join(parts[:i])} is not a directory")
            found = next((e for e in self.entries(current) if e.name == part), None)
            if found is None:
                raise Ext4Error(f"{'/' + '/'.join(parts[: i + 1])}: no such file or directory")
            child = self.inode(found.inode)
            last = i == len(parts) - 1
            if child.is_symlink and (follow or not last):
                target = self.symlink_target(child)
                base = "/".join(parts[:i]) if not target.startswith("/") else ""
                rest = "/".join(parts[i + 1 :])
                return self._lookup(f"{base}/{target}/{rest}", follow, depth + 1)
            trail.append(current)
            current = child
        return current

    def walk(self, inode: Inode, prefix: str) -> Iterator[tuple[str, Entry]]:
        """(path, entry) for everything under directory `inode`, depth first."""
        for entry in sorted(self.entries(inode), key=lambda e: e.name):
            path = f"{prefix.rstrip('/')}/{entry.name}"
            yield path, entry
            if entry.kind == "dir":
                yield from self.walk(self.inode(entry.inode), path)


def components(path: str) -> list[str]:
    """The names of `path`, absolute or relative, without empty ones and `.`."""
    return [p for p in path.split("/") if p not in ("", ".")]


def _zeros(n: int, chunk: int) -> Iterator[bytes]:
    while n > 0:
        step = min(n, chunk)
        yield bytes(step)
        n -= step
