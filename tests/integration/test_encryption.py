"""Nothing of the plaintext reaches the repository: no marker string, no unkeyed digest of the
source or of any chunk, no source name; and a wrong password changes nothing."""

from __future__ import annotations

import hashlib
import itertools
from pathlib import Path

import blake3
import pytest
import zstandard

from mover.chunking import make_chunker
from mover.objects.repository import Repository
from mover.storage.local import LocalBackend
from mover.tools.sampledata import SampleData
from tests.integration.conftest import (
    PASSWORD,
    MiB,
    assert_one_error_line,
    backup,
    init_repo,
    mover,
    pack_files,
    tree_state,
)

MARKER = b"MOVER-MARKER-7f3a"
SOURCE_NAME = "customer-db-volume-5c2e91.img"


def marker_region(size: int) -> bytes:
    """Log-like text with the marker on every line."""
    lines = []
    total = n = 0
    while total < size:
        line = (
            f"2026-11-25T10:{n % 60:02d}:00Z pod db-0 request {n} ok {MARKER.decode()} "
            f"user=alice table=orders\n".encode()
        )
        lines.append(line)
        total += len(line)
        n += 1
    return b"".join(lines)[:size]


def build_source(path: Path) -> tuple[bytes, slice]:
    data = bytearray(SampleData(21).generate(24 * MiB))
    region = slice(8 * MiB, 12 * MiB)
    data[region] = marker_region(4 * MiB)
    path.write_bytes(data)
    return bytes(data), region


def digests(data: bytes) -> list[bytes]:
    """Unkeyed BLAKE3 and SHA-256 of data, raw and as hex text."""
    found = []
    for digest in (blake3.blake3(data).digest(), hashlib.sha256(data).digest()):
        found += [digest, digest.hex().encode()]
    return found


def chunks_as_the_repository_cuts_them(repo: Path, data: bytes) -> list[bytes]:
    """The source's chunks, cut with the repository's own (sealed) chunker parameters."""
    config = Repository.open(LocalBackend(repo), PASSWORD.encode()).config
    chunker = make_chunker(config.chunker)
    bounds = [0, *chunker.feed(data), *chunker.finish()]  # finish: the last chunk's end
    chunks = [data[a:b] for a, b in itertools.pairwise(bounds)]
    assert b"".join(chunks) == data
    return chunks


@pytest.mark.parametrize("compression", ["0", "3"])
def test_no_plaintext_or_unkeyed_digest_in_repository(tmp_path: Path, compression: str) -> None:
    source = tmp_path / SOURCE_NAME
    data, region = build_source(source)
    assert data.count(MARKER) > 40_000
    repo = init_repo(tmp_path / "repo", "--compression", compression)
    snap = backup(repo, source)
    assert snap["stats"]["new_bytes"] > 0

    chunks = chunks_as_the_repository_cuts_them(repo, data)
    assert len(chunks) >= 6
    needles = {
        "marker": [MARKER],
        "source name": [SOURCE_NAME.encode(), b"customer-db-volume"],
        "digest of the source": digests(data),
        "digest of the marker region": digests(data[region]),
    }
    for n, chunk in enumerate(chunks):
        needles[f"digest of chunk {n}"] = digests(chunk)
    for n in range(0, len(data), MiB):
        needles[f"digest of MiB {n // MiB}"] = digests(data[n : n + MiB])

    files = [p for p in repo.rglob("*") if p.is_file()]
    assert len(files) >= 5  # config, key, pack, index, snapshot
    for path in files:
        content = path.read_bytes()
        name = str(path.relative_to(repo)).encode()
        for what, values in needles.items():
            for needle in values:
                assert needle not in content, f"{what} found in {path}"
                assert needle not in name, f"{what} found in the name {name!r}"

    # Ciphertext does not compress: with --compression 0 the packs would otherwise shrink a lot
    # (the source compresses to about half, the marker region to almost nothing).
    for pack in pack_files(repo):
        content = pack.read_bytes()
        assert len(zstandard.ZstdCompressor(level=3).compress(content)) > 0.99 * len(content)


def test_restore_with_wrong_password_changes_nothing(
    repo: Path, image: Path, tmp_path: Path
) -> None:
    backup(repo, image)
    before = tree_state(repo)
    target = tmp_path / "restored.img"
    proc = mover(
        "restore", "--repo", repo, "latest", target, env={"MOVER_PASSWORD": "not the password"}
    )
    assert_one_error_line(proc, exit_code=1, starts="wrong password")
    assert not target.exists()
    assert tree_state(repo) == before
