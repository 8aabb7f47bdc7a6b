"""How far a Backup or Restore has come, from its work items' statuses: bytes, rate and ETA,
summed. Shared by the command line (mover_k8s.cli.progress) and the dashboard (mover_k8s.ui)."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from mover_k8s import api
from mover_k8s.k8s.types import Obj
from mover_k8s.timestamps import parse as parse_time

if TYPE_CHECKING:
    from mover_k8s.k8s.client import Kube


def work_items(kube: Kube, obj: Obj) -> list[Obj]:
    """The VolumeBackups of a Backup, the VolumeRestores of a Restore."""
    meta = obj["metadata"]
    rt = api.VOLUME_BACKUP if obj.get("kind") == "Backup" else api.VOLUME_RESTORE
    label = api.BACKUP_LABEL if obj.get("kind") == "Backup" else api.RESTORE_LABEL
    return kube.list(rt, meta["namespace"], label_selector=f"{label}={meta['name']}")


def volume_entries(obj: Obj) -> list[Obj]:
    """A Backup's status.volumes, a Restore's status.report.volumes."""
    status = obj.get("status") or {}
    if obj.get("kind") == "Restore":
        return list((status.get("report") or {}).get("volumes") or [])
    return list(status.get("volumes") or [])


def volume_sizes(obj: Obj) -> dict[str, int]:
    """Work item name -> the volume's size as the controller recorded it (its capacity)."""
    key = "volumeBackup" if obj.get("kind") == "Backup" else "volumeRestore"
    return {str(e[key]): int(e.get("size") or 0) for e in volume_entries(obj) if e.get(key)}


def _seconds_between(start: object, end: object) -> float:
    """Seconds from one recorded time stamp to another; 0 when either is missing."""
    first, last = parse_time(str(start or "")), parse_time(str(end or ""))
    return (last - first).total_seconds() if first and last else 0.0


def item_progress(item: Obj) -> Obj:
    """A work item's progress as its agent recorded it, with a rate: the agent's (bytes done
    over the time since it began reading), else bytes done over the time from the item's
    start to the progress's last update. {} before the agent reported any."""
    status = item.get("status") or {}
    progress = dict(status.get("progress") or {})
    if progress and not progress.get("bytesPerSecond") and progress.get("bytesDone"):
        elapsed = _seconds_between(status.get("startTimestamp"), progress.get("updated"))
        if elapsed > 0:
            progress["bytesPerSecond"] = progress["bytesDone"] / elapsed
    return progress


def total_progress(items: list[Obj], sizes: dict[str, int] | None = None) -> Obj:
    """The progress of a Backup's or Restore's work items together. Bytes add up (an item the
    agent has not begun counts its volume's size from `sizes` as its total). The rate is the
    bytes done over the time they took as recorded: from the first item's start to the last
    progress update, or the longest item's own time when that is longer (the stamps are whole
    seconds). The ETA is the bytes left at that rate, when every item's total is known."""
    sizes = sizes or {}
    done = total = 0
    known = True
    starts: list[datetime] = []
    updates: list[datetime] = []
    longest = 0.0
    for item in items:
        status, progress = item.get("status") or {}, item_progress(item)
        item_done = int(progress.get("bytesDone") or 0)
        item_total = int(progress.get("bytesTotal") or 0) or sizes.get(
            str(item["metadata"]["name"]), 0
        )
        done += item_done
        total += item_total
        finished = status.get("phase") in api.DONE_PHASES
        known = known and (item_total > 0 or finished)
        rate = float(progress.get("bytesPerSecond") or 0)
        if item_done and rate > 0:
            longest = max(longest, item_done / rate)
        start = parse_time(str(status.get("startTimestamp") or ""))
        update = parse_time(str(progress.get("updated") or ""))
        if start and update and item_done:
            starts.append(start)
            updates.append(update)
    span = (max(updates) - min(starts)).total_seconds() if starts else 0.0
    elapsed = max(span, longest)
    result: Obj = {"bytesDone": done, "bytesTotal": total}
    if done and elapsed > 0:
        result["bytesPerSecond"] = done / elapsed
        if known and total > done:
            result["etaSeconds"] = int((total - done) * elapsed / done)
    return result
