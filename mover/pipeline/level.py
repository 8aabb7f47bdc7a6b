"""The zstd level of a backup with `compression: auto`: chosen from how this node turns out to
keep up with this data, while the backup runs.

A higher level costs CPU and saves bytes. Whether that pays depends on what bounds the backup:
when the node's CPUs are the bottleneck (a first backup on a node with few cores: zstd 3 took
~50% of the CPU, perf), every CPU second spent compressing is wall time, and level 1 is ~25%
cheaper for ~3.5% more bytes (measured on the peers' fs image: 436 -> 578 MB/s on one core,
220 -> 228 MiB stored). When something else bounds it (reading the source, uploads to an object
store), the CPUs have time to spare and the higher level costs no time. So the level follows the
bottleneck, as zstd's own --adapt does for a stream:

- every PERIOD seconds, the process's CPU time over that wall time and the CPUs it may use
  (affinity, then the cgroup's quota: an agent pod's CPU limit) gives its utilisation;
- at BUSY or more the level steps down, at IDLE or less it steps up, between 1 and the
  repository's level (its ceiling: `mover init --compression auto` keeps 3); in between it holds,
  so that a lower level's freed CPU does not raise it straight back.

The level only changes how a chunk is compressed, never its id or its cut points: dedup and the
snapshot's tree are the same whatever level each chunk got (a chunk is stored once, at the
level of the backup that first stored it).
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

FLOOR = 1
PERIOD = 0.1  # seconds between decisions: from 3 to 1 in 0.2 s of a busy start
BUSY = 0.75  # of the usable CPUs: compressing is what bounds the backup
IDLE = 0.5
CPU_MAX = Path("/sys/fs/cgroup/cpu.max")  # cgroup v2: "QUOTA PERIOD" or "max PERIOD"
CFS_DIR = Path("/sys/fs/cgroup/cpu")  # cgroup v1: cpu.cfs_quota_us (-1: none), cpu.cfs_period_us


def usable_cpus() -> float:
    """CPUs this process may use: its affinity, lowered by its cgroup's CPU quota (a pod's CPU
    limit): cgroup v2's cpu.max, else cgroup v1's CFS quota; none when neither says one."""
    try:
        cpus = float(len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        cpus = float(os.cpu_count() or 1)
    quota = _cgroup_quota()
    return cpus if quota is None else min(cpus, max(quota, 0.1))


def _cgroup_quota() -> float | None:
    try:
        quota, period = CPU_MAX.read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((CFS_DIR / "cpu.cfs_quota_us").read_text())
        period_us = int((CFS_DIR / "cpu.cfs_period_us").read_text())
        return None if quota_us <= 0 else quota_us / period_us
    except (OSError, ValueError, ZeroDivisionError):
        return None


class AdaptiveLevel:
    """The level the workers read (`level`) and the batches steer (`tick`, once a batch sent).
    Read from worker threads without a lock: an int attribute is read whole, and a batch
    compressed at the previous level for a moment is still a right one."""

    def __init__(
        self,
        ceiling: int,
        cpus: float | None = None,
        wall: Callable[[], float] = time.monotonic,
        cpu: Callable[[], float] = time.process_time,
    ) -> None:
        self.ceiling = max(ceiling, FLOOR)
        self.level = self.ceiling
        self.cpus = cpus if cpus is not None else usable_cpus()
        self._wall, self._cpu = wall, cpu
        self._since = (wall(), cpu())
        # The level after each of the last decisions (tests, debugging): bounded, since a
        # backup of hours decides ten times a second.
        self.levels: deque[int] = deque(maxlen=64)

    def tick(self) -> None:
        wall, cpu = self._wall(), self._cpu()
        elapsed = wall - self._since[0]
        if elapsed < PERIOD or elapsed <= 0:
            return
        busy = (cpu - self._since[1]) / (elapsed * self.cpus)
        self._since = (wall, cpu)
        if busy >= BUSY and self.level > FLOOR:
            self.level -= 1
        elif busy <= IDLE and self.level < self.ceiling:
            self.level += 1
        self.levels.append(self.level)


class FixedLevel:
    """A repository with a fixed level: what `compression: auto` steers, held still."""

    def __init__(self, level: int) -> None:
        self.level = level
        self.levels: deque[int] = deque(maxlen=64)

    def tick(self) -> None:
        return None


Level = AdaptiveLevel | FixedLevel


def level_for(zstd_level: int, adaptive: bool) -> Level:
    """What a backup of a repository with this config compresses at (0: stored raw, never
    adapted: the owner chose no compression)."""
    if adaptive and zstd_level > 0:
        return AdaptiveLevel(zstd_level)
    return FixedLevel(zstd_level)
