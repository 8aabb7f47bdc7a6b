"""`mover mount`: a repository's snapshots as read-only image files, over FUSE.

    MOUNTPOINT/<short id>.img                      every snapshot
    MOUNTPOINT/latest.img                          the newest
    MOUNTPOINT/by-source/<source>/<time>-<short id>.img
    MOUNTPOINT/by-source/<source>/latest.img       the newest of that source

The view is the snapshots that existed when the repository was mounted (mount again to see
newer ones): a file's bytes never change while it is open. Reads go through
mover.pipeline.reader.SnapshotReader, one per snapshot, all sharing one bounded cache of decoded
chunks (a chunk shared by two snapshots is fetched once): a read fetches, verifies and decompresses
only the chunks it touches, holes are zeros. The repository's shared lock is held for as long as it
is mounted, so that a prune running meanwhile deletes nothing a mounted snapshot needs.

The binding is mfusepy (ctypes over libfuse 3 or 2, see docs/mount.md for why): imported only
when a mount starts, so that mover installs and runs without it (`pip install 'mover[mount]'`).
"""

from __future__ import annotations

import errno
import os
import stat
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from types import ModuleType
from typing import Any

import blake3

from mover.errors import MoverError, SourceError, UsageError
from mover.objects.locks import writer
from mover.objects.repository import Repository
from mover.objects.snapshot import Snapshot
from mover.pipeline.reader import NODE_CACHE_SIZE, BoundedCache, ParsedNode, SnapshotReader

LATEST = "latest.img"
BY_SOURCE = "by-source"
SHORT_ID = 8  # hex digits, as `mover snapshots` shows; more where two ids share them
NAME_MAX = 255
INSTALL_HINT = (
    "FUSE support is not installed: pip install 'mover[mount]' (the mfusepy binding) and the "
    "system's FUSE 3 (Debian/Ubuntu: apt-get install fuse3)"
)
# Errors while serving reads go to stderr, each distinct message once, and at most this many.
MAX_REPORTED = 100


@dataclass
class Namespace:
    """The mount's tree: file paths ("/latest.img") to snapshots, directory paths ("/",
    "/by-source", ...) to their entries' names, sorted."""

    files: dict[str, Snapshot] = field(default_factory=dict)
    dirs: dict[str, list[str]] = field(default_factory=dict)

    def add_file(self, directory: str, name: str, snapshot: Snapshot) -> None:
        self.dirs.setdefault(directory, []).append(name)
        self.files[_join(directory, name)] = snapshot


def _join(directory: str, name: str) -> str:
    return f"{directory.rstrip('/')}/{name}"


def short_ids(snapshots: list[Snapshot]) -> dict[str, str]:
    """id -> its shortest prefix of at least SHORT_ID digits that no other snapshot shares."""
    ids = sorted(s.id for s in snapshots)
    found = {}
    for i, snapshot_id in enumerate(ids):
        common = 0
        for other in (ids[i - 1] if i else "", ids[i + 1] if i + 1 < len(ids) else ""):
            common = max(common, _common_prefix(snapshot_id, other))
        found[snapshot_id] = snapshot_id[: max(SHORT_ID, common + 1)]
    return found


def _common_prefix(a: str, b: str) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def source_names(sources: list[str]) -> dict[str, str]:
    """Each source (a path, `-`, a name) -> a directory name: the path without its leading
    slash, slashes as underscores ("/dev/vdb" -> "dev_vdb"). Names that would collide, or
    that are empty, too long, "." or "..", get a suffix from the hash of the source."""

    def plain(source: str) -> str:
        return source.strip("/").replace("/", "_").replace("\0", "_")

    counts: dict[str, int] = {}
    for source in set(sources):
        counts[plain(source)] = counts.get(plain(source), 0) + 1
    names = {}
    for source in sorted(set(sources)):
        name = plain(source)
        if counts[name] > 1 or name in ("", ".", "..") or _too_long(name):
            suffix = "~" + blake3.blake3(source.encode("utf-8", "surrogatepass")).hexdigest()[:8]
            while _too_long(name + suffix):
                name = name[:-1]
            name = (name if name not in (".", "..") else "") + suffix
        names[source] = name
    return names


def _too_long(name: str) -> bool:
    return len(name.encode("utf-8", "surrogateescape")) > NAME_MAX


def _stamp(snapshot: Snapshot) -> str:
    """A snapshot's time for file names: UTC, to the second, sorting in time order."""
    try:
        when = datetime.fromisoformat(snapshot.time)
    except ValueError:
        return snapshot.time.replace("/", "_")
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def namespace(snapshots: list[Snapshot]) -> Namespace:
    """The tree for `snapshots` (oldest first, as Repository.snapshots() gives them)."""
    view = Namespace(dirs={"/": []})
    if not snapshots:
        return view
    shorts = short_ids(snapshots)
    for snapshot in snapshots:
        view.add_file("/", f"{shorts[snapshot.id]}.img", snapshot)
    view.add_file("/", LATEST, snapshots[-1])
    view.dirs["/"].append(BY_SOURCE)
    top = f"/{BY_SOURCE}"
    view.dirs[top] = []
    names = source_names([s.source for s in snapshots])
    newest: dict[str, Snapshot] = {}
    for snapshot in snapshots:
        directory = _join(top, names[snapshot.source])
        if directory not in view.dirs:
            view.dirs[top].append(names[snapshot.source])
            view.dirs[directory] = []
        view.add_file(directory, f"{_stamp(snapshot)}-{shorts[snapshot.id]}.img", snapshot)
        newest[directory] = snapshot
    for directory, snapshot in newest.items():
        view.add_file(directory, LATEST, snapshot)
    for entries in view.dirs.values():
        entries.sort()
    return view


def load_fuse() -> ModuleType:
    """The FUSE binding, or a UsageError saying what to install."""
    try:
        import mfusepy  # type: ignore[import-untyped, import-not-found, unused-ignore]
    except ImportError:
        raise UsageError(INSTALL_HINT) from None
    except (OSError, AttributeError) as exc:  # no libfuse, or one it cannot use
        raise UsageError(f"{INSTALL_HINT} ({exc})") from None
    module: ModuleType = mfusepy
    return module


def _ns(iso: str) -> int:
    try:
        return int(datetime.fromisoformat(iso).timestamp() * 1e9)
    except ValueError:
        return 0


class SnapshotFS:
    """The file system's operations, as the binding calls them (from several threads at once):
    paths in, attributes, names and bytes out; errors as OSError with an errno."""

    use_ns = True  # times in nanoseconds (the binding's current convention)

    def __init__(
        self,
        repo: Repository,
        view: Namespace,
        cache_size: int,
        on_mounted: Callable[[], None] | None = None,
    ) -> None:
        self.repo = repo
        self.view = view
        self.chunks = BoundedCache[bytes](cache_size)
        self.nodes = BoundedCache[ParsedNode](NODE_CACHE_SIZE)
        self.on_mounted = on_mounted
        self.mounted = False
        self._readers: dict[str, SnapshotReader] = {}
        self._handles: dict[int, SnapshotReader] = {}
        self._next_handle = 1
        self._lock = threading.Lock()
        self._reported: set[str] = set()
        self._uid, self._gid = os.getuid(), os.getgid()
        times = [_ns(s.time) for s in view.files.values()]
        self._dir_time = max(times, default=0)

    # -- the binding's callbacks ----------------------------------------------------------

    def init(self, path: str) -> None:
        self.mounted = True
        if self.on_mounted is not None:
            self.on_mounted()

    def destroy(self, path: str) -> None:
        with self._lock:
            readers = list(self._readers.values())
            self._readers.clear()
            self._handles.clear()
        for reader in readers:
            reader.close()

    def getattr(self, path: str, fh: int | None = None) -> dict[str, int]:
        base = {"st_uid": self._uid, "st_gid": self._gid}
        entries = self.view.dirs.get(path)
        if entries is not None:
            subdirs = sum(1 for name in entries if _join(path, name) in self.view.dirs)
            when = self._dir_time
            return {
                **base,
                "st_mode": stat.S_IFDIR | 0o555,
                "st_nlink": 2 + subdirs,
                "st_size": 0,
                "st_mtime": when,
                "st_ctime": when,
                "st_atime": when,
            }
        snapshot = self.view.files.get(path)
        if snapshot is None:
            raise _error(errno.ENOENT)
        when = _ns(snapshot.time)
        stored = max(0, snapshot.size - int(snapshot.stats.get("zero_bytes", 0)))
        return {
            **base,
            "st_mode": stat.S_IFREG | 0o444,
            "st_nlink": 1,
            "st_size": snapshot.size,
            "st_blocks": -(-stored // 512),  # holes take no blocks, as in a sparse file
            "st_blksize": 1 << 20,
            "st_mtime": when,
            "st_ctime": when,
            "st_atime": when,
        }

    def readdir(self, path: str, fh: int) -> list[str]:
        entries = self.view.dirs.get(path)
        if entries is None:
            raise _error(errno.ENOTDIR if path in self.view.files else errno.ENOENT)
        return [".", "..", *entries]

    def open(self, path: str, flags: int) -> int:
        snapshot = self.view.files.get(path)
        if snapshot is None:
            raise _error(errno.EISDIR if path in self.view.dirs else errno.ENOENT)
        if flags & os.O_ACCMODE != os.O_RDONLY:
            raise _error(errno.EROFS)
        with self._lock:
            reader = self._readers.get(snapshot.id)
            if reader is None:
                reader = SnapshotReader(self.repo, snapshot, chunks=self.chunks, nodes=self.nodes)
                self._readers[snapshot.id] = reader
            handle = self._next_handle
            self._next_handle += 1
            self._handles[handle] = reader
        return handle

    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        reader = self._handles.get(fh)
        if reader is None:
            raise _error(errno.EBADF)
        try:
            return reader.read(offset, size)
        except MoverError as exc:
            self._report(f"cannot read {path.lstrip('/')} at byte {offset}: {exc}")
            raise _error(errno.EIO) from None

    def release(self, path: str, fh: int) -> int:
        """The last handle of a snapshot closed: its reader goes (and its readahead threads:
        threads do not pile up as more snapshots are read); the caches stay, shared."""
        with self._lock:
            reader = self._handles.pop(fh, None)
            if reader is None or reader in self._handles.values():
                return 0
            del self._readers[reader.snapshot.id]
        reader.close()
        return 0

    def statfs(self, path: str) -> dict[str, int]:
        sizes = {s.id: s.size for s in self.view.files.values()}
        return {
            "f_bsize": 4096,
            "f_frsize": 4096,
            "f_blocks": -(-sum(sizes.values()) // 4096),
            "f_bfree": 0,
            "f_bavail": 0,
            "f_files": len(self.view.files) + len(self.view.dirs),
            "f_ffree": 0,
            "f_favail": 0,
            "f_namemax": NAME_MAX,
        }

    def _report(self, message: str) -> None:
        with self._lock:
            if message in self._reported or len(self._reported) >= MAX_REPORTED:
                return
            self._reported.add(message)
        print(f"mover: error: {message}", file=sys.stderr, flush=True)


def _error(code: int) -> OSError:
    return OSError(code, os.strerror(code))


def check_mountpoint(path: str) -> None:
    """A UsageError unless `path` is an empty directory that is not a mount point already; a
    dead FUSE mount (its process was killed) is named with the command that releases it."""
    dead = (
        f"{path} is still mounted by a process that ended (killed?); release it with "
        f"`fusermount3 -u {path}` (or `umount {path}`), then mount again"
    )
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise UsageError(f"mount point {path} does not exist; create the directory") from None
    except OSError as exc:
        if exc.errno == errno.ENOTCONN:
            raise UsageError(dead) from None
        raise UsageError(f"cannot use mount point {path}: {exc.strerror}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise UsageError(f"mount point {path} is not a directory")
    try:
        entries = os.listdir(path)
    except OSError as exc:
        if exc.errno == errno.ENOTCONN:  # stat may still answer from the kernel's cache
            raise UsageError(dead) from None
        raise UsageError(f"cannot use mount point {path}: {exc.strerror}") from None
    if os.path.ismount(path):
        raise UsageError(f"{path} is a mount point already; unmount it or choose another")
    if entries:
        raise UsageError(
            f"mount point {path} is not empty; mount on an empty directory (what is in it "
            "would be hidden)"
        )


def fuse_options(fuse: ModuleType, allow_other: bool) -> dict[str, Any]:
    """Mount options for the binding's libfuse version."""
    options: dict[str, Any] = {
        "foreground": True,
        "ro": True,
        "fsname": "mover",
        "default_permissions": True,  # the kernel checks the files' modes (0444, 0555)
        # Snapshots never change: the kernel keeps what was read in its page cache across
        # opens, and a second read of the same range costs no call into mover.
        "kernel_cache": True,
    }
    major, minor = getattr(fuse, "fuse_version_major", 0), getattr(fuse, "fuse_version_minor", 0)
    if major == 3:
        options["subtype"] = "mover"
        if minor >= 12:
            # Left at its default, libfuse 3.14.0 says "Ignoring invalid max threads value" on
            # stderr; 8 idle threads kept is plenty (libfuse starts up to 10 busy ones).
            options["max_idle_threads"] = 8
    if allow_other:
        options["allow_other"] = True
    return options


def run_mount(
    repo: Repository,
    mountpoint: str,
    cache_size: int,
    allow_other: bool = False,
    on_mounted: Callable[[Namespace], None] | None = None,
) -> None:
    """Mount the repository's snapshots at `mountpoint` and serve reads until it is unmounted
    (`fusermount3 -u`, `umount`) or the process is interrupted (SIGINT, SIGTERM, SIGHUP), under
    the repository's shared lock. `on_mounted` is told once the mount is live."""
    fuse = load_fuse()
    check_mountpoint(mountpoint)
    minimum = 2 * repo.config.chunker.max_size
    if cache_size < minimum:
        raise UsageError(
            f"--cache-size {cache_size} is below {minimum} bytes (two of this repository's "
            "largest chunks); give more"
        )
    if not any(True for _ in repo.backend.list("snapshots/")):  # a listing, nothing read
        raise UsageError("the repository has no snapshots yet; nothing to mount")
    with writer(repo, required=False):
        # Under the lock, and once: the index read now names every pack the snapshots listed
        # now need, and a prune from here on waits for this lock before deleting any of them
        # (read at the first open instead, it could miss packs a prune condemned meanwhile).
        snapshots = repo.snapshots()
        repo.index  # noqa: B018
        if not snapshots:  # all forgotten since
            raise UsageError("the repository has no snapshots left; nothing to mount")
        view = namespace(snapshots)
        fs = SnapshotFS(
            repo, view, cache_size, (lambda: on_mounted(view)) if on_mounted is not None else None
        )
        try:
            fuse.FUSE(fs, mountpoint, **fuse_options(fuse, allow_other))
        except RuntimeError as exc:
            # libfuse returns non-zero after a signal stopped a live mount too: that is how a
            # foreground mount is meant to end. Before the mount was live, it failed to mount.
            if not fs.mounted:
                raise SourceError(
                    f"cannot mount at {mountpoint} (libfuse error {exc}; its reason is above)"
                ) from None
        finally:
            fs.destroy("/")
