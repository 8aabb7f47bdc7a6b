"""The compact index (sorted runs + fences + a small delta) against a plain dict."""

from __future__ import annotations

import array
import os
import random
import struct
import threading
import time

import pytest

from mover._native import index_run as native
from mover.content import index as index_mod
from mover.content.index import Index, Location, unpack_records
from mover.errors import IntegrityError

ROW = struct.Struct("<32sIIIB")


def random_ids(n: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    return [rng.randbytes(32) for _ in range(n)]


def location(rng: random.Random, packs: list[bytes]) -> Location:
    return Location(
        rng.choice(packs), rng.randrange(1 << 32), rng.randrange(1 << 32), rng.randrange(3)
    )


@pytest.fixture
def small_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    # Forces the bucket-file path and many merges with little data.
    monkeypatch.setattr(index_mod, "BUILD_BATCH", 97)
    monkeypatch.setattr(index_mod, "READ_BATCH", 13)


@pytest.mark.parametrize("delta_max", [1, 7, 64, 100_000])
def test_adds_match_a_dict(tmp_path: os.PathLike[str], small_batches: None, delta_max: int) -> None:
    rng = random.Random(delta_max)
    packs = [rng.randbytes(32) for _ in range(9)]
    index = Index(str(tmp_path), delta_max=delta_max)
    reference: dict[bytes, Location] = {}
    ids = random_ids(2000, delta_max)
    for chunk_id in ids:
        loc = location(rng, packs)
        index.add(chunk_id, loc)
        reference.setdefault(chunk_id, loc)
    # A second add of a known id keeps the first location, like dict.setdefault.
    for chunk_id in ids[:50]:
        index.add(chunk_id, location(rng, packs))
    assert len(index) == len(reference)
    for chunk_id, loc in reference.items():
        assert chunk_id in index
        assert index.get(chunk_id) == loc
    for missing in random_ids(300, 999):
        assert missing not in index and index.get(missing) is None
    assert dict(index.items()) == reference
    assert index.packs() == {loc.pack_id for loc in reference.values()}
    # Size-tiered merges keep the number of runs logarithmic.
    assert len(index._runs) <= max(1, (2000 // delta_max).bit_length() + 1)
    assert os.listdir(tmp_path) == []  # run files are unlinked from the start


def file_rows(entries: list[tuple[bytes, int, int, int, int]]) -> memoryview:
    return memoryview(b"".join(ROW.pack(*e) for e in entries))


def test_load_merges_files_and_keeps_one_location_per_id(
    tmp_path: os.PathLike[str], small_batches: None
) -> None:
    rng = random.Random(5)
    packs = [rng.randbytes(32) for _ in range(4)]
    ids = random_ids(1500, 6)
    files = []
    reference: dict[bytes, set[Location]] = {}
    for f in range(5):
        local = rng.sample(range(4), 3)  # each file lists its own subset of packs, in its order
        entries = []
        for chunk_id in rng.sample(ids, 600):  # overlapping files: ids repeat across files
            number = rng.randrange(3)
            offset, length, kind = rng.randrange(1 << 20), rng.randrange(1, 1 << 20), 1
            entries.append((chunk_id, number, offset, length, kind))
            reference.setdefault(chunk_id, set()).add(
                Location(packs[local[number]], offset, length, kind)
            )
        files.append((f"index/{f}", [packs[i] for i in local], file_rows(entries), len(entries)))
    index = Index(str(tmp_path))
    index.load(iter(files))
    assert len(index) == len(reference)
    for chunk_id, locations in reference.items():
        assert index.get(chunk_id) in locations
    assert sorted(k for k, _ in index.items()) == sorted(reference)


def test_load_rejects_a_row_naming_an_unlisted_pack(tmp_path: os.PathLike[str]) -> None:
    rows = file_rows([(b"\1" * 32, 3, 0, 10, 1)])
    with pytest.raises(IntegrityError, match="index/bad names a pack"):
        Index(str(tmp_path)).load([("index/bad", [b"\2" * 32], rows, 1)])


@pytest.mark.slow  # several seconds: runs in CI (CI=true) and with -m slow
def test_lookups_race_adds_and_spills(tmp_path: os.PathLike[str], small_batches: None) -> None:
    rng = random.Random(11)
    packs = [rng.randbytes(32)]
    index = Index(str(tmp_path), delta_max=16)
    ids = random_ids(3000, 12)
    added = 0
    errors: list[bytes] = []
    stop = threading.Event()

    def reader() -> None:
        r = random.Random(threading.get_ident())
        while not stop.is_set():
            upto = added
            if upto:
                chunk_id = ids[r.randrange(upto)]
                if chunk_id not in index:
                    errors.append(chunk_id)
            time.sleep(0)  # lookups keep the GIL (as designed): let the adding thread run

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    for i, chunk_id in enumerate(ids):
        index.add(chunk_id, location(rng, packs))
        added = i + 1
    stop.set()
    for t in threads:
        t.join()
    assert errors == []


def test_native_sort_unique_and_grouping() -> None:
    rng = random.Random(3)
    ids = random_ids(500, 4) * 2 + [bytes(32), b"\xff" * 32]
    rng.shuffle(ids)
    records = bytearray(b"".join(struct.pack("<32sIIIB3x", i, 1, 2, 3, 0) for i in ids))
    grouped, bounds = native.group_by_first_byte(bytes(records))
    assert bounds[0] == 0 and bounds[256] == len(ids)
    for b in range(256):
        chunk = grouped[bounds[b] * 48 : bounds[b + 1] * 48]
        assert all(r[0][0] == b for r in unpack_records(chunk))
    assert sorted(r[0] for r in unpack_records(grouped)) == sorted(ids)
    n = native.sort_unique(records)
    assert n == len(set(ids)) == len(records) // 48
    assert [r[0] for r in unpack_records(records)] == sorted(set(ids))


def test_run_edges(tmp_path: os.PathLike[str]) -> None:
    index = Index(str(tmp_path))
    assert bytes(32) not in index
    ids = sorted(random_ids(600, 8))  # more than two fences' worth
    index.load(
        [("index/x", [b"p" * 32], file_rows([(i, 0, n, 1, 1) for n, i in enumerate(ids)]), 600)]
    )
    assert index.get(ids[0]) == Location(b"p" * 32, 0, 1, 1)
    assert index.get(ids[-1]) == Location(b"p" * 32, 599, 1, 1)
    assert index.get(ids[256]) == Location(b"p" * 32, 256, 1, 1)  # a fence itself
    assert bytes(32) not in index and b"\xff" * 32 not in index
    assert b"short" not in index
    with pytest.raises(ValueError):
        index._runs[0].find(b"short")


def test_account_matches_a_plain_computation() -> None:
    rng = random.Random(21)
    ids = random_ids(400, 22)
    live_ids = set(rng.sample(ids, 150))
    entries = [(i, rng.randrange(5), 0, rng.randrange(1, 1000), 1) for i in ids]
    records = b"".join(struct.pack("<32sIIIB3x", *e) for e in entries)
    live = array.array("Q", [native.prefix_of(i) for i in live_ids] * 3)
    kept = native.sort_unique_u64(memoryview(live))
    del live[kept:]
    assert list(live) == sorted({native.prefix_of(i) for i in live_ids})
    total = array.array("Q", [0] * 5)
    used = array.array("Q", [0] * 5)
    flags = bytearray(len(entries))
    native.account(records, memoryview(live), memoryview(total), memoryview(used), flags)
    for p in range(5):
        assert total[p] == sum(e[3] for e in entries if e[1] == p)
        assert used[p] == sum(e[3] for e in entries if e[1] == p and e[0] in live_ids)
    assert [bool(f) for f in flags] == [e[0] in live_ids for e in entries]
    picked = native.flag_packs(records, bytes([0, 1, 0, 1, 0]))
    assert [r[0] for r in unpack_records(picked)] == [e[0] for e in entries if e[1] in (1, 3)]
