"""The tools compared (mover, restic, borg in two configurations), how each one is driven, and
installing what is missing from Debian packages."""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

from benchmarks.peers.measure import Command, Step

PASSWORD = "peers-bench"
SBIN = ("/usr/sbin", "/sbin")

# program -> the Debian package that has it
PACKAGES = {
    "restic": "restic",
    "borg": "borgbackup",
    "mke2fs": "e2fsprogs",
    "debugfs": "e2fsprogs",
    "e2fsck": "e2fsprogs",
    "pgbench": "postgresql",
    "initdb": "postgresql",
}
NEEDED_BY_DATASET = {"fs": ("mke2fs", "debugfs", "e2fsck"), "db": ("pgbench", "initdb")}


def which(program: str) -> str | None:
    """A program on PATH, in /usr/sbin or /sbin, or (PostgreSQL) in its versioned bin dir."""
    found = shutil.which(program) or shutil.which(program, path=os.pathsep.join(SBIN))
    if found:
        return found
    versions = sorted(
        glob.glob(f"/usr/lib/postgresql/*/bin/{program}"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    return versions[-1] if versions else None


def pg_bin(program: str) -> str:
    """A PostgreSQL server program, preferring the newest /usr/lib/postgresql/N/bin."""
    versions = sorted(
        glob.glob(f"/usr/lib/postgresql/*/bin/{program}"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    found = versions[-1] if versions else which(program)
    if found is None:
        raise SystemExit(f"{program} not found (Debian package postgresql)")
    return found


def ensure_installed(datasets: list[str]) -> list[str]:
    """Install the Debian packages of missing programs (apt-get); the packages installed."""
    programs = ["restic", "borg"] + [p for d in datasets for p in NEEDED_BY_DATASET.get(d, ())]
    programs += ["tar", "cmp", "sync"]
    missing = [p for p in programs if which(p) is None]
    packages = sorted({PACKAGES[p] for p in missing if p in PACKAGES})
    unknown = [p for p in missing if p not in PACKAGES]
    if unknown:
        raise SystemExit(f"missing programs: {', '.join(unknown)} (install them and retry)")
    if not packages:
        return []
    if os.geteuid() != 0:
        raise SystemExit(
            f"missing: {', '.join(missing)}; as root this would run "
            f"`apt-get install -y {' '.join(packages)}`"
        )
    print(f"installing with apt-get: {' '.join(packages)} (for {', '.join(missing)})", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (
        ["apt-get", "update", "-q"],
        ["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages],
    ):
        proc = subprocess.run(argv, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(
                f"`{' '.join(argv)}` exited {proc.returncode}:\n{proc.stdout[-2000:]}"
                f"{proc.stderr[-2000:]}"
            )
    still = [p for p in programs if which(p) is None]
    if still:
        raise SystemExit(f"still missing after apt-get install: {', '.join(still)}")
    return packages


def _first_line(argv: list[str]) -> str:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    except OSError as exc:
        return f"unavailable ({exc})"
    lines = (proc.stdout or proc.stderr).strip().splitlines()
    return lines[0].strip() if lines else "?"


def _git(*args: str) -> str:
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True)
    return proc.stdout.rstrip() if proc.returncode == 0 else ""


def mover_source() -> str:
    """The commit mover runs from, and the files of mover/ and ext/ that differ from it."""
    commit = _git("rev-parse", "--short", "HEAD") or "?"
    changed = _git("status", "--porcelain", "--", "mover", "ext", "setup.py", "pyproject.toml")
    if not changed:
        return f"commit {commit}, mover/ and ext/ clean"
    files = [line[3:] for line in changed.splitlines()]
    more = f" and {len(files) - 4} more" if len(files) > 4 else ""
    return f"commit {commit} with uncommitted changes in {', '.join(files[:4])}{more}"


def mover_fingerprint() -> str:
    """Changes whenever mover's source does (commit, uncommitted diff, untracked files)."""
    paths = ("mover", "ext", "setup.py", "pyproject.toml")
    head = _git("rev-parse", "HEAD")
    return "\n".join((head, _git("diff", "HEAD", "--", *paths), _git("status", "-s", "--", *paths)))


def pin_mover(rev: str, dest: Path) -> str:
    """Run mover from `git archive REV mover` in `dest` rather than from the working tree.

    The native core cannot be rebuilt here without downloading build tools, so the working
    tree's compiled module is copied in, which is only right where ext/ and setup.py are the
    same at REV as in the working tree (checked)."""
    root = Path(__file__).resolve().parents[2]
    commit = _git("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
    if not commit:
        raise SystemExit(f"--mover-rev {rev}: not a commit of {root}")
    diff = ["git", "-C", str(root), "diff", "--quiet", commit, "--", "ext", "setup.py"]
    if subprocess.run(diff).returncode != 0:
        raise SystemExit(
            f"--mover-rev {rev}: ext/ or setup.py differ between {commit[:7]} and the working "
            "tree, whose build of the native core would not stand for it; check it out and "
            "`pip install -e .` instead"
        )
    dest.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "-C", str(root), "archive", commit, "mover"], capture_output=True, check=True
    )
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    for built in (root / "mover" / "_native").glob("*.so"):
        shutil.copy2(built, dest / "mover" / "_native" / built.name)
    # Byte-compiled as `pip install` does: an export has no .pyc files, and where
    # PYTHONDONTWRITEBYTECODE is set every mover command compiled its modules again (~30-40 ms a
    # command on the reference VM), a cost no installed mover has.
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(dest / "mover")], check=True)
    Mover.source_dir = dest
    probe = subprocess.run(
        [sys.executable, "-c", "import mover, mover._native.cdc as c; print(c.__file__)"],
        cwd=dest,
        capture_output=True,
        text=True,
    )
    if probe.returncode != 0 or not probe.stdout.strip().startswith(str(dest)):
        raise SystemExit(f"--mover-rev {rev}: mover does not import from {dest}: {probe.stderr}")
    return f"commit {commit[:7]}, pinned with --mover-rev (its mover/ exported; ext/ identical)"


def versions(datasets: list[str], mover: str | None = None) -> dict[str, str]:
    found = {
        "mover": f"{_first_line([sys.executable, '-m', 'mover', '--version'])} "
        f"({mover or mover_source()})",
        "restic": _first_line([which("restic") or "restic", "version"]),
        "borg": _first_line([which("borg") or "borg", "--version"]),
        "python": sys.version.split()[0],
    }
    if "fs" in datasets:
        found["e2fsprogs"] = _first_line([which("mke2fs") or "mke2fs", "-V"])
    if "db" in datasets:
        found["postgresql"] = _first_line([pg_bin("postgres"), "--version"])
        found["tar"] = _first_line(["tar", "--version"])
    return found


def _json_or_none(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


class Tool(ABC):
    """One tool in one configuration, on one repository; `home` holds its caches and config."""

    key: str
    label: str
    settings: str

    def __init__(self, repo: Path, home: Path) -> None:
        self.repo = repo
        self.home = home

    def env(self) -> dict[str, str]:
        return {**os.environ, "HOME": str(self.home), "XDG_CACHE_HOME": str(self.home / "cache")}

    def command(self, argv: list[str], **kwargs: Any) -> Command:
        return Command(argv, self.env(), **kwargs)

    @abstractmethod
    def init(self) -> list[Command]: ...

    @abstractmethod
    def backup(self, source: Path, name: str, label: str) -> list[Command]:
        """Back up the file `source` as `name`; `label` is unique per backup in this repo."""

    @abstractmethod
    def snapshot_ref(self, step: Step, label: str) -> str:
        """What restore() needs to find the snapshot that `step` (a backup) made."""

    @abstractmethod
    def restore(self, ref: str, name: str, target: Path) -> list[Command]:
        """Write the snapshot's content to the file `target` (which does not exist yet)."""

    def parse(self, text: str) -> Any:
        return _json_or_none(text)

    def sync(self, target: Path) -> Command:
        """fsync the restored file, as mover's restore does before it exits."""
        return self.command(["sync", str(target)])


class Mover(Tool):
    key = "mover"
    label = "mover"
    source_dir: Path | None = None  # set by pin_mover(): run mover from there
    settings = (
        "defaults: `mover init` (Argon2id 64 MiB, FastCDC 64 KiB / 256 KiB / 1 MiB, zstd auto 1-3, "
        "16 MiB packs, AES-256-GCM), `mover backup FILE`, `mover restore ID FILE` (fsyncs)"
    )

    def env(self) -> dict[str, str]:
        env = {**super().env(), "MOVER_PASSWORD": PASSWORD}
        if self.source_dir is not None:
            env["PYTHONPATH"] = str(self.source_dir)
        return env

    def command(self, argv: list[str], **kwargs: Any) -> Command:
        # `python -m` puts the working directory first on sys.path
        return super().command(argv, cwd=self.source_dir, **kwargs)

    def _mover(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "mover", *args, "--repo", str(self.repo), "--json"]

    def init(self) -> list[Command]:
        return [self.command(self._mover("init"))]

    def backup(self, source: Path, name: str, label: str) -> list[Command]:
        return [self.command(self._mover("backup", str(source)))]

    def backup_changed(
        self, repo: Path, source: Path, ranges: Path | None, parent: str | None
    ) -> list[Command]:
        """Back up `source` into `repo` reading only `ranges`, the rest from `parent` (both
        None: a plain backup)."""
        argv = [sys.executable, "-m", "mover", "backup", str(source), "--repo", str(repo)]
        if ranges is not None and parent is not None:
            argv += ["--changed-ranges", str(ranges), "--parent", parent]
        return [self.command([*argv, "--json"])]

    def snapshot_ref(self, step: Step, label: str) -> str:
        assert isinstance(step.output, dict), step.output
        return str(step.output["id"])

    def restore(self, ref: str, name: str, target: Path) -> list[Command]:
        return [self.command(self._mover("restore", ref, str(target)))]


class Restic(Tool):
    key = "restic"
    label = "restic"
    settings = (
        "`restic init` (default: repository version 2, scrypt key calibrated to ~0.5 s), "
        "`restic backup --stdin --stdin-filename NAME < FILE` (default compression auto = "
        "zstd fastest, default chunker 512 KiB / 1 MiB / 8 MiB and pack size), "
        "`restic dump ID /NAME > FILE` then `sync FILE`"
    )

    def env(self) -> dict[str, str]:
        return {
            **super().env(),
            "RESTIC_PASSWORD": PASSWORD,
            "RESTIC_REPOSITORY": str(self.repo),
            "RESTIC_CACHE_DIR": str(self.home / "restic-cache"),
        }

    def init(self) -> list[Command]:
        return [self.command(["restic", "init", "--json"])]

    def backup(self, source: Path, name: str, label: str) -> list[Command]:
        argv = ["restic", "backup", "--json", "--stdin", "--stdin-filename", name]
        return [self.command([*argv, "--tag", label], stdin=source)]

    def parse(self, text: str) -> Any:
        """restic --json prints status lines, then a summary: keep the summary."""
        for line in reversed(text.splitlines()):
            message = _json_or_none(line)
            if isinstance(message, dict) and message.get("message_type") == "summary":
                return message
        return _json_or_none(text.strip().splitlines()[-1]) if text.strip() else None

    def snapshot_ref(self, step: Step, label: str) -> str:
        assert isinstance(step.output, dict), step.output
        return str(step.output["snapshot_id"])

    def restore(self, ref: str, name: str, target: Path) -> list[Command]:
        return [self.command(["restic", "dump", ref, f"/{name}"], stdout=target), self.sync(target)]


class Borg(Tool):
    """borg 1.2 with repokey-blake2 encryption; `compression` is borg's --compression spec."""

    compression = ""

    def env(self) -> dict[str, str]:
        return {
            **super().env(),
            "BORG_PASSPHRASE": PASSWORD,
            "BORG_BASE_DIR": str(self.home),
            "BORG_CACHE_DIR": str(self.home / "borg-cache"),
            "BORG_CONFIG_DIR": str(self.home / "borg-config"),
            "BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK": "yes",
            "BORG_RELOCATED_REPO_ACCESS_IS_OK": "yes",
            "BORG_DISPLAY_PASSPHRASE": "no",
        }

    def init(self) -> list[Command]:
        return [self.command(["borg", "init", "-e", "repokey-blake2", str(self.repo)])]

    def backup(self, source: Path, name: str, label: str) -> list[Command]:
        argv = ["borg", "create", "--json", "--compression", self.compression]
        argv += [f"{self.repo}::{label}", "-", "--stdin-name", name]
        return [self.command(argv, stdin=source)]

    def snapshot_ref(self, step: Step, label: str) -> str:
        return label

    def restore(self, ref: str, name: str, target: Path) -> list[Command]:
        argv = ["borg", "extract", "--stdout", f"{self.repo}::{ref}", name]
        return [self.command(argv, stdout=target), self.sync(target)]


def _borg_settings(compression: str) -> str:
    return (
        f"`borg init -e repokey-blake2`, `borg create --compression {compression} REPO::LABEL - "
        "--stdin-name NAME < FILE` (default chunker buzhash 19,23,21,4095), "
        "`borg extract --stdout REPO::LABEL NAME > FILE` then `sync FILE`"
    )


class BorgLz4(Borg):
    key = "borg-lz4"
    label = "borg lz4"
    compression = "lz4"
    settings = _borg_settings("lz4")


class BorgZstd3(Borg):
    key = "borg-zstd3"
    label = "borg zstd,3"
    compression = "zstd,3"
    settings = _borg_settings("zstd,3")


TOOLS: tuple[type[Tool], ...] = (Mover, Restic, BorgLz4, BorgZstd3)
