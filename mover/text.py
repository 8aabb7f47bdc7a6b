"""Wording shared by the library's progress notes and the command line."""

from __future__ import annotations


def plural(n: int, word: str, many: str | None = None) -> str:
    """`1 snapshot`, `2 snapshots`; `many` where adding an s is wrong (`1 index`, `2 indexes`)."""
    return f"{n} {word if n == 1 else (many or word + 's')}"
