"""How commands speak: JSON for scripts, tables and one-line errors for people. Outside
mover.cli so that the commands other packages add to `mover` (the Kubernetes side's, through
mover.api) speak the same way without importing the CLI."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence

# rich is imported where it is used: ~20 ms of start-up that `--json` and quiet runs never need.


def emit_json(payload: object) -> None:
    json.dump(payload, sys.stdout, indent=2, sort_keys=False)
    sys.stdout.write("\n")


def emit_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """A table drawn by rich; off a terminal (a pipe, a file) as wide as its contents, never
    cut to rich's default 80 columns, so that nothing piped loses a character."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for i, column in enumerate(columns):
        text = i in (0, len(columns) - 1)
        table.add_column(column, justify="left" if text else "right")
    for row in rows:
        table.add_row(*row)
    Console(width=None if sys.stdout.isatty() else 100_000).print(table)


def status(message: str) -> None:
    """Progress notes go to stderr so that stdout stays clean for --json."""
    if sys.stderr.isatty():
        from rich.console import Console

        Console(stderr=True).print(f"[dim]{message}[/dim]")


def error_line(message: str) -> None:
    sys.stderr.write(f"mover: error: {message}\n")


def human_rate(bytes_per_s: float) -> str:
    return f"{bytes_per_s / 1e6:,.0f} MB/s"
