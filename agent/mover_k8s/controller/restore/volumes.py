"""A Restore's volumes: each handed to the agent of its node as a VolumeRestore once its claim is
bound, then followed (or cancelled) through the report's `volumes` entries."""

from __future__ import annotations

from mover_k8s import agent_leases, api
from mover_k8s.controller.common import item_name, owner_ref, seconds_since
from mover_k8s.errors import KubeError
from mover_k8s.k8s.client import Kube, Obj
from mover_k8s.restore_plan import Plan
from mover_k8s.timestamps import now
from mover_k8s.volumes import pv_node, quantity


def claim_node(kube: Kube, pvc: Obj, live: set[str]) -> str:
    """The node of a claim: its volume's, else the one the scheduler selected, else any node
    with an agent (`live`)."""
    volume = (pvc.get("spec") or {}).get("volumeName")
    pv = kube.find(api.PV, None, volume) if volume else None
    node = pv_node(pv) if pv else ""
    if not node:
        node = (pvc["metadata"].get("annotations") or {}).get(
            "volume.kubernetes.io/selected-node", ""
        )
    return node or (sorted(live)[0] if live else "")


class Volumes:
    def __init__(self, kube: Kube, agent_namespace: str, bind_timeout: float) -> None:
        self.kube = kube
        self.agent_namespace = agent_namespace
        # How long a restored claim may take to be bound before its volume is reported failed.
        self.bind_timeout = bind_timeout

    def hand_out(
        self,
        restore: Obj,
        repo_name: str,
        plan: Plan,
        namespaces: dict[str, str],
        nodes: dict[str, str],
        mode: str,
    ) -> list[Obj]:
        """The report's volume entries: each handed out, or pending, or failed."""
        entries: list[Obj] = []
        for volume in plan.volumes:
            ns = str(namespaces.get(volume["namespace"], volume["namespace"]))
            entry: Obj = {
                "kind": "PersistentVolumeClaim",
                "namespace": ns,
                "name": str(volume["pvc"]),
                "snapshot": volume["snapshot"],
                "sourceTree": volume.get("tree", ""),
                "size": int(volume.get("size") or 0),
                "since": now(),
            }
            if mode == "data-only" and self.kube.find(api.PVC, ns, entry["name"]) is None:
                entry.update(
                    result="failed",
                    reason=f"no PVC {ns}/{entry['name']} in this cluster to restore into",
                )
            else:
                self.try_hand_out(restore, repo_name, entry, nodes.get(f"{ns}/{entry['name']}"))
            entries.append(entry)
        return entries

    def try_hand_out(self, restore: Obj, repo_name: str, entry: Obj, node: str | None) -> None:
        """Make the VolumeRestore of `entry` once its claim is bound; until then (a provisioner
        at work, a class that binds late) it stays pending, for `bind_timeout` seconds."""
        ns, name = entry["namespace"], entry["name"]
        pvc = self.kube.find(api.PVC, ns, name)
        pv_name = ((pvc or {}).get("spec") or {}).get("volumeName") or ""
        pv = self.kube.find(api.PV, None, pv_name) if pv_name else None
        if pvc is None or pv is None:
            waited = seconds_since(str(entry.get("since") or ""))
            if waited > self.bind_timeout:
                entry.update(
                    result="failed",
                    reason=f"PVC {ns}/{name} was not bound to a volume within "
                    f"{self.bind_timeout:.0f}s",
                )
            else:
                entry.update(result="pending", reason=f"waiting for PVC {ns}/{name} to be bound")
            return
        capacity = quantity(((pv.get("spec") or {}).get("capacity") or {}).get("storage"))
        if capacity and int(entry.get("size") or 0) > capacity:
            entry.update(
                result="failed",
                reason=f"PV {pv_name} holds {capacity} bytes; the volume needs {entry['size']}",
            )
            return
        live = agent_leases.live_nodes(self.kube, self.agent_namespace)
        node = node or claim_node(self.kube, pvc, live)
        if node not in live:
            entry.update(result="failed", reason=f"no mover node agent runs on node {node}")
            return
        item = self._create_item(restore, repo_name, entry, node, pv_name)
        entry.update(result="pending", reason="", volumeRestore=item)

    def _create_item(self, restore: Obj, repo_name: str, entry: Obj, node: str, pv: str) -> str:
        """The VolumeRestore of `entry` (made by an earlier pass: kept); its name."""
        meta = restore["metadata"]
        ns, name = entry["namespace"], entry["name"]
        item = item_name(meta["name"], ns, name)
        body = {
            "apiVersion": api.API_VERSION,
            "kind": "VolumeRestore",
            "metadata": {
                "name": item,
                "namespace": meta["namespace"],
                "labels": {api.NODE_LABEL: node, api.RESTORE_LABEL: meta["name"]},
                "ownerReferences": [owner_ref(restore)],
            },
            "spec": {
                "restore": meta["name"],
                "repository": repo_name,
                "node": node,
                "pvc": {"namespace": ns, "name": name},
                "pv": pv,
                "snapshot": entry["snapshot"],
                "sourceTree": entry.get("sourceTree", ""),
                "cancel": False,
            },
        }
        try:
            self.kube.create(api.VOLUME_RESTORE, body)
        except KubeError as exc:
            if exc.status != 409:
                raise
        return item

    def track(self, restore: Obj, volumes: list[Obj]) -> bool:
        """Update the pending `volumes` entries from their VolumeRestores (handing out those
        whose claim was not bound yet); whether any changed."""
        meta, status = restore["metadata"], restore.get("status") or {}
        changed = False
        for entry in volumes:
            if entry.get("result") != "pending":
                continue
            if not entry.get("volumeRestore"):
                before = dict(entry)
                self.try_hand_out(restore, str(status.get("repository") or ""), entry, None)
                changed = changed or entry != before
                continue
            item = self.kube.find(api.VOLUME_RESTORE, meta["namespace"], entry["volumeRestore"])
            if item is None:
                entry.update(result="failed", reason="its VolumeRestore was deleted")
                changed = True
                continue
            item_status = item.get("status") or {}
            phase = item_status.get("phase")
            if phase == api.COMPLETED:
                entry.update(result="restored", reason="")
                changed = True
            elif phase in (api.FAILED, api.CANCELLED):
                entry.update(result="failed", reason=item_status.get("message") or phase)
                changed = True
        return changed

    def cancel(self, restore: Obj, volumes: list[Obj]) -> bool:
        """Ask the agents to stop the pending `volumes` entries' work (they stop at their next
        chunk) and settle the entries whose work has ended; whether any still runs."""
        meta = restore["metadata"]
        running = False
        for entry in volumes:
            if entry.get("result") != "pending":
                continue
            item = (
                self.kube.find(api.VOLUME_RESTORE, meta["namespace"], entry["volumeRestore"])
                if entry.get("volumeRestore")
                else None
            )
            phase = ((item or {}).get("status") or {}).get("phase") or api.NEW
            if item is not None and phase not in api.DONE_PHASES:
                running = True
                if not (item.get("spec") or {}).get("cancel"):
                    self.kube.patch(
                        api.VOLUME_RESTORE,
                        meta["namespace"],
                        entry["volumeRestore"],
                        {"spec": {"cancel": True}},
                    )
                continue
            entry.update(
                result="restored" if phase == api.COMPLETED else "failed",
                reason="" if phase == api.COMPLETED else "cancelled",
            )
        return running
