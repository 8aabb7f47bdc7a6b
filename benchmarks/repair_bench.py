"""`mover repair index` at scale: wall, CPU and peak RSS of rebuilding the index of a
repository of 1 M chunks (issue 13) from its packs' headers, after damage, with --read-data,
and `mover check` beside it for comparison.

A repository is generated (a child process):

- a local repository, Argon2id cost lowered to 8 MiB / 1 iteration / 1 lane (opening it costs
  milliseconds; nothing measured depends on it), default chunker, 16 MiB packs, zstd 3;
- N chunks in REAL packs of PACK_ENTRIES (64) chunks each, the entry count of a 16 MiB pack of
  ~256 KiB chunks, so ~15,600 packs for 1 M chunks. The blobs are tiny (32 random bytes from the
  seed each) but valid: id = the repository's keyed hash of the data, sealed with
  mover.content.blob.encode, packed with PackBuilder and stored with Repository.write_pack;
  each pack's sealed header at its tail, as a backup writes it. What `repair index` reads of a
  pack (its size, then the header from its tail: two small reads) is what it reads of a real
  16 MiB pack; --read-data reads every blob, here 61 bytes instead of ~256 KiB;
- index files written as a backup writes them: Repository.write_index every FILE_ENTRIES
  (65,536) entries, i.e. every 1,024 packs (--quick: 4,096 entries, so the damage step has
  files enough to damage);
- one snapshot referencing every chunk, its tree built with mover.objects.tree.TreeBuilder and
  stored as real tree blobs in real packs (indexed after their packs, the snapshot last).

Then, each in a child process measured with os.wait4 (wall, user+sys CPU, peak RSS):

    repair index          `mover repair index --json` (the CLI) on the intact repository
    damage                the index files the backups wrote are put back (the repair replaced
                          them with files of 2^18 entries), then 3 of them are deleted and one
                          byte of another is flipped (not measured: a setup step)
    repair after damage   `mover repair index --json` again
    verify                loads the index (Repository.index) and checks it: N + tree nodes
                          entries, no damaged index file, every one of the N chunk ids
                          (regenerated from the seed) present, and the first chunk of every
                          pack read back through the index and equal to its data
    repair --read-data    `mover repair index --read-data --json`: every blob read and verified
    check                 `mover check --json` (plain: structure, no data read)

The parent only orchestrates and stays small (Linux carries a parent's peak RSS into its
children's ru_maxrss at fork). The workdir is removed at the end unless --keep.

    python -m benchmarks.repair_bench [--chunks 1M] [--quick] [--json FILE] [--workdir DIR]
        [--keep] [--seed S]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import shutil
import socket
import sys
import tempfile
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.child import tree_bytes
from benchmarks.index_scale import Runner, Step, StepFailed, parse_count

PASSWORD = "repair-bench"
PACK_ENTRIES = 64  # chunks per pack: a 16 MiB pack of ~256 KiB chunks (the default chunker)
FILE_ENTRIES = 65536  # index entries a backup flushes at a time (mover.pipeline.backup.INDEX_FLUSH)
QUICK_FILE_ENTRIES = 4096  # --quick: 20k chunks still make 5 data index files
CHUNK_BYTES = 32  # plaintext of each generated chunk
DELETED_FILES = 3  # index files the damage step deletes (and one more it flips a byte of)
# Disk per chunk: its pack share (61-byte blob, 41-byte header entry, a block's slack), the
# index files (~45 B, a copy kept for the damage step, the repair's files).
DISK_PER_CHUNK = 61 + 41 + 64 + 3 * 45
STEPS = (
    "generate",
    "repair index",
    "damage",
    "repair after damage",
    "verify",
    "repair --read-data",
    "check",
)
REPAIRS = ("repair index", "repair after damage", "repair --read-data")


# -- what generation makes, shared by the children ------------------------------------------


def pack_count(n: int) -> int:
    return -(-n // PACK_ENTRIES)


def pack_data(seed: str, n: int, pack_no: int) -> list[bytes]:
    """The plaintexts of the chunks of generated data pack `pack_no`."""
    count = min(PACK_ENTRIES, n - pack_no * PACK_ENTRIES)
    raw = random.Random(f"repair-bench {seed} pack {pack_no}").randbytes(CHUNK_BYTES * count)
    return [raw[CHUNK_BYTES * i : CHUNK_BYTES * (i + 1)] for i in range(count)]


def index_files_of(entries: int) -> int:
    """Index files `repair index` writes for `entries` entries (IndexWriter)."""
    from mover.objects.repository import INDEX_FILE_ENTRIES

    return -(-entries // INDEX_FILE_ENTRIES)


# -- children -------------------------------------------------------------------------------


def _open(repo_dir: Path) -> Any:
    from mover.objects.repository import Repository
    from mover.storage.local import LocalBackend

    return Repository.open(LocalBackend(repo_dir), PASSWORD.encode())


def child_generate(repo_dir: Path, n: int, seed: str, file_entries: int) -> dict[str, Any]:
    from mover.chunking import DEFAULT_PARAMS, ChunkerParams
    from mover.content import blob
    from mover.content.pack import KIND_DATA, KIND_TREE, PackBuilder, PackEntry
    from mover.crypto import KdfParams
    from mover.objects.repository import RepoConfig, Repository
    from mover.objects.snapshot import Snapshot
    from mover.objects.tree import TreeBuilder
    from mover.storage.local import LocalBackend

    started = time.monotonic()
    rng = random.Random(f"repair-bench {seed} repository")
    params = ChunkerParams(
        DEFAULT_PARAMS.min_size, DEFAULT_PARAMS.avg_size, DEFAULT_PARAMS.max_size, rng.randbytes(32)
    )
    repo = Repository.init(
        LocalBackend(repo_dir), PASSWORD.encode(), RepoConfig(params), KdfParams(8 * 1024, 1, 1)
    )
    master, sealer, level = repo.master, repo.sealer, repo.config.zstd_level
    pending: list[tuple[bytes, PackEntry]] = []  # index entries not yet in an index file
    index_files = pack_bytes = tree_packs = 0

    def write_pack(builder: PackBuilder) -> list[tuple[bytes, PackEntry]]:
        nonlocal pack_bytes
        pack_id, data = builder.finish(sealer)
        repo.write_pack(pack_id, data)
        pack_bytes += len(data)
        return [(pack_id, e) for e in builder.entries]

    def flush_index(entries: list[tuple[bytes, PackEntry]]) -> None:
        nonlocal index_files
        if entries:
            repo.write_index(entries, remember=False)  # what a backup's flush writes
            index_files += 1

    tree_pack = PackBuilder()
    tree_entries: list[tuple[bytes, PackEntry]] = []
    stored_nodes: set[bytes] = set()

    def store(node: bytes) -> bytes:
        nonlocal tree_pack, tree_packs
        node_id: bytes = master.chunk_id_of(node)
        if node_id not in stored_nodes:
            stored_nodes.add(node_id)
            tree_pack.add(node_id, blob.encode(sealer, node_id, node, level), KIND_TREE)
            if len(tree_pack) >= repo.config.pack_size:
                tree_entries.extend(write_pack(tree_pack))
                tree_pack, tree_packs = PackBuilder(), tree_packs + 1
        return node_id

    tree = TreeBuilder(store)
    for pack_no in range(pack_count(n)):
        builder = PackBuilder()
        for data in pack_data(seed, n, pack_no):
            chunk_id = master.chunk_id_of(data)
            builder.add(chunk_id, blob.encode(sealer, chunk_id, data, 0), KIND_DATA)
            tree.add(len(data), chunk_id)
        pending += write_pack(builder)
        if len(pending) >= file_entries:
            flush_index(pending)
            pending = []
    flush_index(pending)
    root = tree.finish()
    if tree_pack.entries:
        tree_entries.extend(write_pack(tree_pack))
        tree_packs += 1
    # The tree's index file after its packs, the snapshot after its index: as a backup writes.
    flush_index(tree_entries)
    snapshot = Snapshot(
        time=datetime.now(UTC).isoformat(timespec="microseconds"),
        hostname="repair-bench",
        source="generated",
        size=tree.size,
        tree=root.hex(),
    )
    repo.write_snapshot(snapshot)
    return {
        "chunks": n,
        "data_packs": pack_count(n),
        "pack_bytes": pack_bytes,
        "index_files": index_files,
        "file_entries": file_entries,
        "tree_nodes": len(stored_nodes),
        "tree_packs": tree_packs,
        "seconds": time.monotonic() - started,
    }


def child_damage(repo_dir: Path, saved: Path, seed: str) -> dict[str, Any]:
    """The index files the backups wrote put back in place of the repair's, then 3 of them
    deleted and one byte flipped in another (chosen by the seed); then the index is loaded, to
    show the damage is real: entries missing, the flipped file found damaged."""
    index_dir = repo_dir / "index"
    shutil.rmtree(index_dir)
    shutil.copytree(saved, index_dir)
    names = sorted(p.name for p in index_dir.iterdir())
    rng = random.Random(f"repair-bench {seed} damage")
    *deleted, flipped = rng.sample(names, DELETED_FILES + 1)
    for name in deleted:
        (index_dir / name).unlink()
    path = index_dir / flipped
    with open(path, "r+b") as f:
        f.seek(path.stat().st_size // 2)
        byte = f.read(1)[0]
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte ^ 0xFF]))
    repo = _open(repo_dir)
    return {
        "index_files": len(names),
        "deleted": deleted,
        "flipped": flipped,
        "index_chunks": len(repo.index),
        "damaged": sorted(repo.damage),
    }


def child_verify(repo_dir: Path, n: int, seed: str) -> dict[str, Any]:
    started = time.monotonic()
    repo = _open(repo_dir)
    index = repo.index
    master = repo.master
    checked = found = read_back = equal = 0
    for pack_no in range(pack_count(n)):
        chunks = pack_data(seed, n, pack_no)
        ids = [master.chunk_id_of(data) for data in chunks]
        checked += len(ids)
        found += sum(1 for chunk_id in ids if chunk_id in index)
        read_back += 1
        equal += repo.read_blob(ids[0]) == chunks[0]
    return {
        "index_chunks": len(index),
        "index_files": len(index.files),
        "damaged": sorted(repo.damage),
        "checked": checked,
        "found": found,
        "read_back": read_back,
        "read_back_equal": equal,
        "seconds": time.monotonic() - started,
    }


def child_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="benchmarks.repair_bench child")
    parser.add_argument("action", choices=("generate", "damage", "verify"))
    parser.add_argument("--path", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--chunks", type=int, default=0)
    parser.add_argument("--seed", default="0")
    parser.add_argument("--file-entries", type=int, default=FILE_ENTRIES)
    parser.add_argument("--saved", type=Path)
    args = parser.parse_args(argv)
    result: dict[str, Any]
    if args.action == "generate":
        result = child_generate(args.path, args.chunks, args.seed, args.file_entries)
    elif args.action == "damage":
        result = child_damage(args.path, args.saved, args.seed)
    else:
        result = child_verify(args.path, args.chunks, args.seed)
    args.out.write_text(json.dumps(result))


# -- the parent -----------------------------------------------------------------------------


class RepairRunner(Runner):
    """index_scale's runner (environment, os.wait4, results), with this module's children."""

    def child(self, name: str, action: str, path: Path, **options: int | str) -> Step:
        argv = [sys.executable, "-m", "benchmarks.repair_bench", "child", action]
        argv += ["--path", str(path), "--out", str(self.workdir / "result.json")]
        argv += ["--seed", self.seed]
        for key, value in options.items():
            argv += [f"--{key.replace('_', '-')}", str(value)]
        return self.run(name, argv, json_stdout=False)


def run_repair(runner: Runner, n: int, file_entries: int, keep: bool) -> dict[str, Any]:
    repo = runner.workdir / f"repo-{n}"
    saved = runner.workdir / "index-as-backed-up"
    steps: list[Step] = []

    def report(step: Step) -> Step:
        steps.append(step)
        print(
            f"  {step.name:<19} {step.wall_s:8.1f} s wall {step.cpu_s:8.1f} s CPU "
            f"{step.max_rss_mib:8.1f} MiB peak RSS",
            flush=True,
        )
        return step

    gen = report(runner.child("generate", "generate", repo, chunks=n, file_entries=file_entries))
    print(
        f"  generated {n:,} chunks in {gen.output['data_packs']:,} packs, "
        f"{gen.output['index_files']} index files, {gen.output['tree_nodes']} tree nodes in "
        f"{gen.output['tree_packs']} packs ({gen.wall_s:.1f} s)",
        flush=True,
    )
    repo_bytes = tree_bytes(repo)
    shutil.copytree(repo / "index", saved)
    at = ("--repo", str(repo))
    report(runner.mover("repair index", "repair", "index", *at))
    report(runner.child("damage", "damage", repo, saved=str(saved)))
    shutil.rmtree(saved)
    report(runner.mover("repair after damage", "repair", "index", *at))
    report(runner.child("verify", "verify", repo, chunks=n))
    report(runner.mover("repair --read-data", "repair", "index", "--read-data", *at))
    report(runner.mover("check", "check", *at))
    entries = n + gen.output["tree_nodes"]
    for step in steps:
        if step.name in REPAIRS:
            step.output["chunks_per_s"] = step.output["chunks"] / step.wall_s
    result = {
        "chunks": n,
        "entries": entries,
        "generated": gen.output,
        "repo_bytes": repo_bytes,
        "steps": [{**asdict(s), "cpu_s": s.cpu_s} for s in steps],
    }
    if not keep:
        shutil.rmtree(repo)
    return result


def check(result: dict[str, Any]) -> list[str]:
    """What is wrong with the figures (empty: all as expected)."""
    problems = []
    gen = result["generated"]
    entries = result["entries"]
    packs = gen["data_packs"] + gen["tree_packs"]
    written = index_files_of(entries)
    steps = {s["name"]: s["output"] for s in result["steps"]}
    damage = steps["damage"]
    deleted = {
        "repair index": gen["index_files"],
        "repair after damage": damage["index_files"] - DELETED_FILES,  # the flipped one too
        "repair --read-data": written,
    }
    for name in REPAIRS:
        out = steps[name]
        want = {
            "chunks": entries,
            "packs": packs,
            "index_files_written": written,
            "index_files_deleted": deleted[name],
            "damaged_packs": {},
            "bad_blobs": 0,
        }
        got = {key: out.get(key) for key in want}
        if got != want:
            problems.append(f"{name}: {got}, expected {want}")
    if (
        damage["index_files"] != gen["index_files"]
        or damage["damaged"] != [f"index/{damage['flipped']}"]
        or not damage["index_chunks"] < entries
    ):
        problems.append(f"damage: not the damage intended: {damage}")
    verify = steps["verify"]
    if (
        verify["index_chunks"] != entries
        or verify["index_files"] != written
        or verify["damaged"]
        or verify["checked"] != result["chunks"]
        or verify["found"] != verify["checked"]
        or verify["read_back_equal"] != verify["read_back"]
        or verify["read_back"] != gen["data_packs"]
    ):
        problems.append(f"verify: the rebuilt index is wrong: {verify}")
    out = steps["check"]
    if not out["ok"] or out["chunks"] != entries or out["packs"] != packs or out["snapshots"] != 1:
        problems.append(f"check: {out}")
    return problems


def notes(step: dict[str, Any]) -> str:
    out = step["output"]
    name = step["name"]
    if name == "generate":
        return (
            f"{out['data_packs']:,} packs of {PACK_ENTRIES} blobs, {out['index_files']} index "
            f"files, {out['tree_nodes']} tree nodes"
        )
    if name in REPAIRS:
        return (
            f"{out['chunks']:,} blobs in {out['packs']:,} packs, "
            f"{out['index_files_written']} written, {out['index_files_deleted']} replaced"
        )
    if name == "damage":
        return (
            f"{len(out['deleted'])} of {out['index_files']} index files deleted, 1 flipped: "
            f"{out['index_chunks']:,} entries left"
        )
    if name == "verify":
        return (
            f"{out['index_chunks']:,} entries, {out['found']:,}/{out['checked']:,} ids found, "
            f"{out['read_back_equal']:,}/{out['read_back']:,} read back equal"
        )
    return f"ok: {out['ok']}, {out['chunks']:,} chunks, {out['packs']:,} packs"


def print_table(report: dict[str, Any]) -> None:
    print()
    print("| step | wall s | CPU s | peak RSS MiB | chunks/s | notes |")
    print("|---|---|---|---|---|---|")
    for result in report["results"]:
        for s in result["steps"]:
            rate = s["output"].get("chunks_per_s")
            print(
                f"| {s['name']} | {s['wall_s']:.1f} | {s['cpu_s']:.1f} | {s['max_rss_mib']:.0f} "
                f"| {f'{rate:,.0f}' if rate else ''} | {notes(s)} |"
            )


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe(n: int, file_entries: int, seed: str) -> str:
    return (
        f"Generated repository (seed {seed!r}): local backend, Argon2id lowered to 8 MiB / 1 "
        f"iteration / 1 lane, default chunker, 16 MiB packs; {n:,} chunks of {CHUNK_BYTES} "
        f"random bytes, each a valid blob, in {pack_count(n):,} real packs of {PACK_ENTRIES} "
        f"(the entry count of a 16 MiB pack of ~256 KiB chunks), indexed as a backup does every "
        f"{file_entries:,} entries; one snapshot referencing every chunk, its tree in real tree "
        f"blobs."
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["child"]:
        child_main(argv[1:])
        return 0
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.repair_bench", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--chunks", default="1M", help="chunk count, e.g. 1M or 250k")
    parser.add_argument("--quick", action="store_true", help="20k chunks (for the test)")
    parser.add_argument("--json", type=Path, help="write the report here too")
    parser.add_argument("--workdir", type=Path, help="where the repository goes (default: /tmp)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--seed", default="1")
    args = parser.parse_args(argv)
    file_entries = FILE_ENTRIES
    if args.quick:
        args.chunks, file_entries = "20k", QUICK_FILE_ENTRIES
    try:
        n = parse_count(args.chunks)
    except argparse.ArgumentTypeError as exc:
        parser.error(str(exc))
    if pack_count(n) * PACK_ENTRIES < (DELETED_FILES + 1) * file_entries:
        parser.error(f"needs at least {(DELETED_FILES + 1) * file_entries:,} chunks to damage")

    workdir = Path(tempfile.mkdtemp(prefix="mover-repair-bench-", dir=args.workdir))
    needed = DISK_PER_CHUNK * n
    free = shutil.disk_usage(workdir).free
    if free < needed * 3 // 2:
        shutil.rmtree(workdir)
        print(f"needs ~{needed / 2**30:.1f} GiB free in {workdir.parent}, has {free / 2**30:.1f}")
        return 1
    runner = RepairRunner(workdir, args.seed)
    runner.env["MOVER_PASSWORD"] = PASSWORD
    report: dict[str, Any] = {
        "command": " ".join(["python -m benchmarks.repair_bench", *argv]),
        "machine": {
            "host": socket.gethostname(),
            "cpus": os.cpu_count(),
            "cpu": cpu_model(),
            "python": platform.python_version(),
        },
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "generation": describe(n, file_entries, args.seed),
        "results": [],
        "problems": [],
    }
    print(report["generation"], flush=True)
    try:
        print(f"{n:,} chunks:", flush=True)
        result = run_repair(runner, n, file_entries, args.keep)
        report["results"].append(result)
        report["problems"] += check(result)
    except StepFailed as exc:
        report["problems"].append(str(exc))
    finally:
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    report["parent_max_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    report["ok"] = not report["problems"] and len(report["results"]) == 1
    print_table(report)
    floor = report["parent_max_rss_mib"]
    print(f"\nparent peak RSS (the floor under every figure): {floor:.0f} MiB")
    for problem in report["problems"]:
        print(f"PROBLEM: {problem}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
