"""How far a Backup or Restore has come, for people: a status line and the progress as text
(the numbers: mover_k8s.progress)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mover.api import format_duration, format_rate, format_size
from mover_k8s import api
from mover_k8s.k8s.types import Obj
from mover_k8s.progress import (
    item_progress,
    total_progress,
    volume_entries,
    volume_sizes,
    work_items,
)

__all__ = [
    "item_progress",
    "progress_text",
    "status_line",
    "total_progress",
    "volume_entries",
    "volume_sizes",
    "work_items",
]

if TYPE_CHECKING:
    from mover_k8s.k8s.client import Kube


def status_line(kube: Kube, obj: Obj) -> str:
    """`Backup nightly: WaitingForVolumes, 1 of 2 volumes, 1.2 GiB of 8.0 GiB, ...` for people:
    the phase, and the volumes' progress summed over their work items."""
    kind, meta = obj.get("kind", ""), obj["metadata"]
    status = obj.get("status") or {}
    line = f"{kind} {meta['name']}: {status.get('phase') or api.NEW}"
    items = work_items(kube, obj)
    if not items:
        return line
    done = sum(1 for i in items if (i.get("status") or {}).get("phase") in api.DONE_PHASES)
    return f"{line}, {done} of {len(items)} volumes," + progress_text(
        total_progress(items, volume_sizes(obj))
    )


def progress_text(progress: Obj) -> str:
    """` 1.1 GiB of 7.5 GiB, 295.6 MiB/s, ETA 1m10s` from a progress (item_progress(),
    total_progress()) in binary units, as the data path prints sizes; "" if none. No rate
    until there is one to measure (no bytes done yet)."""
    if not progress:
        return ""
    done, total = progress.get("bytesDone") or 0, progress.get("bytesTotal") or 0
    text = f" {format_size(done)}" + (f" of {format_size(total)}" if total else "")
    if progress.get("bytesPerSecond"):
        text += f", {format_rate(progress['bytesPerSecond'])}"
    if progress.get("etaSeconds") and done < total:
        text += f", ETA {format_duration(progress['etaSeconds'])}"
    return text
