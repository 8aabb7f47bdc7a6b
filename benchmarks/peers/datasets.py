"""The three datasets, each a day-1 and a day-2 file, reproducible from a seed and a mode.

fs      an ext4 image (mke2fs -d) of real files of this machine, made dense (free space written
        as zeros, as a block device reads); day 2 is a copy edited in place with debugfs (files
        deleted, rewritten, added, a log appended), so unchanged blocks stay where they were
db      a tar stream (GNU tar --sort=name) of a stopped PostgreSQL data directory after
        `pgbench -i -s N`; day 2 after `pgbench -t T` more transactions
random  incompressible bytes (BLAKE3 XOF); day 2 has ranges inserted, deleted and overwritten,
        so most of it is the same bytes at shifted offsets

The random data is bit-reproducible. The fs image is as far as the files installed here are the
same (they are what it holds), except for inode change times (mke2fs copies the build's ctimes:
a few KiB of inode tables differ between builds). PostgreSQL's files are not (timestamps,
transaction ids, autovacuum timing); the pgbench workload is (--random-seed, one client).
"""

from __future__ import annotations

import contextlib
import glob
import gzip
import os
import random
import re
import shutil
import stat
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import blake3

from benchmarks.peers.tools import pg_bin, which

MiB = 1 << 20
GiB = 1 << 30
PIECE = 8 * MiB
FIXED_TIME = 1_704_067_200  # 2024-01-01 UTC: file times in the fs image
PG_PORT = 54329  # only names the unix socket; PostgreSQL listens on no TCP address
COMPRESSED = (".gz", ".xz", ".bz2", ".zst", ".lz4", ".zip", ".whl", ".png", ".jpg", ".jpeg")
SAFE_PATH = re.compile(r"^[A-Za-z0-9._+@,=/-]+$")


@dataclass(frozen=True)
class Sizes:
    fs_image: int  # bytes of the ext4 image
    fs_files: int  # bytes of files copied into it on day 1 (in whole 4 KiB blocks)
    db_scale: int  # pgbench -i -s
    db_transactions: int  # pgbench -t, one client
    db_wal_segsize_mib: int  # initdb --wal-segsize
    random: int  # bytes of random data on day 1


MODES = {
    "quick": Sizes(16 * MiB, 6 * MiB, 1, 1_000, 1, 4 * MiB),
    "default": Sizes(1 * GiB, 704 * MiB, 40, 20_000, 16, 1 * GiB),
    "large": Sizes(6 * GiB, 4 * GiB + 512 * MiB, 350, 300_000, 16, 6 * GiB),
}


@dataclass
class Dataset:
    name: str
    stream_name: str  # the file name restic and borg are given for the stream
    day1: Path
    day2: Path
    day1_bytes: int
    day2_bytes: int
    description: str
    day2_description: str
    build_s: float
    notes: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# helpers


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def run(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True, **kwargs)  # type: ignore[call-overload]
    if proc.returncode != 0:
        raise RuntimeError(
            f"`{' '.join(map(str, argv))}` exited {proc.returncode}:\n{proc.stdout[-3000:]}"
            f"{proc.stderr[-3000:]}"
        )
    return proc  # type: ignore[no-any-return]


def fill_holes(path: Path) -> None:
    """Write zeros over every hole, so the file reads like a block device (no SEEK_HOLE)."""
    zeros = bytes(PIECE)
    with open(path, "r+b") as f:
        fd = f.fileno()
        size = os.fstat(fd).st_size
        pos = 0
        while pos < size:
            hole = os.lseek(fd, pos, os.SEEK_HOLE)
            if hole >= size:
                break
            try:
                data = os.lseek(fd, hole, os.SEEK_DATA)
            except OSError:  # ENXIO: a hole up to the end
                data = size
            while hole < data:
                n = min(PIECE, data - hole)
                os.pwrite(fd, zeros[:n], hole)
                hole += n
            pos = data
        os.fsync(fd)


def dense_copy(src: Path, dst: Path) -> None:
    with open(src, "rb") as fi, open(dst, "wb") as fo:
        while block := fi.read(PIECE):
            fo.write(block)
        fo.flush()
        os.fsync(fo.fileno())


def differing_blocks(a: Path, b: Path, block: int = 4096) -> Iterator[tuple[int, int]]:
    """(offset, length) of each `block`-sized block that differs between two files, in order
    (a block past the end of the shorter file differs)."""
    offset = 0
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            da, db = fa.read(PIECE), fb.read(PIECE)
            if not da and not db:
                return
            longest = max(len(da), len(db))
            if da != db:
                for i in range(0, longest, block):
                    if da[i : i + block] != db[i : i + block]:
                        yield offset + i, min(block, longest - i)
            offset += longest


def changed_blocks(a: Path, b: Path, block: int = 4096) -> int:
    """How many `block`-sized blocks differ between two files of the same size."""
    return sum(1 for _ in differing_blocks(a, b, block))


def write_changed_ranges(a: Path, b: Path, out: Path, block: int = 4096) -> int:
    """The blocks of `b` that differ from `a` (same size), as `OFFSET LENGTH` lines with
    touching blocks merged, into `out` (what `mover backup --changed-ranges` reads); returns
    how many bytes they cover."""
    total, start, end = 0, -1, -1
    with open(out, "w") as fo:
        for at, size in differing_blocks(a, b, block):
            if at != end:
                if end >= 0:
                    fo.write(f"{start} {end - start}\n")
                start = at
            end = at + size
            total += size
        if end >= 0:
            fo.write(f"{start} {end - start}\n")
    return total


def mib(n: float) -> str:
    return f"{n / MiB:,.1f} MiB" if n >= MiB else f"{n / 1024:,.1f} KiB"


# ---------------------------------------------------------------------------------------------
# fs: an ext4 image of real files, day 2 edited in place with debugfs

ROOTS = ("/usr/share", *sorted(glob.glob("/usr/lib/python3*")), "/usr/lib", "/usr/bin", "/opt")


def file_pool(need: int, cap: int) -> list[tuple[str, int]]:
    """(absolute path, size) of regular files with plain names under ROOTS, sorted; roots are
    added in order until the pool holds `need` bytes. Files above `cap` bytes are left out."""
    pool: dict[str, int] = {}
    for root in ROOTS:
        if sum(pool.values()) >= need:
            break
        for directory, dirs, names in os.walk(root):
            dirs.sort()
            for name in names:
                path = os.path.join(directory, name)
                if path in pool or not SAFE_PATH.match(path):
                    continue
                try:
                    st = os.lstat(path)
                except OSError:
                    continue
                if stat.S_ISREG(st.st_mode) and st.st_size <= cap and os.access(path, os.R_OK):
                    pool[path] = st.st_size
    return sorted(pool.items())


COMPRESSED_SHARE = 0.25


def compressed_budget(sizes: Sizes) -> int:
    return int(sizes.fs_files * COMPRESSED_SHARE)


def allocated(size: int) -> int:
    """Bytes a file takes in the image: its 4 KiB blocks and, roughly, its metadata."""
    return -(-size // 4096) * 4096 + 4096


def pick(pool: list[tuple[str, int]], budget: int, rnd: random.Random) -> list[tuple[str, int]]:
    order = list(pool)
    rnd.shuffle(order)
    chosen, total = [], 0
    for path, size in order:
        blocks = allocated(size)
        if total + blocks <= budget:
            chosen.append((path, size))
            total += blocks
        if total >= budget * 0.995:
            break
    return chosen


def log_text(lines: int, rnd: random.Random, start: int = 0) -> bytes:
    words = ("GET", "PUT", "POST", "DELETE")
    paths = ("/api/v1/volumes", "/api/v1/snapshots", "/healthz", "/metrics", "/api/v1/restore")
    out = []
    for i in range(start, start + lines):
        out.append(
            f"2024-01-{1 + i // 86400 % 28:02d}T{i // 3600 % 24:02d}:{i // 60 % 60:02d}:"
            f"{i % 60:02d}Z node-{rnd.randrange(8)} api[{rnd.randrange(1000, 9999)}]: "
            f"{rnd.choice(words)} {rnd.choice(paths)}/{rnd.getrandbits(32):08x} "
            f"status={rnd.choice((200, 200, 200, 201, 204, 404, 500))} "
            f"bytes={rnd.randrange(100000)} ms={rnd.randrange(1, 900)}\n"
        )
    return "".join(out).encode()


def mutate(data: bytes, rnd: random.Random) -> bytes:
    """A day-2 version of a file: text gets a line inserted and one appended, binary data a
    4 KiB range rewritten; a .gz file is changed inside and compressed again."""
    if data[:2] == b"\x1f\x8b":
        try:
            inner = gzip.decompress(data)
        except (OSError, EOFError):
            inner = None
        if inner is not None:
            return gzip.compress(mutate(inner, rnd), compresslevel=9, mtime=0)
    if b"\0" not in data[:8192]:
        lines = data.splitlines(keepends=True)
        at = rnd.randrange(len(lines) + 1)
        lines.insert(at, f"# changed on day 2 ({rnd.getrandbits(64):016x})\n".encode())
        return b"".join(lines) + f"# appended on day 2 {rnd.getrandbits(32)}\n".encode()
    n = min(4096, len(data))
    at = rnd.randrange(len(data) - n + 1)
    return data[:at] + rnd.randbytes(n) + data[at + n :]


@dataclass
class FsPlan:
    """Day-2 edits as image paths (absolute inside the image) and local files holding content."""

    delete: list[str] = field(default_factory=list)
    replace: list[tuple[str, Path]] = field(default_factory=list)
    add: list[tuple[str, Path]] = field(default_factory=list)

    def debugfs_commands(self, existing_dirs: set[str]) -> list[str]:
        cmds = [f'rm "{p}"' for p in self.delete]
        made = set(existing_dirs)
        edits = [(p, f, True) for p, f in self.replace] + [(p, f, False) for p, f in self.add]
        for image_path, local, existing in edits:
            parent = os.path.dirname(image_path)
            if existing:  # rm, then write the new content as a new file
                cmds.append(f'rm "{image_path}"')
            missing = []
            d = parent
            while d not in made and d != "/":
                missing.append(d)
                d = os.path.dirname(d)
            for d in reversed(missing):
                cmds.append(f'mkdir "{d}"')
                made.add(d)
            cmds += [f'cd "{parent}"', f'write "{local}" "{os.path.basename(image_path)}"']
        return cmds

    def apply_to_tree(self, tree: Path) -> None:
        for p in self.delete:
            (tree / p.lstrip("/")).unlink()
        for image_path, local in [*self.replace, *self.add]:
            target = tree / image_path.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(local, target)


def mke2fs(tree: Path, image: Path, size: int, seed: int) -> None:
    with open(image, "wb") as f:
        f.truncate(size)
    fs_uuid = str(uuid.UUID(bytes=blake3.blake3(f"fs-uuid-{seed}".encode()).digest(16)))
    env = {**os.environ, "E2FSPROGS_FAKE_TIME": str(FIXED_TIME)}
    run(
        [
            which("mke2fs") or "mke2fs",
            *("-q", "-F", "-t", "ext4", "-b", "4096", "-i", "8192", "-L", "peers"),
            *("-U", fs_uuid, "-E", f"hash_seed={fs_uuid},nodiscard,root_owner=0:0"),
            *("-d", str(tree), str(image)),
        ],
        env=env,
    )
    fill_holes(image)


def build_fs(work: Path, sizes: Sizes, seed: int) -> Dataset:
    started = time.perf_counter()
    rnd = random.Random(f"fs-{seed}")
    cap = min(64 * MiB, max(sizes.fs_files // 16, 256 << 10))
    pool = file_pool(int(sizes.fs_files * 1.5), cap)
    # At least COMPRESSED_SHARE of the bytes are already-compressed files (as on a root
    # filesystem: man pages, changelogs, wheels, images), the rest drawn from everything.
    packed = pick([f for f in pool if f[0].endswith(COMPRESSED)], compressed_budget(sizes), rnd)
    taken = {p for p, _ in packed}
    rest = sizes.fs_files - sum(allocated(s) for _, s in packed)
    chosen = packed + pick([f for f in pool if f[0] not in taken], rest, rnd)
    notes: list[str] = []
    pool_bytes = sum(s for _, s in pool)
    if sum(allocated(s) for _, s in chosen) < sizes.fs_files * 0.9:
        notes.append(
            f"only {mib(pool_bytes)} of plain-named files under {', '.join(ROOTS)}: the image "
            "holds fewer file bytes than the mode asks for"
        )
    tree = work / "tree"
    tree.mkdir()
    dirs: set[str] = {"/"}
    for path, _ in chosen:
        target = tree / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
        os.utime(target, (FIXED_TIME, FIXED_TIME))
        d = os.path.dirname(path)
        while d not in dirs:
            dirs.add(d)
            d = os.path.dirname(d)
    log_rnd = random.Random(f"fs-log-{seed}")
    log_lines = max(200, sizes.fs_files // 100 // 150)  # ~1% of the files' bytes
    log_day1 = log_text(log_lines, log_rnd)
    log_path = "/var/log/peers/api.log"
    (tree / "var/log/peers").mkdir(parents=True)
    (tree / log_path.lstrip("/")).write_bytes(log_day1)
    os.utime(tree / log_path.lstrip("/"), (FIXED_TIME, FIXED_TIME))
    dirs |= {"/var", "/var/log", "/var/log/peers"}
    for d in sorted(dirs, key=len, reverse=True):
        os.utime(tree / d.lstrip("/"), (FIXED_TIME, FIXED_TIME))

    day1, day2 = work / "day1.img", work / "day2.img"
    mke2fs(tree, day1, sizes.fs_image, seed)

    # Day 2: delete 2% of the files, rewrite 5%, add new files worth 5% of the bytes, append
    # 10% to the log.
    edit = random.Random(f"fs-day2-{seed}")
    order = list(chosen)
    edit.shuffle(order)
    n_delete = max(1, len(order) * 2 // 100)
    n_replace = max(1, len(order) * 5 // 100)
    edits = work / "edits"
    edits.mkdir()
    plan = FsPlan(delete=sorted(p for p, _ in order[:n_delete]))
    recompressed = 0
    for i, (path, _) in enumerate(sorted(order[n_delete : n_delete + n_replace])):
        data = Path(path).read_bytes()
        recompressed += data[:2] == b"\x1f\x8b"
        local = edits / f"r{i:05d}"
        local.write_bytes(mutate(data, edit))
        plan.replace.append((path, local))
    used = {p for p, _ in chosen}
    spare = [(p, s) for p, s in pool if p not in used]
    added = pick(spare, sizes.fs_files // 20, edit)
    for i, (path, _) in enumerate(sorted(added)):
        local = edits / f"a{i:05d}"
        shutil.copyfile(path, local)
        plan.add.append((path, local))
    log_day2 = log_day1 + log_text(log_lines // 10, log_rnd, start=log_lines)
    (edits / "log").write_bytes(log_day2)
    plan.replace.append((log_path, edits / "log"))

    dense_copy(day1, day2)
    commands = work / "debugfs.cmds"
    commands.write_text("\n".join(plan.debugfs_commands(dirs)) + "\n")
    env = {**os.environ, "E2FSPROGS_FAKE_TIME": str(FIXED_TIME + 86400)}
    proc = subprocess.run(
        [which("debugfs") or "debugfs", "-w", "-f", str(commands), str(day2)],
        capture_output=True,
        text=True,
        env=env,
    )
    errors = [
        line
        for line in proc.stderr.splitlines()
        if line.strip() and not line.startswith("debugfs ")
    ]
    fsck = subprocess.run(
        [which("e2fsck") or "e2fsck", "-fn", str(day2)], capture_output=True, text=True
    )
    method = "copied and edited in place with debugfs -w (rm, mkdir, write)"
    if proc.returncode != 0 or errors or fsck.returncode != 0:
        if errors:
            why = "; ".join(errors[:3])
        elif proc.returncode != 0:
            why = f"debugfs exited {proc.returncode}"
        else:
            why = f"e2fsck -fn on the result exited {fsck.returncode}: {fsck.stdout[-300:]}"
        notes.append(
            f"debugfs editing failed ({why}); day 2 was rebuilt with mke2fs -d from the edited "
            "tree instead, so its block layout is NOT that of day 1 plus edits"
        )
        method = "REBUILT with mke2fs -d from the edited tree (debugfs failed)"
        plan.apply_to_tree(tree)
        day2.unlink()
        mke2fs(tree, day2, sizes.fs_image, seed)
    fsync_file(day2)
    blocks = changed_blocks(day1, day2)
    shutil.rmtree(tree)
    shutil.rmtree(edits)
    commands.unlink()

    compressed = sum(s for p, s in chosen if p.endswith(COMPRESSED))
    day1_files = sum(s for _, s in chosen) + len(log_day1)
    roots = ", ".join(r for r in ROOTS if any(p.startswith(r + "/") for p, _ in chosen))
    appended = len(log_day2) - len(log_day1)
    return Dataset(
        name="fs",
        stream_name="fs.img",
        day1=day1,
        day2=day2,
        day1_bytes=sizes.fs_image,
        day2_bytes=sizes.fs_image,
        description=(
            f"ext4 image (mke2fs -d, 4 KiB blocks) of {mib(sizes.fs_image)}: {len(chosen) + 1:,} "
            f"files, {mib(day1_files)} (of it {mib(compressed)} already compressed: .gz, .xz, "
            f".png, .whl...) from {roots}, the rest free space (zeros; the image is dense)"
        ),
        day2_description=(
            f"{method}: {len(plan.delete)} files deleted, {n_replace} rewritten ({recompressed} "
            f"of them .gz, changed inside and recompressed), {len(added)} added "
            f"({mib(sum(s for _, s in added))}), log appended by {mib(appended)}; "
            f"{blocks:,} of {sizes.fs_image // 4096:,} 4 KiB blocks differ"
        ),
        build_s=time.perf_counter() - started,
        notes=notes,
    )


# ---------------------------------------------------------------------------------------------
# db: PostgreSQL data directory after pgbench, as a tar stream


class Postgres:
    """A throwaway cluster in `cluster`, run as the postgres user, on a unix socket only."""

    def __init__(self, cluster: Path, sizes: Sizes) -> None:
        self.cluster = cluster
        self.data = cluster / "data"
        self.sock = cluster / "sock"
        self.sizes = sizes
        self.running = False
        self.as_pg = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    def pg(self, argv: list[str]) -> str:
        env = {**os.environ, "HOME": str(self.cluster), "PGHOST": str(self.sock)}
        env["PGPORT"] = str(PG_PORT)
        return run([*self.as_pg, *argv], env=env, cwd=self.cluster).stdout

    def initdb(self) -> None:
        self.cluster.mkdir()
        self.sock.mkdir()
        if self.as_pg:
            shutil.chown(self.cluster, "postgres", "postgres")
            shutil.chown(self.sock, "postgres", "postgres")
            probe = subprocess.run([*self.as_pg, "test", "-w", str(self.cluster)])
            if probe.returncode != 0:
                raise RuntimeError(
                    f"the postgres user cannot write {self.cluster}: some directory above it "
                    "is not searchable by others; use a --workdir under /tmp"
                )
        self.pg(
            [
                pg_bin("initdb"),
                *("-D", str(self.data), "-U", "postgres", "--auth=trust", "--no-sync"),
                *(
                    "--encoding=UTF8",
                    "--locale=C",
                    f"--wal-segsize={self.sizes.db_wal_segsize_mib}",
                ),
            ]
        )

    def start(self) -> None:
        options = (
            f"-c listen_addresses='' -c unix_socket_directories='{self.sock}' -p {PG_PORT} "
            "-c fsync=off"
        )
        if self.sizes.db_wal_segsize_mib < 16:
            options += f" -c min_wal_size={2 * self.sizes.db_wal_segsize_mib}MB"
            options += f" -c max_wal_size={8 * self.sizes.db_wal_segsize_mib}MB"
        log = str(self.cluster / "server.log")
        self.pg(
            [pg_bin("pg_ctl"), "-D", str(self.data), "-l", log, "-w", "-s", "-o", options, "start"]
        )
        self.running = True

    def stop(self) -> None:
        if self.running:
            self.pg([pg_bin("pg_ctl"), "-D", str(self.data), "-w", "-s", "-m", "fast", "stop"])
            self.running = False

    def pgbench(self, *args: str) -> str:
        return self.pg([pg_bin("pgbench"), "-U", "postgres", *args, "postgres"])


def tar_data_dir(cluster: Path, out: Path) -> int:
    run(["tar", "--sort=name", "--numeric-owner", "-cf", str(out), "-C", str(cluster), "data"])
    fsync_file(out)
    return out.stat().st_size


def build_db(work: Path, sizes: Sizes, seed: int) -> Dataset:
    started = time.perf_counter()
    pg = Postgres(work / "pg", sizes)
    day1, day2 = work / "day1.tar", work / "day2.tar"
    try:
        pg.initdb()
        pg.start()
        pg.pgbench("-i", "-q", "-s", str(sizes.db_scale))
        pg.stop()
        day1_bytes = tar_data_dir(pg.cluster, day1)
        pg.start()
        report = pg.pgbench(
            "-c", "1", "-j", "1", "-t", str(sizes.db_transactions), f"--random-seed={seed}"
        )
        pg.stop()
        day2_bytes = tar_data_dir(pg.cluster, day2)
    finally:
        try:
            pg.stop()
        finally:
            shutil.rmtree(pg.cluster, ignore_errors=True)
    tps = next((line.split()[2] for line in report.splitlines() if line.startswith("tps")), "?")
    with contextlib.suppress(ValueError):
        tps = f"{float(tps):,.0f}"
    return Dataset(
        name="db",
        stream_name="db.tar",
        day1=day1,
        day2=day2,
        day1_bytes=day1_bytes,
        day2_bytes=day2_bytes,
        description=(
            f"tar -cf (GNU tar --sort=name) of a stopped PostgreSQL data directory after "
            f"`pgbench -i -s {sizes.db_scale}` ({mib(day1_bytes)}; initdb --wal-segsize="
            f"{sizes.db_wal_segsize_mib}, fsync=off, otherwise default settings)"
        ),
        day2_description=(
            f"the same cluster after `pgbench -c 1 -t {sizes.db_transactions} "
            f"--random-seed={seed}` (TPC-B-like updates, {tps} tps), stopped, tar -cf again "
            f"({mib(day2_bytes)})"
        ),
        build_s=time.perf_counter() - started,
    )


# ---------------------------------------------------------------------------------------------
# random: incompressible, day 2 with inserted, deleted and overwritten ranges


def xof(key: bytes) -> blake3.blake3:
    return blake3.blake3(key=blake3.blake3(key).digest())


def write_xof(f: object, stream: blake3.blake3, offset: int, length: int) -> None:
    end = offset + length
    while offset < end:
        n = min(PIECE, end - offset)
        f.write(stream.digest(length=n, seek=offset))  # type: ignore[attr-defined]
        offset += n


def build_random(work: Path, sizes: Sizes, seed: int) -> Dataset:
    started = time.perf_counter()
    size = sizes.random
    day1, day2 = work / "day1.bin", work / "day2.bin"
    with open(day1, "wb") as f:
        write_xof(f, xof(f"random-day1-{seed}".encode()), 0, size)
        f.flush()
        os.fsync(f.fileno())
    rnd = random.Random(f"random-day2-{seed}")
    edits = max(8, size // (16 * MiB))
    small = max(1, size // 1024)
    kinds = {"insert": 0, "delete": 0, "overwrite": 0}
    new_bytes = 0
    fresh = xof(f"random-day2-{seed}".encode())
    fresh_pos = 0
    positions = sorted(rnd.sample(range(size), edits))
    with open(day1, "rb") as src, open(day2, "wb") as out:
        pos = 0
        for at in positions:
            if at < pos:
                continue
            kind = rnd.choice(list(kinds))
            length = rnd.randrange(max(1, small // 64), min(small, 1 * MiB) + 1)
            src.seek(pos)
            copy = at - pos
            while copy:
                block = src.read(min(PIECE, copy))
                out.write(block)
                copy -= len(block)
            pos = at
            if kind in ("insert", "overwrite"):
                write_xof(out, fresh, fresh_pos, length)
                fresh_pos += length
                new_bytes += length
            if kind in ("delete", "overwrite"):
                pos = min(size, at + length)
            kinds[kind] += 1
        src.seek(pos)
        while block := src.read(PIECE):
            out.write(block)
        out.flush()
        os.fsync(out.fileno())
    day2_bytes = day2.stat().st_size
    return Dataset(
        name="random",
        stream_name="random.bin",
        day1=day1,
        day2=day2,
        day1_bytes=size,
        day2_bytes=day2_bytes,
        description=f"{mib(size)} of BLAKE3 XOF output (seed {seed}): incompressible, no repeats",
        day2_description=(
            f"{kinds['insert']} ranges inserted, {kinds['delete']} deleted, "
            f"{kinds['overwrite']} overwritten ({mib(new_bytes)} of new bytes, "
            f"{len(positions)} edits of up to {mib(min(small, MiB))}); everything after an "
            f"insert or delete is shifted ({mib(day2_bytes)})"
        ),
        build_s=time.perf_counter() - started,
    )


BUILDERS = {"fs": build_fs, "db": build_db, "random": build_random}


def build(name: str, work: Path, mode: str, seed: int) -> Dataset:
    """Build dataset `name` under `work` (a new directory); run in a helper process."""
    work.mkdir(parents=True)
    return BUILDERS[name](work, MODES[mode], seed)
