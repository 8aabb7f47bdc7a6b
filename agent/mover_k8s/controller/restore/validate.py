"""Checking a Restore before anything is written: the spec's choices, which backup it restores
(a Backup here, or one in the repository by name), and what the target cluster must have (the
storage classes, the volumes asked for, node agents where the data goes). Each failed check is
a SpecError whose reason the Restore's condition shows."""

from __future__ import annotations

from dataclasses import dataclass

from mover_k8s import agent_leases, api, transforms
from mover_k8s.controller.restore.external import external_wait
from mover_k8s.controller.restore.volumes import claim_node
from mover_k8s.errors import SpecError
from mover_k8s.k8s.client import Kube, Obj
from mover_k8s.restore_plan import Filters, Plan, key_of


@dataclass(frozen=True)
class Choices:
    """The spec's choices, checked."""

    mode: str
    policy: str
    rules: list[transforms.Rule]


@dataclass(frozen=True)
class Source:
    """Where the backup to restore is."""

    repository: str
    manifest: str  # the manifest's snapshot; "": find it by the backup's name in the repository
    root: str | None  # the root hash the manifest must have (None: not known here)


def check_spec(spec: Obj) -> Choices:
    mode = str(spec.get("mode") or "full")
    if mode not in api.MODES:
        raise SpecError("InvalidMode", f"mode {mode!r} is not one of {', '.join(api.MODES)}")
    policy = str(spec.get("existingResourcePolicy") or "skip")
    if policy not in ("skip", "update"):
        raise SpecError("InvalidPolicy", f"existingResourcePolicy {policy!r} is not skip or update")
    external_wait(spec)
    rules = transforms.parse_rules(spec.get("transforms"), "spec.transforms")
    return Choices(mode, policy, rules)


def locate(kube: Kube, restore: Obj) -> Source:
    meta, spec = restore["metadata"], restore.get("spec") or {}
    ref = str(spec.get("backup") or "")
    if not ref:
        raise SpecError("BackupNotFound", "spec.backup names no backup")
    backup_ns, _, backup_name = ref.rpartition("/")
    backup = kube.find(api.BACKUP, backup_ns or meta["namespace"], backup_name)
    repo_name = str(spec.get("repository") or "")
    if backup is not None:
        status = backup.get("status") or {}
        if status.get("phase") not in (api.COMPLETED, api.PARTIALLY_FAILED):
            raise SpecError(
                "BackupNotReady",
                f"Backup {backup_name} is {status.get('phase') or 'New'}, not Completed; "
                "wait for it or name another",
            )
        return Source(
            repo_name or str((backup.get("spec") or {}).get("repository") or ""),
            str(status.get("manifestSnapshot") or ""),
            status.get("rootHash"),
        )
    if not repo_name:
        raise SpecError(
            "BackupNotFound",
            f"no Backup {ref} in namespace {backup_ns or meta['namespace']}; to restore a "
            "backup from a repository (e.g. taken on another cluster) set spec.repository",
        )
    return Source(repo_name, "", None)


def check_target(
    kube: Kube, plan: Plan, filters: Filters, doc: Obj, mode: str, classes: dict[str, str]
) -> None:
    """What the plan needs of this cluster: the mapped storage classes, the volumes asked for
    (in the backup), and (full) the storage class of every claim."""
    for target in sorted(set(classes.values())):
        if kube.find(api.STORAGE_CLASS, None, target) is None:
            raise SpecError(
                "StorageClassNotFound",
                f"storageClassMapping targets {target!r}, which this cluster does not have",
            )
    known = {f"{v.get('namespace')}/{v.get('pvc')}" for v in doc.get("volumes") or []}
    names = {k.rpartition("/")[2] for k in known}
    unknown = [v for v in filters.volumes if v not in known and v not in names]
    if unknown:
        raise SpecError(
            "VolumeNotFound",
            f"spec.volumes names {', '.join(unknown)}, not in the backup "
            f"(it holds {', '.join(sorted(known)) or 'no volume'})",
        )
    if mode == "full":
        _check_claim_classes(kube, plan)


def _check_claim_classes(kube: Kube, plan: Plan) -> None:
    restored_classes = {
        s.prepared["metadata"]["name"]
        for s in plan.steps
        if s.original.get("kind") == "StorageClass" and not s.skip
    }
    for step in plan.steps:
        if step.original.get("kind") != "PersistentVolumeClaim":
            continue
        cls = (step.prepared.get("spec") or {}).get("storageClassName")
        if (
            cls
            and cls not in restored_classes
            and (kube.find(api.STORAGE_CLASS, None, cls) is None)
        ):
            raise SpecError(
                "StorageClassNotFound",
                f"PVC {key_of(step.original)} needs StorageClass {cls!r}, which this "
                "cluster does not have; map it with storageClassMapping",
            )


def volume_nodes(
    kube: Kube, agent_namespace: str, plan: Plan, mode: str, namespaces: dict[str, str]
) -> dict[str, str]:
    """For data-only, the node of each target claim, checked to have an agent; for full,
    that some agent runs (the claims do not exist yet)."""
    if not plan.volumes:
        return {}
    live = agent_leases.live_nodes(kube, agent_namespace)
    if not live:
        raise SpecError(
            "NoAgent", "no mover node agent runs in this cluster; start the DaemonSet first"
        )
    if mode != "data-only":
        return {}
    nodes: dict[str, str] = {}
    for entry in plan.volumes:
        ns = namespaces.get(entry["namespace"], entry["namespace"])
        pvc = kube.find(api.PVC, ns, entry["pvc"])
        if pvc is None:
            continue  # reported as not matched
        node = claim_node(kube, pvc, live)
        if node and node not in live:
            raise SpecError(
                "NoAgent",
                f"PVC {ns}/{entry['pvc']} is on node {node}, where no mover node agent "
                "runs; start it there and restore again",
            )
        nodes[f"{ns}/{entry['pvc']}"] = node
    return nodes
