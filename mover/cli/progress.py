"""Progress bars on terminals (stderr); silent otherwise, so scripts and --json stay clean."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # rich costs ~20 ms to import: only terminals that show a bar pay for it
    from rich.progress import Progress


@contextmanager
def byte_progress(description: str, total: int | None, enabled: bool) -> Iterator[Progress | None]:
    if not (enabled and sys.stderr.isatty()):
        yield None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        ProgressColumn,
        Task,
        TextColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    from mover.cli.sizes import format_rate

    class BinaryRate(ProgressColumn):  # rich's TransferSpeedColumn speaks MB/s; we speak MiB/s
        def render(self, task: Task) -> Text:
            speed = task.finished_speed or task.speed
            return Text("?" if speed is None else format_rate(speed), style="progress.data.speed")

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(binary_units=True),  # MiB, as every summary line says
        BinaryRate(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[detail]}"),
        console=Console(stderr=True),
        transient=False,
    ) as bar:
        bar.add_task(description, total=total, detail="")
        yield bar
