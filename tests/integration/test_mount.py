"""`mover mount` for real: the command line in a subprocess, a FUSE mount, files read through
the kernel. Snapshots read back bit for bit, an ext4 image on the mount opens with debugfs (and
a loop mount where allowed), a killed mount leaves a dead mount point that fusermount3 -u
releases and a repository that checks clean, and a backup and a prune while mounted keep every
chunk of the mounted snapshot (its shared lock). Skipped, with the reason, where FUSE cannot
mount (no /dev/fuse, no permission); in CI a missing binding or fusermount3 fails instead.

The checks of bad input need no FUSE."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.conftest import (
    assert_one_error_line,
    assert_same_file,
    backup,
    init_repo,
    mover,
    mover_env,
    ok,
    out_json,
    restore,
    tree_state,
    write_image,
)
from tests.integration.fusemount import (
    binding_unavailable,
    is_mounted,
    mounted,
    needs_fuse,
    unmount,
)

MiB = 1 << 20
SBIN = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])


def program(name: str) -> str:
    found = shutil.which(name, path=SBIN)
    if found is None:
        pytest.skip(f"{name} is not installed (Debian: e2fsprogs)")
    return found


def locks(repo: Path) -> list[dict[str, object]]:
    found: list[dict[str, object]] = out_json(mover("locks", "--repo", repo, "--json"))["locks"]
    return found


@pytest.mark.slow  # two backups and a mount: several seconds on 2 cores
def test_every_snapshot_reads_back_bit_for_bit(tmp_path: Path, image: Path) -> None:
    needs_fuse()
    repo = init_repo(tmp_path / "repo")
    second = write_image(tmp_path / "second.img", 2, 6 * MiB + 12345)
    first_id = backup(repo, image)["id"]
    second_id = backup(repo, second)["id"]
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    with mounted(repo, mnt) as mount:
        files = mount.info["files"]
        assert mount.info["snapshots"] == 2
        assert files["/latest.img"] == second_id
        assert files[f"/{first_id[:8]}.img"] == first_id
        assert_same_file(second, mnt / "latest.img")
        assert_same_file(image, mnt / f"{first_id[:8]}.img")
        by_source = mnt / "by-source"
        source_dirs = sorted(os.listdir(by_source))
        assert len(source_dirs) == 2
        newest = {files[f"/by-source/{d}/latest.img"] for d in source_dirs}
        assert newest == {first_id, second_id}
        assert (mnt / "latest.img").stat().st_size == second.stat().st_size
        with pytest.raises(OSError) as refused:
            open(mnt / "latest.img", "r+b")  # noqa: SIM115
        assert refused.value.errno in (errno.EROFS, errno.EACCES)
        with pytest.raises(OSError):
            (mnt / "new-file").write_bytes(b"x")
        held = locks(repo)
        assert [(lock["kind"], lock["stale"]) for lock in held] == [("shared", False)]
        code, stderr = mount.stop()
    assert code == 0, stderr
    assert "unmounted" in stderr
    assert not is_mounted(mnt) and os.listdir(mnt) == []
    assert locks(repo) == []  # the shared lock went with the mount
    ok(mover("check", "--repo", repo))


@pytest.mark.slow  # mke2fs, a backup, a mount, debugfs
def test_debugfs_reads_a_file_of_an_ext4_image_on_the_mount(tmp_path: Path) -> None:
    needs_fuse()
    mke2fs, debugfs = program("mke2fs"), program("debugfs")
    tree = tmp_path / "tree"
    (tree / "var" / "lib").mkdir(parents=True)
    payload = os.urandom(3 * MiB + 777)
    (tree / "var" / "lib" / "data.bin").write_bytes(payload)
    (tree / "notes.txt").write_text("a file to find\n" * 1000)
    fs_image = tmp_path / "ext4.img"
    with open(fs_image, "wb") as f:
        f.truncate(32 * MiB)
    ok_run = subprocess.run(
        [mke2fs, "-q", "-F", "-t", "ext4", "-b", "4096", "-d", str(tree), str(fs_image)],
        capture_output=True,
    )
    assert ok_run.returncode == 0, ok_run.stderr
    repo = init_repo(tmp_path / "repo")
    backup(repo, fs_image)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    out = tmp_path / "dumped.bin"
    with mounted(repo, mnt) as mount:
        dumped = subprocess.run(
            [debugfs, "-R", f"dump /var/lib/data.bin {out}", str(mnt / "latest.img")],
            capture_output=True,
        )
        assert dumped.returncode == 0, dumped.stderr
        listing = subprocess.run(
            [debugfs, "-R", "ls -l /", str(mnt / "latest.img")], capture_output=True, text=True
        )
        assert "notes.txt" in listing.stdout
        # Ctrl-C stops a foreground mount: unmounted, lock released, exit 0.
        mount.proc.send_signal(signal.SIGINT)
        code, stderr = mount.wait()
    assert code == 0, stderr
    assert not is_mounted(mnt)
    assert locks(repo) == []
    assert out.read_bytes() == payload


@pytest.mark.slow
def test_loop_mount_of_an_image_on_the_mount(tmp_path: Path) -> None:
    """`mount -o loop,ro` straight from the mount, where this machine allows loop mounts."""
    needs_fuse()
    mke2fs = program("mke2fs")
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("loop mounts need root and mount(8)")
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "hello.txt").write_text("hello from a snapshot\n")
    fs_image = tmp_path / "ext4.img"
    with open(fs_image, "wb") as f:
        f.truncate(16 * MiB)
    subprocess.run([mke2fs, "-q", "-F", "-t", "ext4", "-d", str(tree), str(fs_image)], check=True)
    probe = tmp_path / "probe"
    probe.mkdir()
    tried = subprocess.run(
        ["mount", "-o", "loop,ro", str(fs_image), str(probe)], capture_output=True
    )
    if tried.returncode != 0:
        pytest.skip(f"loop mounts are not allowed here: {tried.stderr.decode().strip()}")
    subprocess.run(["umount", str(probe)], check=True)
    repo = init_repo(tmp_path / "repo")
    backup(repo, fs_image)
    mnt, inner = tmp_path / "mnt", tmp_path / "inner"
    mnt.mkdir()
    inner.mkdir()
    with mounted(repo, mnt):
        subprocess.run(["mount", "-o", "loop,ro", str(mnt / "latest.img"), str(inner)], check=True)
        try:
            assert (inner / "hello.txt").read_text() == "hello from a snapshot\n"
        finally:
            subprocess.run(["umount", str(inner)], check=True)


@pytest.mark.slow  # a mount, a kill, a check --read-data and a second mount
def test_a_killed_mount_is_released_by_fusermount_and_harms_nothing(
    tmp_path: Path, image: Path
) -> None:
    needs_fuse()
    repo = init_repo(tmp_path / "repo")
    snapshot_id = backup(repo, image)["id"]
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    before = tree_state(repo)
    with mounted(repo, mnt) as mount:
        with open(mnt / "latest.img", "rb") as f:
            f.read(MiB)
        os.kill(mount.proc.pid, signal.SIGKILL)
        code, _ = mount.wait()
        assert code == -signal.SIGKILL
        # A dead mount point: it is still mounted, and nothing can be read through it.
        assert is_mounted(mnt)
        with pytest.raises(OSError) as dead:
            os.listdir(mnt)
        assert dead.value.errno == errno.ENOTCONN
        # Mounting there again says what to run.
        again = mover("mount", "--repo", repo, mnt)
        line = assert_one_error_line(again, 2)
        assert f"fusermount3 -u {mnt}" in line
        released = unmount(mnt)
        assert released.returncode == 0, released.stderr
    assert not is_mounted(mnt) and os.listdir(mnt) == []
    # The repository: the lock of the dead mount is stale (its holder is gone) and removable;
    # nothing else changed, and every byte checks.
    held = locks(repo)
    assert [(lock["kind"], lock["stale"]) for lock in held] == [("shared", True)]
    ok(mover("unlock", "--repo", repo))
    assert tree_state(repo) == before
    ok(mover("check", "--repo", repo, "--read-data"))
    with mounted(repo, mnt) as mount:
        assert mount.info["files"]["/latest.img"] == snapshot_id
        assert_same_file(image, mnt / "latest.img")


@pytest.mark.slow  # backups, prunes and a full read while mounted
def test_backup_and_prune_while_mounted_keep_the_mounted_snapshot(tmp_path: Path) -> None:
    """The mounted snapshot is forgotten and pruned while mounted: prune condemns its packs
    but waits for the mount's shared lock before deleting them, so every byte still reads;
    once unmounted, the next prune deletes them. A backup runs meanwhile, unhindered."""
    needs_fuse()
    repo = init_repo(tmp_path / "repo")
    first = write_image(tmp_path / "first.img", 31, 12 * MiB)
    later = write_image(tmp_path / "later.img", 32, 6 * MiB)
    first_id = backup(repo, first)["id"]
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    with mounted(repo, mnt) as mount:
        later_id = backup(repo, later)["id"]  # a writer beside the mount: both shared locks
        assert mount.info["files"]["/latest.img"] == first_id  # the view is of mount time
        ok(mover("forget", "--repo", repo, first_id))
        pruned = out_json(mover("prune", "--repo", repo, "--json"))
        assert pruned["packs_condemned"] > 0, pruned
        assert pruned["packs_deleted"] == 0 and pruned["packs_waiting"] > 0, pruned
        assert any(str(mount.proc.pid) in owner for owner in pruned["waiting_for"]), pruned
        # Nothing of the forgotten snapshot was read before the prune: all of it comes from
        # the condemned packs now.
        assert_same_file(first, mnt / "latest.img")
        code, stderr = mount.stop()
    assert code == 0, stderr
    after = out_json(mover("prune", "--repo", repo, "--json"))
    assert after["packs_deleted"] > 0 and after["packs_waiting"] == 0, after
    ok(mover("check", "--repo", repo, "--read-data"))
    restored = tmp_path / "restored.img"
    assert restore(repo, later_id, restored)["snapshot"] == later_id
    assert_same_file(later, restored)


def test_bad_input_is_one_line_exit_2_and_changes_nothing(tmp_path: Path) -> None:
    empty_repo = init_repo(tmp_path / "empty-repo")
    repo = init_repo(tmp_path / "repo")
    ok(mover("backup", "--repo", repo, "-", input=b"x" * 100_000))
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "file").write_text("keep me")
    (tmp_path / "a-file").write_text("not a directory")
    states = {path: tree_state(path) for path in (repo, empty_repo, tmp_path / "busy")}
    cases = [
        (["--repo", repo, tmp_path / "missing"], "mount point"),
        (["--repo", repo, tmp_path / "a-file"], "mount point"),
        (["--repo", repo, tmp_path / "busy"], "mount point"),
        (["--repo", repo, mnt, "--cache-size", "lots"], "--cache-size"),
    ]
    if binding_unavailable() is None:  # checked once the binding is there (it is said first)
        cases += [
            (["--repo", repo, mnt, "--cache-size", "1KiB"], "--cache-size"),
            (["--repo", empty_repo, mnt], "the repository has no snapshots"),
            (["--repo", tmp_path / "no-repo", mnt], "repository"),
            ([mnt], "no repository given"),
        ]
    for args, starts in cases:
        proc = mover("mount", *args, timeout=120)
        line = assert_one_error_line(proc, 2)
        assert starts in line, (args, line)
    assert not is_mounted(mnt) and os.listdir(mnt) == []
    for path, state in states.items():
        assert tree_state(path) == state, path


def _without_fuse(
    *args: str | os.PathLike[str], env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    """mover as installed without the binding: importing mfusepy fails as if it were absent."""
    code = (
        "import sys; sys.modules['mfusepy'] = None; from mover.cli.main import main; "
        "sys.exit(main(sys.argv[1:]))"
    )
    return subprocess.run(
        [sys.executable, "-c", code, *map(str, args)],
        env=mover_env(env),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=120,
    )


def test_without_the_binding_the_verb_says_what_to_install(tmp_path: Path) -> None:
    repo = init_repo(tmp_path / "repo")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    before = tree_state(repo)
    proc = _without_fuse("mount", "--repo", repo, mnt)
    line = assert_one_error_line(proc, 2, "FUSE support is not installed")
    assert "pip install 'mover[mount]'" in line and "fuse3" in line
    help_text = _without_fuse("mount", "--help")
    assert help_text.returncode == 0 and b"MOUNTPOINT" in help_text.stdout
    everything_else = _without_fuse("snapshots", "--repo", repo, "--json")
    assert everything_else.returncode == 0 and json.loads(everything_else.stdout) == []
    # libfuse itself missing (the binding installed): the same message, with the binding's.
    no_lib = mover(
        "mount", "--repo", repo, mnt, env={"FUSE_LIBRARY_PATH": str(tmp_path / "none.so")}
    )
    assert_one_error_line(no_lib, 2, "FUSE support is not installed")
    assert tree_state(repo) == before
