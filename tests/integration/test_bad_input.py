"""Bad input: every mistake is one line on stderr (`mover: error: ...`), a non-zero exit, and
the repository's files stay byte-identical."""

from __future__ import annotations

import dataclasses
import errno
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from mover.errors import SourceError
from mover.objects.repository import Repository
from mover.pipeline.backup import run_backup
from mover.storage.local import LocalBackend
from mover.tools.sampledata import SampleData
from tests.integration.conftest import (
    PASSWORD,
    MiB,
    assert_one_error_line,
    assert_same_file,
    backup,
    mover,
    ok,
    restore,
    snapshot_list,
    tree_state,
    write_image,
)

# Every verb that opens a repository, with arguments that would otherwise work.
VERBS = [
    ("snapshots",),
    ("stats",),
    ("check",),
    ("check", "--read-data"),
    ("prune",),
    ("forget", "{id}"),
    ("backup", "{image}"),
    ("restore", "latest", "{target}"),
]


def verb_args(verb: tuple[str, ...], **values: Any) -> list[str]:
    return [part.format(**values) for part in verb]


@pytest.fixture
def populated(repo: Path, image: Path) -> tuple[Path, dict[str, Any]]:
    return repo, backup(repo, image)


@pytest.mark.parametrize("verb", VERBS, ids="-".join)
def test_wrong_password(
    populated: tuple[Path, dict[str, Any]], image: Path, tmp_path: Path, verb: tuple[str, ...]
) -> None:
    repo, snap = populated
    before = tree_state(repo)
    target = tmp_path / "target.img"
    args = verb_args(verb, id=snap["id"], image=image, target=target)
    proc = mover(*args, "--repo", repo, env={"MOVER_PASSWORD": PASSWORD + "x"})
    assert_one_error_line(proc, exit_code=1, starts="wrong password")
    assert tree_state(repo) == before
    assert not target.exists()


@pytest.mark.parametrize("verb", VERBS, ids="-".join)
def test_repository_missing(image: Path, tmp_path: Path, verb: tuple[str, ...]) -> None:
    missing = tmp_path / "no-such-repo"
    target = tmp_path / "target.img"
    args = verb_args(verb, id="0" * 64, image=image, target=target)
    proc = mover(*args, "--repo", missing)
    line = assert_one_error_line(proc, exit_code=2)
    assert "does not exist" in line
    assert not missing.exists()
    assert not target.exists()


def test_directory_that_is_not_a_repository(image: Path, tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "notes.txt").write_text("not a repository\n")
    before = tree_state(plain)
    for args in (("backup", image), ("snapshots",), ("check",)):
        proc = mover(*args, "--repo", plain)
        line = assert_one_error_line(proc, exit_code=1)
        assert "not a mover repository" in line
        assert tree_state(plain) == before


def test_no_repository_given(image: Path, tmp_path: Path) -> None:
    for args in (("backup", image), ("snapshots",), ("init", "--kdf-memory", "8MiB")):
        proc = mover(*args, env={"MOVER_REPOSITORY": None})
        line = assert_one_error_line(proc, exit_code=2)
        assert "--repo" in line and "MOVER_REPOSITORY" in line


def test_repository_from_environment_works(repo: Path, image: Path) -> None:
    """The counterpart of the test above: MOVER_REPOSITORY alone is enough."""
    ok(mover("backup", image, env={"MOVER_REPOSITORY": str(repo)}))
    assert len(snapshot_list(repo)) == 1


def test_no_password_on_non_terminal_stdin(populated: tuple[Path, dict[str, Any]]) -> None:
    repo, _ = populated
    before = tree_state(repo)
    proc = mover("snapshots", "--repo", repo, env={"MOVER_PASSWORD": None})
    line = assert_one_error_line(proc, exit_code=2)
    assert "MOVER_PASSWORD" in line
    assert tree_state(repo) == before


def test_password_file_missing(populated: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    repo, _ = populated
    before = tree_state(repo)
    missing = tmp_path / "no-such-password-file"
    env = {"MOVER_PASSWORD": None, "MOVER_PASSWORD_FILE": str(missing)}
    proc = mover("snapshots", "--repo", repo, env=env)
    line = assert_one_error_line(proc, exit_code=2)
    assert "MOVER_PASSWORD_FILE" in line
    assert tree_state(repo) == before
    # ...and the file, once it exists (with a trailing newline), works.
    missing.write_text(PASSWORD + "\n")
    ok(mover("snapshots", "--repo", repo, env=env))


def test_init_into_existing_repository(populated: tuple[Path, dict[str, Any]]) -> None:
    repo, _ = populated
    before = tree_state(repo)
    proc = mover("init", "--repo", repo, "--kdf-memory", "8MiB")
    line = assert_one_error_line(proc, exit_code=1)
    assert "already holds a repository" in line
    assert tree_state(repo) == before
    # A different password must not get in either.
    proc = mover("init", "--repo", repo, "--kdf-memory", "8MiB", env={"MOVER_PASSWORD": "other"})
    assert_one_error_line(proc, exit_code=1)
    assert tree_state(repo) == before


def test_bad_chunk_avg_at_init(tmp_path: Path) -> None:
    target = tmp_path / "new-repo"
    proc = mover("init", "--repo", target, "--kdf-memory", "8MiB", "--chunk-avg", "1000000")
    line = assert_one_error_line(proc, exit_code=2)
    assert "power of two" in line
    assert not target.exists()


@pytest.mark.parametrize("value", ["fast", "23", "-1", ""])
def test_bad_compression_at_init(tmp_path: Path, value: str) -> None:
    target = tmp_path / "new-repo"
    proc = mover("init", "--repo", target, "--kdf-memory", "8MiB", "--compression", value)
    line = assert_one_error_line(proc, exit_code=2)
    assert "use auto or a zstd level from 0 to 22" in line
    assert not target.exists()


@pytest.mark.parametrize("kind", ["missing", "directory", "unreadable"])
def test_backup_of_bad_source(
    populated: tuple[Path, dict[str, Any]], tmp_path: Path, kind: str
) -> None:
    repo, _ = populated
    source = tmp_path / "source"
    if kind == "directory":
        source.mkdir()
    elif kind == "unreadable":
        source.write_bytes(b"secret" * 1000)
        source.chmod(0)
        if os.access(source, os.R_OK):
            pytest.skip("running with privileges that read mode-000 files (root)")
    before = tree_state(repo)
    proc = mover("backup", "--repo", repo, source)
    # A source named wrongly is bad input (2); one that cannot be read is an I/O error (1).
    line = assert_one_error_line(proc, exit_code=1 if kind == "unreadable" else 2)
    expected = {"missing": "does not exist", "directory": "is a directory", "unreadable": ""}
    assert expected[kind] in line
    assert str(source) in line
    assert tree_state(repo) == before


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("0123456789abcdef" * 4, "no snapshot"),
        ("abc", "not a snapshot id"),
        ("", "not a snapshot id"),
        ("XYZW1234", "not a snapshot id"),
    ],
)
def test_restore_of_unknown_or_malformed_id(
    populated: tuple[Path, dict[str, Any]], tmp_path: Path, ref: str, expected: str
) -> None:
    repo, snap = populated
    if snap["id"].startswith(ref) and ref:
        pytest.skip("the made-up id happens to match")  # 2^-64
    before = tree_state(repo)
    target = tmp_path / "target.img"
    proc = mover("restore", "--repo", repo, ref, target)
    line = assert_one_error_line(proc, exit_code=2)
    assert expected in line
    assert not target.exists()
    assert tree_state(repo) == before


def test_restore_of_ambiguous_prefix(
    populated: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    """Two snapshots whose ids share their first 4 hex digits: made through the API, by varying
    the time of a copy of a real snapshot until two ids collide on the prefix."""
    repo, _ = populated
    repository = Repository.open(LocalBackend(repo), PASSWORD.encode())
    base = repository.snapshots()[0]
    seen: dict[str, Any] = {}
    pair = None
    for i in range(1_000_000):
        candidate = dataclasses.replace(base, time=f"2020-01-01T00:00:00.{i:06d}+00:00", id="")
        # Cheap to compute here; write_snapshot below must agree, or the test is broken.
        sid = repository.master.chunk_id_of(b"snapshot" + candidate.to_json()).hex()
        if sid[:4] in seen and not base.id.startswith(sid[:4]):
            pair = (seen[sid[:4]], candidate, sid[:4])
            break
        seen.setdefault(sid[:4], candidate)
    assert pair is not None
    first, second, prefix = pair
    ids = [repository.write_snapshot(first), repository.write_snapshot(second)]
    assert [i[:4] for i in ids] == [prefix, prefix] and ids[0] != ids[1]

    before = tree_state(repo)
    target = tmp_path / "target.img"
    proc = mover("restore", "--repo", repo, prefix, target)
    line = assert_one_error_line(proc, exit_code=2)
    assert "ambiguous" in line
    assert not target.exists()
    assert tree_state(repo) == before
    # One more digit (where the ids differ) picks one.
    n = next(k for k in range(4, 64) if ids[0][k] != ids[1][k])
    restore(repo, ids[1][: n + 1], target)
    assert target.stat().st_size == base.size


def test_restore_onto_existing_file_needs_force(
    populated: tuple[Path, dict[str, Any]], image: Path, tmp_path: Path
) -> None:
    repo, snap = populated
    target = tmp_path / "precious.img"
    target.write_bytes(b"do not overwrite me\n" * 100)
    original = target.read_bytes()
    before = tree_state(repo)
    proc = mover("restore", "--repo", repo, snap["id"], target)
    line = assert_one_error_line(proc, exit_code=2)
    assert "--force" in line
    assert target.read_bytes() == original
    assert tree_state(repo) == before

    # An existing empty file is fine without --force; a non-empty one with it.
    empty = tmp_path / "empty.img"
    empty.touch()
    restore(repo, snap["id"], empty)
    assert_same_file(image, empty)
    restore(repo, snap["id"], target, "--force")
    assert_same_file(image, target)
    # --force over a longer file truncates it to the snapshot's size.
    longer = tmp_path / "longer.img"
    longer.write_bytes(b"\xff" * (image.stat().st_size + 3 * MiB))
    restore(repo, snap["id"], longer, "--force")
    assert_same_file(image, longer)


@pytest.mark.parametrize("kind", ["directory", "missing-parent"])
def test_restore_onto_unusable_target(
    populated: tuple[Path, dict[str, Any]], tmp_path: Path, kind: str
) -> None:
    repo, snap = populated
    if kind == "directory":
        target = tmp_path / "a-directory"
        target.mkdir()
    else:
        target = tmp_path / "no-such-dir" / "target.img"
    before = tree_state(repo)
    proc = mover("restore", "--repo", repo, snap["id"], target, "--force")
    assert_one_error_line(proc, exit_code=2)
    assert tree_state(repo) == before
    if kind == "directory":
        assert os.listdir(target) == []
    else:
        assert not target.parent.exists()


def test_restore_latest_from_empty_repository(repo: Path, tmp_path: Path) -> None:
    before = tree_state(repo)
    target = tmp_path / "target.img"
    proc = mover("restore", "--repo", repo, "latest", target)
    line = assert_one_error_line(proc, exit_code=2)
    assert "no snapshots" in line
    assert not target.exists()
    assert tree_state(repo) == before


class ShrinkingSource:
    """A real file that is truncated to half its size right after the first read: a volume
    shrinking under the reader."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.file = open(path, "rb", buffering=0)  # noqa: SIM115 -- closed by close()
        self.reads = 0

    def fileno(self) -> int:
        return self.file.fileno()

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self.file.seek(offset, whence)

    def readinto(self, buffer: Any) -> int | None:
        n = self.file.readinto(buffer)
        self.reads += 1
        if self.reads == 1:
            os.truncate(self.path, self.path.stat().st_size // 2)
        return n

    def close(self) -> None:
        self.file.close()


def test_source_that_shrinks_during_the_read(
    populated: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    repo, snap = populated
    source = write_image(tmp_path / "shrinking.img", seed=8, size=64 * MiB)
    repository = Repository.open(LocalBackend(repo), PASSWORD.encode())
    before = [s.id for s in repository.snapshots()]
    assert before == [snap["id"]]

    wrapped = ShrinkingSource(source)
    try:
        with pytest.raises(SourceError, match="shrank") as raised:
            run_backup(repository, wrapped, str(source), threads=2)  # type: ignore[arg-type]
    finally:
        wrapped.close()
    assert wrapped.reads >= 2, "the backup stopped reading before the source shrank"
    assert stat.S_ISREG(os.stat(source).st_mode) and source.stat().st_size == 32 * MiB
    assert "no snapshot was written" in str(raised.value)

    after = Repository.open(LocalBackend(repo), PASSWORD.encode()).snapshots()
    assert [s.id for s in after] == before
    ok(mover("check", "--repo", repo))


class ShrinkUndetected(Exception):
    """The sparse source shrank and no error said so."""


def test_sparse_source_that_shrinks_during_the_read(
    populated: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    repo, snap = populated
    source = tmp_path / "sparse-shrinking.img"
    data = SampleData(12).generate(16 * MiB)
    with open(source, "wb") as f:  # data | 48 MiB hole | data
        f.write(data[: 8 * MiB])
        f.seek(56 * MiB)
        f.write(data[8 * MiB :])
    assert source.stat().st_size == 64 * MiB
    with open(source, "rb") as f:
        if os.lseek(f.fileno(), 0, os.SEEK_HOLE) != 8 * MiB:
            pytest.skip("this filesystem does not report the file's hole")
    original = source.read_bytes()
    repository = Repository.open(LocalBackend(repo), PASSWORD.encode())

    wrapped = ShrinkingSource(source)  # 32 MiB after the first read: the second run is gone
    try:
        try:
            made = run_backup(repository, wrapped, str(source), threads=2)  # type: ignore[arg-type]
        except SourceError as exc:
            assert "shrank" in str(exc)
            made = None
    finally:
        wrapped.close()
    assert wrapped.reads >= 1 and source.stat().st_size == 32 * MiB
    after = [s.id for s in Repository.open(LocalBackend(repo), PASSWORD.encode()).snapshots()]
    if made is not None:
        out = tmp_path / "restored.img"
        restore(repo, made.id, out)
        restored = out.read_bytes()
        raise ShrinkUndetected(
            f"snapshot {made.id[:8]} of {made.size} bytes written for a source that shrank to "
            f"{source.stat().st_size}; its last 8 MiB restore as zeros: "
            f"{restored[56 * MiB :] == bytes(8 * MiB)}, equal to the original's: "
            f"{restored == original}; snapshots now {len(after)}"
        )
    assert after == [snap["id"]]


class FailingSource(ShrinkingSource):
    """A real file whose third read fails with EIO, as a dying disk does."""

    def readinto(self, buffer: Any) -> int | None:
        self.reads += 1
        if self.reads == 3:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        return self.file.readinto(buffer)


def test_source_read_error(populated: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    repo, snap = populated
    source = write_image(tmp_path / "failing.img", seed=9, size=48 * MiB)
    repository = Repository.open(LocalBackend(repo), PASSWORD.encode())
    wrapped = FailingSource(source)
    try:
        with pytest.raises(SourceError, match="Input/output error") as raised:
            run_backup(repository, wrapped, str(source), threads=2)  # type: ignore[arg-type]
    finally:
        wrapped.close()
    assert str(source) in str(raised.value)
    assert "no snapshot was written" in str(raised.value)
    after = Repository.open(LocalBackend(repo), PASSWORD.encode()).snapshots()
    assert [s.id for s in after] == [snap["id"]]
    ok(mover("check", "--repo", repo))


def test_repository_path_that_is_a_file(image: Path, tmp_path: Path) -> None:
    plain = tmp_path / "repo-file"
    plain.write_bytes(b"not a repository\n")
    for args in (("backup", image), ("snapshots",), ("check",), ("repair", "index")):
        proc = mover(*args, "--repo", plain)
        line = assert_one_error_line(proc, exit_code=2)
        assert "is a file" in line, line
    assert plain.read_bytes() == b"not a repository\n"


@pytest.mark.parametrize("damage", ["deleted", "flipped", "extra-damaged"])
def test_unreadable_key_files_are_not_a_wrong_password(
    populated: tuple[Path, dict[str, Any]], damage: str
) -> None:
    """Key files are named by their hash: damage is told apart from another password's key."""
    repo, _ = populated
    (key,) = (repo / "keys").iterdir()
    if damage == "deleted":
        key.unlink()
    else:
        raw = bytearray(key.read_bytes())
        raw[len(raw) // 2] ^= 0x40
        if damage == "flipped":
            key.write_bytes(bytes(raw))
        else:  # a second, damaged key file beside the intact one
            (repo / "keys" / ("0" * 64)).write_bytes(bytes(raw))
    before = tree_state(repo)
    proc = mover("snapshots", "--repo", repo)
    if damage == "extra-damaged":
        ok(proc)  # the intact key still opens it
        proc = mover("snapshots", "--repo", repo, env={"MOVER_PASSWORD": "another"})
        line = assert_one_error_line(proc, exit_code=1, starts="wrong password")
        assert "1 other key files are damaged" in line
    else:
        line = assert_one_error_line(proc, exit_code=1)
        assert "no key file" in line and "could be read" in line, line
        assert "wrong password" not in line
        assert "repair config --from" in line
    assert tree_state(repo) == before
