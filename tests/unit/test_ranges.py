"""Range lists (`--changed-ranges`, `--allocated-ranges`): parsing, every kind of bad line named
with its line number, merging, spooling; and the lookahead window and the sampler that a
changed-range backup streams them through."""

from __future__ import annotations

import statistics
from collections.abc import Iterator
from pathlib import Path

import pytest

from mover.errors import UsageError
from mover.pipeline.changed import _Sampler, _Window
from mover.pipeline.ranges import read_ranges

SIZE = 1 << 30


def parse(tmp_path: Path, text: str | bytes, size: int = SIZE) -> list[tuple[int, int]]:
    path = tmp_path / "ranges.txt"
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    with read_ranges(str(path), size, "--changed-ranges") as ranges:
        found = list(ranges)
        assert ranges.count == len(found)
        return found


def test_pairs_are_read_merged_when_touching_and_comments_skipped(tmp_path: Path) -> None:
    text = "# from the CSI snapshot metadata service\n0 4096\n4096 4096\n\n  10000   1 \n20000 5\n"
    assert parse(tmp_path, text) == [(0, 8192), (10000, 10001), (20000, 20005)]


def test_total_counts_bytes_and_an_empty_list_is_no_change(tmp_path: Path) -> None:
    path = tmp_path / "r"
    path.write_text("0 10\n10 5\n100 1\n")
    with read_ranges(str(path), SIZE, "--changed-ranges") as ranges:
        assert (ranges.count, ranges.total) == (2, 16)
    assert parse(tmp_path, "") == []
    assert parse(tmp_path, "# nothing changed\n") == []


def test_many_ranges_stream_back_in_order_across_spool_blocks(tmp_path: Path) -> None:
    want = [(i * 10, i * 10 + 3) for i in range(10_000)]
    assert parse(tmp_path, "".join(f"{a} {b - a}\n" for a, b in want)) == want


def test_a_range_may_end_exactly_at_the_end(tmp_path: Path) -> None:
    assert parse(tmp_path, "90 10\n", size=100) == [(90, 100)]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0 10\nnonsense\n", "line 2: expected `OFFSET LENGTH` (two decimal numbers), got 'nons"),
        ("0 10 7\n", "line 1: expected `OFFSET LENGTH`"),
        ("0x10 5\n", "line 1: expected `OFFSET LENGTH`"),
        ("-5 5\n", "line 1: expected `OFFSET LENGTH`"),
        ("5\n", "line 1: expected `OFFSET LENGTH`"),
        (b"\xff\xfe 1\n", "line 1: expected `OFFSET LENGTH`"),
        ("7 0\n", "line 1: a range of length 0"),
        ("0 10\n5 10\n", "line 2: range 5+10 starts before the end of the previous one (byte 10)"),
        ("50 10\n0 10\n", "line 2: range 0+10 starts before the end of the previous one"),
        ("95 10\n", "line 1: range 95+10 ends at byte 105, past the end of the source (100"),
        (f"{1 << 70} 1\n", "past the end of the source"),
    ],
)
def test_bad_lines_are_one_clear_error(tmp_path: Path, text: str | bytes, message: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse(tmp_path, text, size=100)
    line = str(caught.value)
    assert "\n" not in line
    assert line.startswith(f"--changed-ranges {tmp_path / 'ranges.txt'} ")
    assert message in line


def test_a_missing_file_or_a_directory_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no such file"):
        read_ranges(str(tmp_path / "absent"), SIZE, "--allocated-ranges")
    with pytest.raises(UsageError, match="is a directory"):
        read_ranges(str(tmp_path), SIZE, "--allocated-ranges")


def window_of(items: list[tuple[int, int, str]]) -> tuple[_Window[str], list[int]]:
    loaded: list[int] = []

    def source() -> Iterator[tuple[int, int, str]]:
        for item in items:
            loaded.append(item[0])
            yield item

    return _Window(source()), loaded


def test_window_finds_the_item_holding_or_after_a_position() -> None:
    window, _ = window_of([(0, 10, "a"), (10, 20, "b"), (30, 40, "c")])
    assert window.find(0) == (0, 10, "a")
    assert window.find(9) == (0, 10, "a")
    assert window.find(10) == (10, 20, "b")
    assert window.find(25) == (30, 40, "c")  # in a gap: the next one
    assert window.find(3) == (0, 10, "a")  # back down to the floor: still held
    assert window.find(40) is None


def test_window_skips_what_is_dropped_without_holding_it() -> None:
    items = [(i, i + 1, str(i)) for i in range(100_000)]
    window, loaded = window_of(items)
    assert window.find(5) == (5, 6, "5")
    window.drop_before(90_000)  # a jump: items on the way are not kept
    assert window.find(90_000) == (90_000, 90_001, "90000")
    assert len(window._held) - window._head <= 2
    assert len(loaded) == 90_001  # loaded lazily: not one past what was asked for


@pytest.mark.parametrize("percent", [1.0, 10.0, 50.0])
def test_sampler_chooses_the_share_asked_for(percent: float) -> None:
    sampler = _Sampler(percent / 100)
    by_one = sum(sampler.chosen() for _ in range(200_000))
    in_blocks = sum(len(sampler.picks(1000)) for _ in range(200))
    for chosen in (by_one, in_blocks):
        assert abs(chosen / 200_000 - percent / 100) < 0.2 * percent / 100 + 0.001


def test_sampler_at_the_ends_takes_all_or_nothing() -> None:
    everything, nothing = _Sampler(1.0), _Sampler(0.0)
    assert all(everything.chosen() for _ in range(1000))
    assert everything.picks(5) == [0, 1, 2, 3, 4]
    assert not any(nothing.chosen() for _ in range(1000))
    assert nothing.picks(1 << 40) == []


def test_sampler_gaps_spread_over_many_calls() -> None:
    """Picks come out the same whatever the calls' sizes: the gap carries over."""
    sampler = _Sampler(0.05)
    gaps = []
    last = -1
    at = 0
    for n in [1, 7, 1000, 3, 50_000] * 20:
        for i in sampler.picks(n):
            gaps.append(at + i - last)
            last = at + i
        at += n
    assert 15 < statistics.mean(gaps) < 25


def test_iterations_are_independent(tmp_path: Path) -> None:
    path = tmp_path / "r"
    path.write_text("".join(f"{i * 10} 5\n" for i in range(5000)))
    with read_ranges(str(path), SIZE, "--changed-ranges") as ranges:
        a, b = iter(ranges), iter(ranges)
        assert [next(a) for _ in range(4500)][-1] == (44990, 44995)
        assert next(b) == (0, 5)
        assert next(a) == (45000, 45005)
