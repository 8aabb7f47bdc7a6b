"""Progress bars on terminals (stderr); silent otherwise, so scripts and --json stay clean."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)


@contextmanager
def byte_progress(description: str, total: int | None, enabled: bool) -> Iterator[Progress | None]:
    if not (enabled and sys.stderr.isatty()):
        yield None
        return
    from rich.console import Console

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[detail]}"),
        console=Console(stderr=True),
        transient=False,
    ) as bar:
        bar.add_task(description, total=total, detail="")
        yield bar
