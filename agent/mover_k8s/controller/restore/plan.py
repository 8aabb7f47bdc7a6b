"""A Restore's plan: the backup's manifest read (and checked against its root hash) from the
repository, and the objects and volumes to restore planned from it (mover_k8s.restore_plan),
with the spec's mappings, filters, options and transforms."""

from __future__ import annotations

from dataclasses import dataclass

from mover_k8s import api, store, transforms
from mover_k8s.capture import cluster_id
from mover_k8s.controller.restore.validate import check_spec, locate
from mover_k8s.k8s.client import Kube, Obj
from mover_k8s.repo_access import Repositories
from mover_k8s.restore_plan import Filters, Options, Plan, check_mappings, cluster_ips_of, make_plan


@dataclass(frozen=True)
class Loaded:
    repo_name: str
    manifest_id: str
    doc: Obj
    plan: Plan
    filters: Filters
    namespaces: dict[str, str]
    classes: dict[str, str]
    mode: str
    policy: str


class Planner:
    def __init__(self, kube: Kube, repos: Repositories) -> None:
        self.kube = kube
        self.repos = repos

    def load(self, restore: Obj) -> Loaded:
        """The Restore's input, checked: what to restore from, and the plan."""
        meta, spec = restore["metadata"], restore.get("spec") or {}
        choices = check_spec(spec)
        mode = choices.mode
        source = locate(self.kube, restore)
        repo = self.repos.open(meta["namespace"], source.repository)
        try:
            if source.manifest:
                manifest = repo.find_snapshot(source.manifest)
            else:
                ref = str(spec["backup"])
                ns, _, name = ref.rpartition("/")
                manifest = store.find_manifest(repo, name, ns or None)
            doc = store.verify_manifest(repo, manifest, source.root)
            objects_doc = store.load_document(repo, doc["objects"]["snapshot"])
        finally:
            repo.close()
        namespaces: dict[str, str] = dict(spec.get("namespaceMapping") or {})
        classes: dict[str, str] = dict(spec.get("storageClassMapping") or {})
        check_mappings(namespaces, objects_doc.get("namespaces") or [])
        filters = Filters.of(spec)
        objects: list[Obj] = objects_doc.get("objects") or []
        rules = choices.rules
        plan = make_plan(
            objects,
            doc.get("volumes") or [],
            mode,
            filters,
            namespaces,
            classes,
            self._options(spec, objects_doc, mode),
            self._transforms(rules, objects) if rules and mode != "data-only" else None,
        )
        return Loaded(
            source.repository,
            manifest.id,
            doc,
            plan,
            filters,
            namespaces,
            classes,
            mode,
            choices.policy,
        )

    def _transforms(
        self, rules: list[transforms.Rule], objects: list[Obj]
    ) -> transforms.Transforms:
        """The rules, with the plural of every kind (for their `resource`): as this cluster
        serves it, or as a captured CRD names it."""
        plurals: dict[tuple[str, str], str] = {}
        if any(rule.resource is not None for rule in rules):
            served = [(rt.group, rt.kind, rt.plural) for rt in self.kube.discover()]
            plurals = transforms.plurals_of(objects, served)
        return transforms.Transforms(tuple(rules), plurals)

    def _options(self, spec: Obj, objects_doc: Obj, mode: str) -> Options:
        """The spec's choices, and whether the backup was captured on this cluster (its recorded
        cluster id is this one's; a backup that recorded none counts as another cluster's) with
        the cluster IPs its Services use now."""
        recorded = str(objects_doc.get("clusterId") or "")
        same = mode != "data-only" and bool(recorded) and recorded == cluster_id(self.kube)
        used = cluster_ips_of(self.kube.list(api.SERVICE)) if same else {}
        return Options.of(spec, same, used)


def binds_late(kube: Kube, plan: Plan) -> bool:
    """Whether a claim of the plan binds only for its first consumer (WaitForFirstConsumer)."""
    restored = {
        s.prepared["metadata"]["name"]: s.prepared
        for s in plan.steps
        if s.prepared.get("kind") == "StorageClass" and not s.skip
    }
    for step in plan.steps:
        if step.prepared.get("kind") != "PersistentVolumeClaim":
            continue
        name = (step.prepared.get("spec") or {}).get("storageClassName")
        cls = kube.find(api.STORAGE_CLASS, None, name) if name else None
        cls = cls or restored.get(str(name))
        if (cls or {}).get("volumeBindingMode") == "WaitForFirstConsumer":
            return True
    return False
