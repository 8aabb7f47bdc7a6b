"""The dedup index and prune at scale: peak RSS and time of loading the index, looking chunks
up, backing up a large sparse volume and pruning, in repositories of 1 to 20 million chunks.

For each chunk count N, a repository is generated (a child process; nothing here reads or
writes real data for the N chunks):

- a local repository, Argon2id cost lowered to 8 MiB / 1 iteration / 1 lane (opening it costs
  milliseconds; nothing measured depends on it), default chunker, 16 MiB packs, zstd 3;
- N chunk ids (random 32 bytes from the seed) in fake packs of PACK_ENTRIES chunks each (a
  16 MiB pack of ~256 KiB chunks), written straight into index files of FILE_ENTRIES entries
  (what a backup flushes at a time) with mover.content.index.encode. The packs' objects do not
  exist: only their index entries do;
- every even-numbered pack is referenced by one snapshot, whose chunk tree is built with
  mover.objects.tree.TreeBuilder and stored as real tree blobs in real packs (indexed too), then
  Repository.write_snapshot. So half the chunks are live, and every fake pack is either fully
  referenced (prune keeps it whole) or fully unreferenced (prune condemns it, drops its index
  entries and, as the pack object is missing, has nothing to delete or read: phase 2 reads a
  condemned pack's header only when a snapshot written since the condemnation exists).

Then, each in a child process measured with os.wait4 (peak RSS, wall, user+sys CPU):

    load index   Repository.open + repo.index (every index file read, one sorted run built)
    lookup       `id in repo.index` for ids that are present and ids that are absent (chunks/s;
                 its RSS and time include loading the index)
    backup       `mover backup` (the CLI) of a --volume sparse file: truncate, then --data bytes
                 of random data at 8 evenly spread offsets (new chunks), holes elsewhere
    prune        `mover prune` (the CLI): condemns the unreferenced half, rewrites the index
    verify       loads the index again and checks what prune left: every sampled id of a
                 referenced pack present, none of an unreferenced one

The parent only orchestrates and stays small (Linux carries a parent's peak RSS into its
children's ru_maxrss at fork). Index runs go to <workdir>/tmp (MOVER_TMPDIR). The workdir is
removed at the end unless --keep.

    python -m benchmarks.index_scale [--chunks 1M,5M,20M] [--volume 10TiB] [--data 256MiB]
        [--quick] [--json FILE] [--workdir DIR] [--keep] [--seed S]
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
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import blake3

from benchmarks.child import run_child, tree_bytes
from mover.cli.sizes import parse_size

PASSWORD = "index-scale-bench"
FILE_ENTRIES = 65536  # entries per generated index file: what a backup flushes at a time
PACK_ENTRIES = 64  # chunks per fake pack: a 16 MiB pack of ~256 KiB chunks
CHUNK_LENGTH = 256 << 10  # plaintext length of each generated chunk, in the snapshot's tree
SEALED_LENGTH = CHUNK_LENGTH + 45  # its stored length, in the index
PIECES = 8  # places the volume's random data is written at
SAMPLE_FILES = 8  # index files whose ids the lookup and verify steps regenerate
MiB = 1 << 20
# Disk per chunk: index files (~45 B) + the loaded index's run (48 B) + its bucket files while
# it is built (48 B) + a second load during prune's rewrite + tree blobs (~20 B).
DISK_PER_CHUNK = 45 + 3 * 48 + 20
# Tree nodes a backup of the sparse volume may add (its holes merge into few leaves).
BACKUP_NODES_MAX = 1024
STEPS = ("generate", "load index", "lookup", "backup", "prune", "verify")
GOAL_MIB = 1024


# -- what generation makes, shared by the children ------------------------------------------


def pack_id_of(seed: str, number: int) -> bytes:
    return blake3.blake3(f"index-scale {seed} pack {number}".encode()).digest()


def file_count(n: int) -> int:
    return -(-n // FILE_ENTRIES)


def file_ids(seed: str, n: int, file_no: int) -> list[bytes]:
    """The chunk ids of generated index file `file_no`, chunks file_no * FILE_ENTRIES on."""
    count = min(FILE_ENTRIES, n - file_no * FILE_ENTRIES)
    raw = random.Random(f"index-scale {seed} ids {file_no}").randbytes(32 * count)
    return [raw[32 * i : 32 * (i + 1)] for i in range(count)]


def is_referenced(chunk_no: int) -> bool:
    """Chunks of even-numbered packs are in the snapshot; odd-numbered packs are garbage."""
    return (chunk_no // PACK_ENTRIES) % 2 == 0


def sample_files(n: int) -> list[int]:
    files = file_count(n)
    return sorted({files * i // SAMPLE_FILES for i in range(SAMPLE_FILES)})


def referenced_count(n: int) -> int:
    full, rest = divmod(n, 2 * PACK_ENTRIES)
    return full * PACK_ENTRIES + min(rest, PACK_ENTRIES)


# -- children -------------------------------------------------------------------------------


def _open(repo_dir: Path) -> Any:
    from mover.objects.repository import Repository
    from mover.storage.local import LocalBackend

    return Repository.open(LocalBackend(repo_dir), PASSWORD.encode())


def child_generate(repo_dir: Path, n: int, seed: str) -> dict[str, Any]:
    from mover.chunking import DEFAULT_PARAMS, ChunkerParams
    from mover.content import blob
    from mover.content import index as index_file
    from mover.content.pack import KIND_DATA, KIND_TREE, PackBuilder, PackEntry
    from mover.crypto import KdfParams
    from mover.objects.repository import RepoConfig, Repository
    from mover.objects.snapshot import Snapshot
    from mover.objects.tree import TreeBuilder
    from mover.storage.local import LocalBackend

    started = time.monotonic()
    rng = random.Random(f"index-scale {seed} repository")
    params = ChunkerParams(
        DEFAULT_PARAMS.min_size, DEFAULT_PARAMS.avg_size, DEFAULT_PARAMS.max_size, rng.randbytes(32)
    )
    repo = Repository.init(
        LocalBackend(repo_dir), PASSWORD.encode(), RepoConfig(params), KdfParams(8 * 1024, 1, 1)
    )
    sealer, level = repo.sealer, repo.config.zstd_level

    tree_entries: list[tuple[bytes, PackEntry]] = []
    stored_nodes: set[bytes] = set()
    builder = PackBuilder()
    tree_packs = 0

    def flush_tree_pack() -> None:
        nonlocal builder, tree_packs
        if builder.entries:
            pack_id, data = builder.finish(sealer)
            repo.write_pack(pack_id, data)
            tree_entries.extend((pack_id, e) for e in builder.entries)
            tree_packs += 1
            builder = PackBuilder()

    def store(node: bytes) -> bytes:
        node_id: bytes = repo.master.chunk_id_of(node)
        if node_id not in stored_nodes:
            stored_nodes.add(node_id)
            builder.add(node_id, blob.encode(sealer, node_id, node, level), KIND_TREE)
            if len(builder) >= repo.config.pack_size:
                flush_tree_pack()
        return node_id

    tree = TreeBuilder(store)
    index_bytes = 0

    def entries(file_no: int, ids: list[bytes]) -> Iterator[tuple[bytes, PackEntry]]:
        first = file_no * FILE_ENTRIES
        for i, chunk_id in enumerate(ids):
            chunk_no = first + i
            slot = chunk_no % PACK_ENTRIES
            if is_referenced(chunk_no):
                tree.add(CHUNK_LENGTH, chunk_id)
            yield (
                pack_id_of(seed, chunk_no // PACK_ENTRIES),
                PackEntry(chunk_id, slot * SEALED_LENGTH, SEALED_LENGTH, KIND_DATA),
            )

    for file_no in range(file_count(n)):
        sealed = index_file.encode(sealer, entries(file_no, file_ids(seed, n, file_no)))
        repo.backend.write(f"index/{blake3.blake3(sealed).hexdigest()}", sealed)
        index_bytes += len(sealed)
    root = tree.finish()
    flush_tree_pack()
    # The tree's index file after its packs, the snapshot after its index: as a backup writes.
    sealed = index_file.encode(sealer, tree_entries)
    repo.backend.write(f"index/{blake3.blake3(sealed).hexdigest()}", sealed)
    snapshot = Snapshot(
        time=datetime.now(UTC).isoformat(timespec="microseconds"),
        hostname="index-scale-bench",
        source="generated",
        size=tree.size,
        tree=root.hex(),
    )
    repo.write_snapshot(snapshot)
    referenced = referenced_count(n)
    return {
        "chunks": n,
        "index_files": file_count(n) + 1,
        "index_bytes": index_bytes + len(sealed),
        "fake_packs": -(-n // PACK_ENTRIES),
        "referenced_chunks": referenced,
        "unreferenced_chunks": n - referenced,
        "tree_nodes": len(stored_nodes),
        "tree_packs": tree_packs,
        "snapshot_bytes": tree.size,
        "seconds": time.monotonic() - started,
    }


def child_load(repo_dir: Path) -> dict[str, Any]:
    started = time.monotonic()
    repo = _open(repo_dir)
    index = repo.index
    return {
        "index_chunks": len(index),
        "index_files": len(index.files),
        "packs": len(index.pack_ids()),
        "seconds": time.monotonic() - started,
    }


def _sampled(seed: str, n: int) -> Iterator[tuple[list[bytes], list[bytes]]]:
    """(referenced, unreferenced) ids of each sampled index file, one file at a time (the
    step's memory stays its own, not the sample's)."""
    for file_no in sample_files(n):
        live: list[bytes] = []
        dead: list[bytes] = []
        for i, chunk_id in enumerate(file_ids(seed, n, file_no)):
            (live if is_referenced(file_no * FILE_ENTRIES + i) else dead).append(chunk_id)
        yield live, dead


def child_lookup(repo_dir: Path, n: int, seed: str) -> dict[str, Any]:
    started = time.monotonic()
    repo = _open(repo_dir)
    index = repo.index
    load_s = time.monotonic() - started
    rng = random.Random(f"index-scale {seed} lookups")
    figures = {"present": [0.0, 0.0, 0.0], "absent": [0.0, 0.0, 0.0]}  # lookups, found, seconds
    for live, dead in _sampled(seed, n):
        present = live + dead
        rng.shuffle(present)
        absent = [rng.randbytes(32) for _ in present]
        for name, ids in (("present", present), ("absent", absent)):
            t0 = time.perf_counter()
            found = sum(1 for chunk_id in ids if chunk_id in index)
            figure = figures[name]
            figure[0] += len(ids)
            figure[1] += found
            figure[2] += time.perf_counter() - t0
    result: dict[str, Any] = {"load_s": load_s, "lookups": int(figures["present"][0])}
    for name, (lookups, hits, seconds) in figures.items():
        result[f"{name}_found"] = int(hits)
        result[f"{name}_per_s"] = lookups / seconds
    return result


def child_verify(repo_dir: Path, n: int, seed: str) -> dict[str, Any]:
    repo = _open(repo_dir)
    index = repo.index
    result = {
        "index_chunks": len(index),
        "index_files": len(index.files),
        "packs_indexed": len(index.pack_ids()),
        "pack_objects": sum(1 for _ in repo.backend.list("data/")),
        "snapshots": len(repo.snapshots()),
        "sampled_referenced": 0,
        "referenced_found": 0,
        "sampled_unreferenced": 0,
        "unreferenced_found": 0,
    }
    for live, dead in _sampled(seed, n):
        result["sampled_referenced"] += len(live)
        result["referenced_found"] += sum(1 for chunk_id in live if chunk_id in index)
        result["sampled_unreferenced"] += len(dead)
        result["unreferenced_found"] += sum(1 for chunk_id in dead if chunk_id in index)
    return result


def child_volume(path: Path, size: int, data: int, seed: str) -> dict[str, Any]:
    rng = random.Random(f"index-scale {seed} volume")
    piece = data // PIECES
    with open(path, "wb") as f:
        f.truncate(size)
        for i in range(PIECES):
            f.seek(i * (size // PIECES) + size // (2 * PIECES))
            f.write(rng.randbytes(piece))
        f.flush()
        os.fsync(f.fileno())
    return {"size": size, "data": piece * PIECES, "allocated": os.stat(path).st_blocks * 512}


def child_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="benchmarks.index_scale child")
    parser.add_argument("action", choices=("generate", "load", "lookup", "verify", "volume"))
    parser.add_argument("--path", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--chunks", type=int, default=0)
    parser.add_argument("--seed", default="0")
    parser.add_argument("--size", type=int, default=0)
    parser.add_argument("--data", type=int, default=0)
    args = parser.parse_args(argv)
    result: dict[str, Any]
    if args.action == "generate":
        result = child_generate(args.path, args.chunks, args.seed)
    elif args.action == "load":
        result = child_load(args.path)
    elif args.action == "lookup":
        result = child_lookup(args.path, args.chunks, args.seed)
    elif args.action == "verify":
        result = child_verify(args.path, args.chunks, args.seed)
    else:
        result = child_volume(args.path, args.size, args.data, args.seed)
    args.out.write_text(json.dumps(result))


# -- the parent -----------------------------------------------------------------------------


@dataclass
class Step:
    name: str
    wall_s: float
    user_s: float
    sys_s: float
    max_rss_mib: float
    output: dict[str, Any]

    @property
    def cpu_s(self) -> float:
        return self.user_s + self.sys_s


class StepFailed(RuntimeError):
    pass


class Runner:
    def __init__(self, workdir: Path, seed: str) -> None:
        self.workdir = workdir
        self.seed = seed
        self.volume = workdir / "volume.img"
        self.tmp = workdir / "tmp"
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("MOVER_")}
        self.env["MOVER_PASSWORD"] = PASSWORD
        self.env["MOVER_TMPDIR"] = str(self.tmp)

    def run(self, name: str, argv: list[str], json_stdout: bool) -> Step:
        """Runs argv as a child; its result is the JSON it prints (json_stdout) or writes to
        the file after --out."""
        log = self.workdir / "child.log"
        out = self.workdir / "child.out"
        with open(out, "w") as stdout, open(log, "w") as stderr:
            run = run_child(argv, stdout, stderr, env=self.env)
        if run.returncode != 0:
            raise StepFailed(f"{name} failed ({run.returncode}): {log.read_text()[-3000:]}")
        result_file = out if json_stdout else Path(argv[argv.index("--out") + 1])
        output = json.loads(result_file.read_text())
        return Step(name, run.wall_s, run.user_s, run.sys_s, run.max_rss_kib / 1024, output)

    def child(self, name: str, action: str, path: Path, **options: int | str) -> Step:
        argv = [sys.executable, "-m", "benchmarks.index_scale", "child", action]
        argv += ["--path", str(path), "--out", str(self.workdir / "result.json")]
        argv += ["--seed", self.seed]
        for key, value in options.items():
            argv += [f"--{key}", str(value)]
        return self.run(name, argv, json_stdout=False)

    def mover(self, name: str, *args: str) -> Step:
        return self.run(name, [sys.executable, "-m", "mover", *args, "--json"], json_stdout=True)


def parse_count(text: str) -> int:
    text = text.strip()
    scale = {"k": 10**3, "m": 10**6, "g": 10**9}.get(text[-1:].lower(), 1)
    digits = text[:-1] if scale > 1 else text
    try:
        value = float(digits) * scale
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a chunk count, e.g. 1M") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: a chunk count is at least 1")
    return int(value)


def run_size(runner: Runner, n: int) -> dict[str, Any]:
    repo = runner.workdir / f"repo-{n}"
    steps: list[Step] = []
    steps.append(runner.child("generate", "generate", repo, chunks=n))
    generated = steps[0].output
    print(
        f"  generated {n:,} chunks in {generated['index_files']} index files, "
        f"{generated['tree_nodes']} tree nodes in {generated['tree_packs']} packs "
        f"({steps[0].wall_s:.1f} s)",
        flush=True,
    )
    steps.append(runner.child("load index", "load", repo))
    steps.append(runner.child("lookup", "lookup", repo, chunks=n))
    repo_bytes = tree_bytes(repo)
    steps.append(runner.mover("backup", "backup", "--repo", str(repo), str(runner.volume)))
    steps.append(runner.mover("prune", "prune", "--repo", str(repo)))
    steps.append(runner.child("verify", "verify", repo, chunks=n))
    for step in steps[1:]:
        print(
            f"  {step.name:<11} {step.wall_s:8.1f} s wall {step.cpu_s:8.1f} s CPU "
            f"{step.max_rss_mib:8.1f} MiB peak RSS",
            flush=True,
        )
    result = {
        "chunks": n,
        "generated": generated,
        "repo_bytes_generated": repo_bytes,
        "repo_bytes_after_prune": tree_bytes(repo),
        "steps": [{**asdict(s), "cpu_s": s.cpu_s} for s in steps],
    }
    shutil.rmtree(repo)
    return result


def check(result: dict[str, Any]) -> list[str]:
    """What is wrong with one chunk count's figures (empty: all as expected)."""
    problems = []
    n = result["chunks"]
    gen = result["generated"]
    steps = {s["name"]: s for s in result["steps"]}
    where = f"{n:,} chunks"
    expected_loaded = n + gen["tree_nodes"]
    if steps["load index"]["output"]["index_chunks"] != expected_loaded:
        problems.append(f"{where}: the index held {steps['load index']['output']} chunks")
    lookup = steps["lookup"]["output"]
    if lookup["present_found"] != lookup["lookups"] or lookup["absent_found"] != 0:
        problems.append(f"{where}: lookups found the wrong ids: {lookup}")
    prune = steps["prune"]["output"]
    if prune["chunks_dropped"] != gen["unreferenced_chunks"]:
        problems.append(f"{where}: prune dropped {prune['chunks_dropped']} chunks")
    verify = steps["verify"]["output"]
    if verify["referenced_found"] != verify["sampled_referenced"] or verify["unreferenced_found"]:
        problems.append(f"{where}: the index after prune is wrong: {verify}")
    # Left: the referenced half, the generated tree, the backup's new chunks and tree nodes.
    kept = (
        gen["referenced_chunks"]
        + gen["tree_nodes"]
        + steps["backup"]["output"]["stats"]["new_chunks"]
    )
    if not kept <= verify["index_chunks"] <= kept + BACKUP_NODES_MAX:
        problems.append(f"{where}: {verify['index_chunks']} chunks left, expected {kept} and a few")
    return problems


def growth(results: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per step, largest N's figure / smallest N's."""
    if len(results) < 2:
        return {}
    first = {s["name"]: s for s in results[0]["steps"]}
    last = {s["name"]: s for s in results[-1]["steps"]}
    return {
        name: {
            "rss": last[name]["max_rss_mib"] / first[name]["max_rss_mib"],
            "wall": last[name]["wall_s"] / first[name]["wall_s"],
        }
        for name in STEPS
    }


def print_tables(report: dict[str, Any]) -> None:
    results = report["results"]
    print()
    print("| chunks | step | wall s | CPU s | peak RSS MiB | notes |")
    print("|---|---|---|---|---|---|")
    for result in results:
        for s in result["steps"]:
            print(
                f"| {result['chunks']:,} | {s['name']} | {s['wall_s']:.1f} | {s['cpu_s']:.1f} "
                f"| {s['max_rss_mib']:.0f} | {notes(s)} |"
            )
    table = report["growth"]
    if table:
        a, b = results[0]["chunks"], results[-1]["chunks"]
        print()
        print(f"Growth from {a:,} to {b:,} chunks ({b / a:.0f}x):")
        print()
        print("| step | peak RSS | wall |")
        print("|---|---|---|")
        for name, g in table.items():
            print(f"| {name} | {g['rss']:.2f}x | {g['wall']:.2f}x |")


def notes(step: dict[str, Any]) -> str:
    out = step["output"]
    if step["name"] == "generate":
        return f"{out['index_files']} index files, {out['tree_nodes']} tree nodes"
    if step["name"] == "load index":
        return f"{out['index_chunks']:,} chunks, {out['packs']:,} packs"
    if step["name"] == "lookup":
        return (
            f"{out['present_per_s']:,.0f} present/s, {out['absent_per_s']:,.0f} absent/s "
            f"({out['lookups']:,} each)"
        )
    if step["name"] == "backup":
        stats = out["stats"]
        return (
            f"{human(stats['bytes_read'])} read, {stats['new_chunks']:,} new chunks, "
            f"{stats['bytes_read'] / step['wall_s'] / 2**30:.1f} GiB/s"
        )
    if step["name"] == "prune":
        return f"{out['packs_condemned']:,} packs condemned, {out['chunks_dropped']:,} dropped"
    return f"{out['index_chunks']:,} chunks left, samples right: {not out['unreferenced_found']}"


def human(size: int) -> str:
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20)):
        if size >= scale:
            return f"{size / scale:g} {unit}"
    return f"{size} B"


def describe(volume: int, data: int, seed: str) -> str:
    return (
        f"Generated repositories (seed {seed!r}): local backend, Argon2id lowered to 8 MiB / 1 "
        f"iteration / 1 lane, default chunker, 16 MiB packs; N random 32-byte chunk ids in "
        f"index files of {FILE_ENTRIES} entries written with mover.content.index.encode, in "
        f"fake packs of {PACK_ENTRIES} chunks whose objects do not exist; the chunks of every "
        f"even-numbered pack (half) are referenced by one snapshot whose tree is stored as real "
        f"blobs in real packs, so prune condemns the odd-numbered packs whole. Backup source: a "
        f"{human(volume)} sparse file with {data // MiB} MiB of random data at "
        f"{PIECES} evenly spread offsets."
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["child"]:
        child_main(argv[1:])
        return 0
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.index_scale", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--chunks", default="1M,5M,20M", help="chunk counts, e.g. 1M,5M,20M")
    parser.add_argument("--volume", default="10TiB", help="size of the sparse backup source")
    parser.add_argument("--data", default="256MiB", help="random data written into it")
    parser.add_argument("--quick", action="store_true", help="20k chunks, a 1 GiB volume")
    parser.add_argument("--json", type=Path, help="write the report here too")
    parser.add_argument("--workdir", type=Path, help="where repositories go (default: /tmp)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--seed", default="1")
    args = parser.parse_args(argv)
    if args.quick:
        args.chunks, args.volume, args.data = "20k", "1GiB", "32MiB"
    try:
        counts = sorted({parse_count(c) for c in args.chunks.split(",") if c.strip()})
    except argparse.ArgumentTypeError as exc:
        parser.error(str(exc))
    volume = parse_size(args.volume, "--volume")
    data = parse_size(args.data, "--data")
    if not counts or data > volume or data < PIECES * MiB:
        parser.error("need chunk counts, and --data of at least 8 MiB and at most --volume")

    workdir = Path(tempfile.mkdtemp(prefix="mover-index-scale-", dir=args.workdir))
    needed = DISK_PER_CHUNK * max(counts) + 2 * data
    free = shutil.disk_usage(workdir).free
    if free < needed * 3 // 2:
        shutil.rmtree(workdir)
        print(f"needs ~{needed / 2**30:.1f} GiB free in {workdir.parent}, has {free / 2**30:.1f}")
        return 1
    runner = Runner(workdir, args.seed)
    report: dict[str, Any] = {
        "command": " ".join(["python -m benchmarks.index_scale", *argv]),
        "machine": {
            "host": socket.gethostname(),
            "cpus": os.cpu_count(),
            "cpu": platform.processor() or platform.machine(),
            "python": platform.python_version(),
        },
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "generation": describe(volume, data, args.seed),
        "volume_bytes": volume,
        "data_bytes": data,
        "results": [],
        "problems": [],
    }
    print(report["generation"], flush=True)
    try:
        made = runner.child("volume", "volume", runner.volume, size=volume, data=data).output
        print(f"volume: {made}", flush=True)
        for n in counts:
            print(f"{n:,} chunks:", flush=True)
            result = run_size(runner, n)
            report["results"].append(result)
            report["problems"] += check(result)
    except StepFailed as exc:
        report["problems"].append(str(exc))
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    report["growth"] = growth(report["results"])
    report["parent_max_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    report["ok"] = not report["problems"] and len(report["results"]) == len(counts)
    print_tables(report)
    floor = report["parent_max_rss_mib"]
    print(f"\nparent peak RSS (the floor under every figure): {floor:.0f} MiB")
    for problem in report["problems"]:
        print(f"PROBLEM: {problem}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
