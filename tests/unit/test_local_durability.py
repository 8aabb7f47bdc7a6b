"""A local repository's object is durable with every directory on its way: the object's file,
its entry in its directory, and the entry of each directory the write had to make (a pack in a
new data/xx/ must not vanish with that directory after a power loss while an index names it)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mover.storage.local import LocalBackend


def fsynced_paths(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths of what os.fsync is called on from now on (the call still goes through)."""
    seen: list[str] = []
    real = os.fsync

    def record(fd: int) -> None:
        seen.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(os, "fsync", record)
    return seen


@pytest.mark.parametrize("how", ["write", "stream"])
def test_new_directories_are_fsynced_into_their_parents(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    root = tmp_path / "repo"
    root.mkdir()
    backend = LocalBackend(root)
    seen = fsynced_paths(monkeypatch)
    if how == "write":
        backend.write("data/ab/abcdef", b"pack bytes")
    else:
        stream = backend.open_stream("data/")
        stream.write(b"pack bytes")
        stream.commit("data/ab/abcdef")
    assert (root / "data" / "ab" / "abcdef").read_bytes() == b"pack bytes"
    # data/ was made in the root, data/ab/ in data/, and the object's entry is in data/ab/.
    for directory in (root, root / "data", root / "data" / "ab"):
        assert str(directory) in seen, (directory, seen)


def test_existing_directories_are_not_fsynced_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "repo"
    (root / "data" / "ab").mkdir(parents=True)
    backend = LocalBackend(root)
    seen = fsynced_paths(monkeypatch)
    backend.write("data/ab/abcdef", b"pack bytes")
    assert str(root) not in seen and str(root / "data") not in seen
    assert str(root / "data" / "ab") in seen
