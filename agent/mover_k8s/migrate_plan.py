"""What a migration (mover_k8s.migrate) is made of: the two sides, the Plan, the steps of each
app (seed rounds, then the cut over) and how far its run has come."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

from mover_k8s import api, apps
from mover_k8s.k8s.client import Kube, Obj

MIGRATION_LABEL = f"{api.GROUP}/migration"
STEP_LABEL = f"{api.GROUP}/migration-step"
SEED_KINDS = ("Namespace", "StorageClass", "PersistentVolumeClaim")
PHASES = ("all", "seed", "cutover")
FINAL = "final"

Notify = Callable[[str], None]


@dataclass(frozen=True)
class Side:
    """One cluster: its API, mover's namespace there and the Repository used there."""

    kube: Kube
    namespace: str
    repository: str


@dataclass
class Plan:
    name: str
    apps: list[str]
    namespace_mapping: dict[str, str] = field(default_factory=dict)
    storage_class_mapping: dict[str, str] = field(default_factory=dict)
    seed_rounds: int = 1
    phase: str = "all"
    parallel: int = 20
    external_wait: str | None = None
    desired: Path | None = None
    poll: float = 1.0
    timeout: float = 86400.0


@dataclass(frozen=True)
class Step:
    kind: str  # "backup" or "restore"
    round: str  # "s1", "s2", ... or "final"
    mode: str = "full"  # a restore's
    kinds: tuple[str, ...] = ()  # a restore's includedKinds


@dataclass
class AppRun:
    app: str
    target: str  # the namespace on the target cluster
    steps: list[Step]
    at: int = 0
    state: str = "waiting"  # waiting, running, completed, failed
    error: str = ""
    failed_step: str = ""
    started: float = 0.0
    ended: float = 0.0
    backups: dict[str, Obj] = field(default_factory=dict)  # round -> the ended Backup
    restores: dict[str, Obj] = field(default_factory=dict)  # round -> the ended Restore
    replicated: int = 0  # bytes sent to a replica
    replicating: Future[int] | None = None

    @property
    def done(self) -> bool:
        return self.state in ("completed", "failed")

    def name(self, plan: Plan, round_: str) -> str:
        return apps.object_name(plan.name, self.app, round_)


def steps_for(rounds: list[int], cutover: bool) -> list[Step]:
    """Seed rounds (the first creates the claims, later ones restore data only), then the cut
    over."""
    steps: list[Step] = []
    for number in rounds:
        label = f"s{number}"
        steps.append(Step("backup", label))
        if number == 1:
            steps.append(Step("restore", label, "full", SEED_KINDS))
        else:
            steps.append(Step("restore", label, "data-only"))
    if cutover:
        steps += [Step("backup", FINAL), Step("restore", FINAL, "full")]
    return steps
