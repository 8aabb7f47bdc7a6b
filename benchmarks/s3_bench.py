"""Backup, restore and replication into S3 (moto on loopback) against a local repository.

One run, one generated volume image (the realistic mix of mover.tools.sampledata, seed 11, as in
benchmarks.backup_bench) and its "day 2" copy (~2% rewritten in scattered 64 KiB regions, in
place). The real CLI runs as child processes, measured with os.wait4 (wall, user+sys CPU, peak
RSS), against a moto S3 server started here on 127.0.0.1 (a free port), with fake credentials
and `--s3-endpoint`:

1. local: init, backup day 1, restore it (compared bit for bit with the image);
2. S3 (`s3://BUCKET/repo` on moto): the same; S3/local ratios of every figure;
3. replication: `replicate --init-target` of the local repository (day 1) to a second bucket,
   backup day 2 locally, replicate again; the second replicate's `bytes_sent` (every byte it
   wrote) and the growth of the target bucket (boto3 listing) against the new bytes the day-2
   backup stored (`stats.stored_bytes`; goal: sent <= 1.05x); then day 2 restored from the
   replica (with the replica's own password) and compared bit for bit with the day-2 image.

moto is a Python S3 implementation (a werkzeug threaded HTTP server in one Python process; it
keeps objects in that process's memory, spooling those over ~5 MiB to temporary files). Here it
runs on the same machine, over loopback: S3 figures measure mover's S3 client path (HTTP,
signing, MD5s, multipart) plus moto's own cost, which competes with mover for the same CPUs;
not a network, and not a real store's latency or bandwidth. moto's CPU seconds during each
step are reported next to mover's.

"Stored" is the bytes the repository grew by: files under a local repository's directory, the
sizes listed under an S3 repository's prefix. Buckets are created and listed (boto3) and
images made and compared in a spawned helper process, so this process (the parent of every
measured child; Linux carries a parent's peak RSS into its children's ru_maxrss) stays small;
its own peak is printed: the floor under every RSS figure.

    python -m benchmarks.s3_bench [--size 512MiB] [--json out.json] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchmarks.backup_bench import REGION, first_difference, make_day2, write_image
from benchmarks.child import run_child, tree_bytes
from mover.cli.sizes import parse_size

PASSWORD = "s3-bench"
REPLICA_PASSWORD = "s3-bench-replica"
KDF = ["--kdf-memory", "8MiB"]  # as backup_bench: key derivation is not what is measured
ACCESS_KEY = "s3-bench-access-key"
SECRET_KEY = "s3-bench-secret-key"
AWS_REGION = "us-east-1"
BACKUP_BUCKET = "bench-backup"
REPLICA_BUCKET = "bench-replica"
PREFIX = "repo"
GOAL = 1.05  # replication: bytes sent <= GOAL x new bytes stored by the backup
MOTO_NOTE = (
    "moto is a Python S3 server (werkzeug, threaded, one process) on 127.0.0.1 of this machine: "
    "S3 figures are mover's S3 client path plus moto's own cost on the same CPUs, over "
    "loopback; no network latency or bandwidth limit is involved."
)

_MOTO_CHILD = """
import logging
import sys
logging.getLogger("werkzeug").setLevel(logging.ERROR)
from moto.moto_server.threaded_moto_server import ThreadedMotoServer
server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
server.start()
print(server.get_host_and_port()[1], flush=True)
sys.stdin.read()  # until the parent closes our stdin (or dies)
server.stop()
"""


class Moto:
    """moto's S3 server in a child process (as tests/s3/server.py starts it), stopped when its
    stdin closes; its CPU time and memory read from /proc."""

    def __init__(self, tmp: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env["TMPDIR"] = str(tmp)  # where moto spools large objects
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _MOTO_CHILD],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.strip().isdigit():
            self.stop()
            raise RuntimeError(f"moto server did not start (said {line!r})")
        self.endpoint = f"http://127.0.0.1:{int(line)}"

    def cpu_s(self) -> float:
        """User + system CPU seconds of the server so far (all its threads)."""
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def memory_mib(self) -> dict[str, float]:
        """Current (VmRSS) and peak (VmHWM) resident memory of the server, MiB."""
        values: dict[str, float] = {}
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    values[key] = int(rest.split()[0]) / 1024
        return values

    def stop(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def child_env(endpoint: str, password: str) -> dict[str, str]:
    """The environment of every mover child: fake credentials and nothing AWS or mover of this
    machine (no profile, no instance metadata). The endpoint is also given as --s3-endpoint."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MOVER_REPOSITORY"))}
    env.update(
        {
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_REGION": AWS_REGION,
            "AWS_DEFAULT_REGION": AWS_REGION,
            "AWS_ENDPOINT_URL_S3": endpoint,
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "MOVER_PASSWORD": password,
        }
    )
    return env


# --- run in the helper process (boto3 and the images stay out of this one) ---


def _s3(endpoint: str) -> Any:
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=AWS_REGION,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
    )


def make_buckets(endpoint: str, names: list[str]) -> None:
    client = _s3(endpoint)
    for name in names:
        client.create_bucket(Bucket=name)


def bucket_bytes(endpoint: str, bucket: str, prefix: str) -> tuple[int, int]:
    """(bytes, objects) listed under the prefix."""
    paginator = _s3(endpoint).get_paginator("list_objects_v2")
    sizes = [
        int(obj["Size"])
        for page in paginator.paginate(Bucket=bucket, Prefix=f"{prefix}/")
        for obj in page.get("Contents", [])
    ]
    return sum(sizes), len(sizes)


def prepare(image: Path, day2: Path, size: int) -> tuple[int, int, float]:
    """Both images; (regions rewritten, bytes that differ, seconds)."""
    started = time.perf_counter()
    write_image(image, size)
    regions, changed = make_day2(image, day2, size)
    return regions, changed, time.perf_counter() - started


# --- measuring ---


@dataclass
class Step:
    name: str
    repo: str  # "local", "s3", "local -> s3"
    source_bytes: int
    wall_s: float
    user_s: float
    sys_s: float
    max_rss_mib: float
    moto_cpu_s: float
    stored_added: int
    output: Any  # the command's --json output

    @property
    def cpu_s(self) -> float:
        return self.user_s + self.sys_s

    @property
    def mb_per_s(self) -> float | None:
        return self.source_bytes / self.wall_s / 1e6 if self.source_bytes else None

    def row(self) -> dict[str, Any]:
        return {**asdict(self), "cpu_s": self.cpu_s, "mb_per_s": self.mb_per_s}


class Bench:
    def __init__(self, work: Path, helper: ProcessPoolExecutor, moto: Moto) -> None:
        self.work = work
        self.logs = work / "logs"
        self.logs.mkdir()
        self.helper = helper
        self.moto = moto
        self.steps: list[Step] = []

    def stored(self, repo: str) -> int:
        if repo.startswith("s3://"):
            bucket, prefix = repo[len("s3://") :].split("/", 1)
            return self.helper.submit(bucket_bytes, self.moto.endpoint, bucket, prefix).result()[0]
        return tree_bytes(Path(repo)) if Path(repo).exists() else 0

    def run(
        self,
        name: str,
        kind: str,
        args: list[str],
        stored_in: str,
        source_bytes: int = 0,
        password: str = PASSWORD,
        extra_env: dict[str, str] | None = None,
    ) -> Step:
        env = {**child_env(self.moto.endpoint, password), **(extra_env or {})}
        before = self.stored(stored_in)
        slug = name.replace(" ", "_").replace("/", "_")
        out_path, err_path = self.logs / f"{slug}.out", self.logs / f"{slug}.err"
        command = [sys.executable, "-m", "mover", *args, "--json"]
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            moto_before = self.moto.cpu_s()
            child = run_child(command, out, err, env)
            moto_cpu = self.moto.cpu_s() - moto_before
        if child.returncode != 0:
            sys.exit(
                f"step {name!r} failed: `mover {' '.join(args)}` exited {child.returncode}\n"
                f"{err_path.read_text(errors='replace')}"
            )
        text = out_path.read_text()
        step = Step(
            name=name,
            repo=kind,
            source_bytes=source_bytes,
            wall_s=child.wall_s,
            user_s=child.user_s,
            sys_s=child.sys_s,
            max_rss_mib=child.max_rss_kib / 1024,
            moto_cpu_s=moto_cpu,
            stored_added=self.stored(stored_in) - before,
            output=json.loads(text) if text.strip() else None,
        )
        self.steps.append(step)
        print(f"{kind}: {name}: {child.wall_s:.1f} s", flush=True)
        return step

    def verify(self, restored: Path, original: Path, what: str) -> None:
        diff = self.helper.submit(first_difference, original, restored).result()
        if diff is not None:
            sys.exit(f"RESTORE MISMATCH ({what}): {restored} differs from {original} at {diff}")
        print(f"{what}: restored bit-exact", flush=True)
        restored.unlink()


def snapshot_id(step: Step) -> str:
    assert isinstance(step.output, dict), step.output
    return str(step.output["id"])


def source_state() -> dict[str, Any]:
    """The commit measured, and which files under mover/ and ext/ differ from it (uncommitted
    edits are measured too)."""
    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
        return done.stdout if done.returncode == 0 else ""

    dirty = git("status", "--porcelain", "--", "mover", "ext")
    return {
        "commit": git("rev-parse", "--short", "HEAD").strip() or None,
        "uncommitted": [line[3:] for line in dirty.splitlines()],
    }


def run(size: int, work: Path) -> dict[str, Any]:
    image, day2, restored = work / "day1.img", work / "day2.img", work / "restored.img"
    local = str(work / "local")
    s3_repo = f"s3://{BACKUP_BUCKET}/{PREFIX}"
    replica = f"s3://{REPLICA_BUCKET}/{PREFIX}"
    (work / "moto-tmp").mkdir()
    started = time.perf_counter()
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=spawn) as helper:
        regions, changed, generate_s = helper.submit(prepare, image, day2, size).result()
        print(
            f"images: {size / 2**20:,.0f} MiB and day 2 ({regions} regions of 64 KiB rewritten, "
            f"{changed / 2**20:.2f} MiB of bytes differ) in {generate_s:.1f} s",
            flush=True,
        )
        moto = Moto(work / "moto-tmp")
        try:
            helper.submit(make_buckets, moto.endpoint, [BACKUP_BUCKET, REPLICA_BUCKET]).result()
            print(f"moto S3 server at {moto.endpoint}", flush=True)
            b = Bench(work, helper, moto)
            endpoint = ["--s3-endpoint", moto.endpoint]

            # 1 and 2: first backup and its restore, local and S3.
            for kind, repo, extra in (("local", local, []), ("s3", s3_repo, endpoint)):
                where = ["--repo", repo, *extra]
                b.run("init", kind, ["init", *where, *KDF], repo)
                first = b.run("backup day 1", kind, ["backup", *where, str(image)], repo, size)
                restore = ["restore", *where, snapshot_id(first), str(restored)]
                b.run("restore day 1", kind, restore, repo, size)
                b.verify(restored, image, f"{kind} day 1")

            # 3: replication of day 1, then of the incremental day 2.
            target = ["--to", replica, "--target-s3-endpoint", moto.endpoint]
            replica_env = {"MOVER_TARGET_PASSWORD": REPLICA_PASSWORD}
            rep = ["replicate", "--repo", local, *target]
            kind = "local -> s3"
            initial = [*rep, "--init-target", *KDF]
            b.run("replicate day 1", kind, initial, replica, size, extra_env=replica_env)
            backup2 = ["backup", "--repo", local, str(day2)]
            second = b.run("backup day 2", "local", backup2, local, size)
            incremental = b.run("replicate day 2", kind, rep, replica, size, extra_env=replica_env)
            restore = ["restore", "--repo", replica, *endpoint, snapshot_id(second), str(restored)]
            name = "restore day 2 from replica"
            b.run(name, "s3", restore, replica, size, password=REPLICA_PASSWORD)
            b.verify(restored, day2, "replica day 2")
            replica_bytes, replica_objects = helper.submit(
                bucket_bytes, moto.endpoint, REPLICA_BUCKET, PREFIX
            ).result()
            moto_memory = moto.memory_mib()
        finally:
            moto.stop()
    return {
        "size": size,
        "cpus": os.cpu_count(),
        **source_state(),
        "regions_rewritten": regions,
        "bytes_differing": changed,
        "generate_s": generate_s,
        "total_s": time.perf_counter() - started,
        "moto_rss_mib": moto_memory.get("VmRSS"),
        "moto_peak_rss_mib": moto_memory.get("VmHWM"),
        "replica_bytes": replica_bytes,
        "replica_objects": replica_objects,
        "parent_max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "note": MOTO_NOTE,
        "steps": b.steps,
        "replication": replication_summary(second, incremental),
    }


def replication_summary(backup: Step, replicate: Step) -> dict[str, Any]:
    assert isinstance(backup.output, dict) and isinstance(replicate.output, dict)
    stored = int(backup.output["stats"]["stored_bytes"])
    sent = int(replicate.output["bytes_sent"])
    blob_sent = int(replicate.output["blob_bytes_sent"])
    growth = replicate.stored_added
    return {
        "new_stored_bytes": stored,  # sealed new chunk bytes of the day-2 backup
        "local_repo_growth": backup.stored_added,  # the day-2 backup: packs, index, snapshot
        "bytes_sent": sent,
        "blob_bytes_sent": blob_sent,
        "target_growth": growth,
        "chunks_sent": replicate.output["chunks_sent"],
        "chunks_skipped": replicate.output["chunks_skipped"],
        "packs_written": replicate.output["packs_written"],
        "sent_ratio": sent / stored,
        "growth_ratio": growth / stored,
        "blob_ratio": blob_sent / stored,
        "goal": GOAL,
        "goal_met": sent <= GOAL * stored and growth <= GOAL * stored,
    }


# --- reporting ---


def mib(n: float) -> str:
    return f"{n / 2**20:,.1f}"


def print_rows(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print(
            "  ".join(
                c.ljust(w) if i < 2 else c.rjust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )


def find(steps: list[Step], name: str, repo: str) -> Step:
    return next(s for s in steps if s.name == name and s.repo == repo)


def report(result: dict[str, Any]) -> None:
    steps: list[Step] = result["steps"]
    print(
        f"\n{result['size'] / 2**20:,.0f} MiB image, {result['cpus']} CPUs; "
        f"MB/s = source bytes / wall (MB = 10^6); stored + = bytes the repository grew by"
    )
    print(MOTO_NOTE)
    dirty = ", ".join(result["uncommitted"]) or "none"
    print(f"mover at commit {result['commit']}; uncommitted edits under mover/ and ext/: {dirty}")
    header = ["step", "repo", "wall s", "MB/s", "CPU s", "(sys)", "peak RSS MiB"]
    header += ["moto CPU s", "stored + MiB"]
    print_rows(
        header,
        [
            [
                s.name,
                s.repo,
                f"{s.wall_s:.2f}",
                f"{s.mb_per_s:,.0f}" if s.mb_per_s else "-",
                f"{s.cpu_s:.2f}",
                f"{s.sys_s:.2f}",
                f"{s.max_rss_mib:,.0f}",
                f"{s.moto_cpu_s:.2f}",
                mib(s.stored_added),
            ]
            for s in steps
        ],
    )
    print("\nS3 / local (same image, first backup into an empty repository, its restore):")
    rows = []
    for name in ("backup day 1", "restore day 1"):
        s3, loc = find(steps, name, "s3"), find(steps, name, "local")
        rows.append(
            [
                name,
                "s3/local",
                f"{s3.wall_s / loc.wall_s:.2f}x",
                f"{loc.wall_s / s3.wall_s:.2f}x",
                f"{s3.cpu_s / loc.cpu_s:.2f}x",
                f"{s3.max_rss_mib / loc.max_rss_mib:.2f}x",
                f"{s3.stored_added / loc.stored_added:.3f}x" if loc.stored_added else "-",
            ]
        )
    print_rows(["step", "", "wall", "MB/s", "CPU", "peak RSS", "stored"], rows)
    r = result["replication"]
    print(
        f"\nreplication of day 2 (incremental): the day-2 backup stored "
        f"{mib(r['new_stored_bytes'])} MiB of new sealed chunks (local repository grew "
        f"{mib(r['local_repo_growth'])} MiB); the second replicate sent {mib(r['bytes_sent'])} "
        f"MiB (bytes_sent; {mib(r['blob_bytes_sent'])} MiB of blobs, {r['chunks_sent']} chunks "
        f"sent, {r['chunks_skipped']} skipped, {r['packs_written']} packs) and the target bucket "
        f"grew {mib(r['target_growth'])} MiB"
    )
    print(
        f"sent / new stored = {r['sent_ratio']:.4f}, bucket growth / new stored = "
        f"{r['growth_ratio']:.4f} (goal <= {GOAL}: {'met' if r['goal_met'] else 'NOT MET'})"
    )
    print(
        f"replica: {mib(result['replica_bytes'])} MiB in {result['replica_objects']} objects; "
        f"moto RSS {result['moto_rss_mib']:,.0f} MiB (peak {result['moto_peak_rss_mib']:,.0f}); "
        f"total {result['total_s']:.0f} s (images {result['generate_s']:.0f} s); peak RSS floor "
        f"(this process) {result['parent_max_rss_mib']:.0f} MiB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="512MiB", help="image size (default 512MiB)")
    parser.add_argument("--json", dest="json_path", help="also write the results as JSON here")
    parser.add_argument("--workdir", help="where images and the repository go (default: /tmp)")
    args = parser.parse_args()
    size = parse_size(args.size, "--size", minimum=REGION)
    work = Path(tempfile.mkdtemp(prefix="s3_bench-", dir=args.workdir))
    try:
        result = run(size, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report(result)
    if args.json_path:
        body = {**result, "steps": [s.row() for s in result["steps"]]}
        with open(args.json_path, "w") as out:
            json.dump(body, out, indent=2)


if __name__ == "__main__":
    main()
