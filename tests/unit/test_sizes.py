"""Sizes and durations from the command line."""

from __future__ import annotations

import pytest

from mover.cli.sizes import parse_duration, parse_size
from mover.errors import UsageError


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("4096", 4096),
        ("64KiB", 65536),
        ("1MiB", 1 << 20),
        ("1.5GB", 1_500_000_000),
        ("2 gib", 2 << 30),
    ],
)
def test_sizes(text: str, value: int) -> None:
    assert parse_size(text, "--x") == value


@pytest.mark.parametrize("text", ["", "lots", "5x", "-1", "1..5MiB", "MiB"])
def test_bad_sizes(text: str) -> None:
    with pytest.raises(UsageError, match=r"--x: .* is not a size"):
        parse_size(text, "--x")


def test_size_minimum() -> None:
    with pytest.raises(UsageError, match="below the minimum"):
        parse_size("1KiB", "--x", minimum=4096)


@pytest.mark.parametrize(
    ("text", "value"),
    [("0", 0), ("90s", 90), ("15m", 900), ("1h", 3600), ("2d", 172800), ("1.5h", 5400)],
)
def test_durations(text: str, value: float) -> None:
    assert parse_duration(text, "--g") == value


@pytest.mark.parametrize("text", ["", "soon", "-1h", "1w", "h"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(UsageError, match=r"--g: .* is not a duration"):
        parse_duration(text, "--g")
