"""How commands speak: JSON for scripts, tables and one-line errors for people."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence

# rich is imported where it is used: ~20 ms of start-up that `--json` and quiet runs never need.


def emit_json(payload: object) -> None:
    json.dump(payload, sys.stdout, indent=2, sort_keys=False)
    sys.stdout.write("\n")


def emit_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """A table: drawn by rich on a terminal; plain aligned text otherwise, never cut to a
    terminal's width (a pipe or a file has none), so that nothing piped loses a character."""
    if not sys.stdout.isatty():
        _plain_table(title, columns, rows)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for i, column in enumerate(columns):
        text = i in (0, len(columns) - 1)
        table.add_column(column, justify="left" if text else "right")
    for row in rows:
        table.add_row(*row)
    Console().print(table)


def _plain_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(str(c)), *(len(str(r[i])) for r in rows)) for i, c in enumerate(columns)]
    last = len(columns) - 1

    def line(cells: Sequence[str]) -> str:
        parts = []
        for i, cell in enumerate(cells):
            text = i in (0, last)  # first and last columns are text: left; numbers: right
            parts.append(str(cell).ljust(widths[i]) if text else str(cell).rjust(widths[i]))
        return "  ".join(parts).rstrip()

    if title:
        sys.stdout.write(f"{title}\n")
    sys.stdout.write(line(columns) + "\n")
    for row in rows:
        sys.stdout.write(line(row) + "\n")


def plural(n: int, word: str, many: str | None = None) -> str:
    """`1 snapshot`, `2 snapshots`."""
    return f"{n} {word if n == 1 else (many or word + 's')}"


def status(message: str) -> None:
    """Progress notes go to stderr so that stdout stays clean for --json."""
    if sys.stderr.isatty():
        from rich.console import Console

        Console(stderr=True).print(f"[dim]{message}[/dim]")


def error_line(message: str) -> None:
    sys.stderr.write(f"mover: error: {message}\n")


def human_rate(bytes_per_s: float) -> str:
    return f"{bytes_per_s / 1e6:,.0f} MB/s"
