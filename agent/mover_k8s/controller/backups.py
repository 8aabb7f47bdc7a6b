"""Reconciling a Backup: validate, capture, store the objects, hand each volume to the agent of
its node (a VolumeBackup), wait, then write the manifest and the root hash.

Level-triggered: every step reads what the status says was done and does the next one, so a
controller restart carries on where the last one stopped. Everything that can be wrong with the
input (scope, repository, namespaces, volumes nobody can read) is found before anything is
stored or created: a Backup that fails validation leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import logging
from datetime import UTC, datetime

from mover import api as mover_api
from mover.errors import MoverError
from mover_k8s import agent_leases, api, hooks, store, views
from mover_k8s.capture import Scope, capture
from mover_k8s.conditions import condition, set_condition, set_condition_of
from mover_k8s.controller import cbt_bases
from mover_k8s.controller.common import item_name, owner_ref, parse_ttl
from mover_k8s.errors import KubeError, NotFound, SpecError
from mover_k8s.k8s.client import Kube, Obj
from mover_k8s.repo_access import Repositories
from mover_k8s.timestamps import now
from mover_k8s.views import BackupView, Meta, WorkItem
from mover_k8s.volumes import Volume, plan

log = logging.getLogger("mover.k8s.backup")


def age_seconds(obj: Obj) -> float:
    stamp = obj["metadata"].get("creationTimestamp")
    if not stamp:
        return 0.0
    created = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    return (datetime.now(UTC) - created).total_seconds()


class BackupReconciler:
    def __init__(
        self, kube: Kube, repos: Repositories, agent_namespace: str, agent_grace: float = 60.0
    ) -> None:
        self.kube = kube
        self.repos = repos
        self.agent_namespace = agent_namespace
        # A Backup made while the agents start (a fresh install, a node reboot) waits this long
        # for the agent of its volumes' node before it fails with NoAgent.
        self.agent_grace = agent_grace

    def reconcile(self, backup: Obj) -> None:
        view = BackupView.of(backup)
        phase = view.phase or api.NEW
        if phase in api.DONE_PHASES:
            self._expire(backup)
            return
        if view.cancel:
            self._cancel(backup)
        elif phase == api.NEW:
            self._start(backup)
        else:
            self._advance(backup)

    def _cancel(self, backup: Obj) -> None:
        """spec.cancel: stop the volumes' work, then forget what was stored for this Backup,
        so a cancelled Backup leaves nothing behind in the repository."""
        meta, status = backup["metadata"], backup.get("status") or {}
        entries: list[Obj] = [dict(e) for e in status.get("volumes") or []]
        running = False
        for entry in entries:
            item = self.kube.find(api.VOLUME_BACKUP, meta["namespace"], entry["volumeBackup"])
            phase = views.status(item).get("phase") or api.NEW
            if item is None or phase in api.DONE_PHASES:
                entry["phase"] = phase if item is not None else api.CANCELLED
                entry["snapshot"] = views.status(item).get("snapshot", "")
                continue
            running = True
            if not WorkItem.of(item).cancel:
                self.kube.patch(
                    api.VOLUME_BACKUP,
                    meta["namespace"],
                    entry["volumeBackup"],
                    {"spec": {"cancel": True}},
                )
        if running:
            return  # the agents stop at their next chunk; the next pass finishes
        stored = [status.get("objectsSnapshot")] + [e.get("snapshot") for e in entries]
        stored_ids = [i for i in stored if i]
        if stored_ids:
            try:
                repo = self.repos.open(meta["namespace"], BackupView.of(backup).repository)
                try:
                    present = {s.id for s in repo.snapshots()}
                    mover_api.forget(repo, [i for i in stored_ids if i in present])
                finally:
                    repo.close()
            except SpecError as exc:
                log.warning(
                    "cancelled backup %s: cannot forget its snapshots: %s", meta["name"], exc
                )
        if status.get("volumes"):
            self._delete_snapshots(backup)
        self._post_hooks(backup)
        message = "cancelled; nothing of it is kept in the repository"
        log.info("backup %s/%s %s", meta["namespace"], meta["name"], message)
        self._patch(
            backup,
            {
                "phase": api.CANCELLED,
                "completionTimestamp": now(),
                "volumes": entries,
                "conditions": set_condition_of(backup, "Ready", False, "Cancelled", message),
            },
        )

    # -- status --

    def _patch(self, backup: Obj, status: Obj) -> None:
        meta = backup["metadata"]
        status["observedGeneration"] = meta.get("generation", 1)
        self.kube.patch_status(api.BACKUP, meta["namespace"], meta["name"], status)
        backup.setdefault("status", {}).update(status)

    def _fail(
        self,
        backup: Obj,
        reason: str,
        message: str,
        phase: str = api.FAILED,
        extra: Obj | None = None,
    ) -> None:
        log.info("backup %s failed: %s", backup["metadata"]["name"], message)
        conditions = set_condition_of(backup, "Ready", False, reason, message)
        self._patch(
            backup,
            {"phase": phase, "completionTimestamp": now(), "conditions": conditions}
            | (extra or {}),
        )

    # -- hooks --

    def _thaw(self, owed: list[hooks.Hook], records: list[Obj]) -> Obj:
        """The start failed after the pre hooks ran: run the post hooks owed now; what to record."""
        if not owed and not records:
            return {}
        post, _ = hooks.run(self.kube, owed, stop_on_failure=False)
        owed.clear()
        return {"hooks": records + post}

    def _post_hooks(self, backup: Obj) -> str | None:
        """Run the post hooks still owed (status.postHooks), record them, and say why the first
        one with onError=Fail failed, if one did (also after a restart: status.hookFailure)."""
        status = backup.get("status") or {}
        pending = [hooks.Hook.of(h) for h in status.get("postHooks") or []]
        if not pending:
            return status.get("hookFailure") or None
        records, failure = hooks.run(self.kube, pending, stop_on_failure=False)
        self._patch(
            backup,
            {
                "hooks": list(status.get("hooks") or []) + records,
                "postHooks": [],
                "hookFailure": failure or "",
            },
        )
        return failure

    # -- steps --

    def _start(self, backup: Obj) -> None:
        meta, spec = backup["metadata"], backup.get("spec") or {}
        namespace, name = meta["namespace"], meta["name"]
        started = now()
        owed: list[hooks.Hook] = []  # post hooks due once pre hooks ran
        records: list[Obj] = []
        try:
            ttl = parse_ttl(str(spec.get("ttl") or ""))
            scope = Scope.of(spec)
            repo_name = str(spec.get("repository") or "")
            if not repo_name:
                raise SpecError("InvalidRepository", "spec.repository names no Repository")
            repo = self.repos.open(namespace, repo_name)
            try:
                captured = capture(self.kube, scope)
                volumes: list[Volume] = []
                if spec.get("snapshotVolumes", True) is not False:
                    nodes = agent_leases.live_nodes(self.kube, self.agent_namespace)
                    volumes = plan(self.kube, captured.objects, nodes)
                # A claim not bound to a volume holds no data yet (e.g. it waits for its first
                # consumer): nothing to back up, noted in the status, not a failure.
                unbound = [v for v in volumes if v.problem and v.problem[0] == "VolumeNotBound"]
                volumes = [v for v in volumes if v not in unbound]
                problems = [v.problem for v in volumes if v.problem]
                only_agents = all(p[0] == "NoAgent" for p in problems)
                if problems and only_agents and age_seconds(backup) < self.agent_grace:
                    self._waiting_for_agent(backup, problems[0][1])
                    return
                if problems:
                    raise SpecError(problems[0][0], "; ".join(p[1] for p in problems))
                # Hooks are read (and a bad one fails the Backup) before anything runs; the pre
                # hooks run before anything is stored or any volume work is handed out.
                hook_plan = hooks.plan(spec, captured.objects, self.kube)
                records, failure = hooks.run(self.kube, [h for h in hook_plan if h.phase == "pre"])
                owed = hooks.owed_post_hooks(hook_plan, records, failure is not None)
                if failure:
                    post, _ = hooks.run(self.kube, owed, stop_on_failure=False)
                    owed = []
                    self._fail(backup, "HookFailed", failure, extra={"hooks": records + post})
                    return
                doc = captured.document(self.kube.host, scope)
                stored = store.store_document(
                    repo, doc, store.source_name(namespace, name, "objects")
                )
                entries = []
                for volume in volumes:
                    entry = volume.status()
                    entry["volumeBackup"], source = self._create_item(backup, repo_name, volume)
                    if "volumeSnapshot" in source:
                        entry["volumeSnapshot"] = source["volumeSnapshot"]
                    entry["phase"] = api.NEW
                    entries.append(entry)
            finally:
                repo.close()
        except SpecError as exc:
            self._fail(backup, exc.reason, str(exc), extra=self._thaw(owed, records))
            return
        except KubeError:
            self._thaw(owed, records)
            raise  # the API failed, not the backup: retried on the next pass
        except MoverError as exc:
            self._fail(backup, "StorageFailed", str(exc), extra=self._thaw(owed, records))
            return
        status: Obj = {
            "phase": api.WAITING if entries else api.IN_PROGRESS,
            "startTimestamp": started,
            "objectsSnapshot": stored.id,
            "objectsTree": stored.tree,
            "objectCount": len(captured.objects),
            "volumeCount": len(entries),
            "volumes": entries,
            "hooks": records,
            "postHooks": [h.to_obj() for h in owed],
            "skippedVolumes": [
                {
                    "namespace": v.namespace,
                    "pvc": v.pvc,
                    "reason": v.problem[1] if v.problem else "",
                }
                for v in unbound
            ],
            "conditions": set_condition(
                None,
                "Ready",
                False,
                "WaitingForVolumes" if entries else "InProgress",
                f"captured {len(captured.objects)} objects; {len(entries)} volume(s) to back up",
                meta.get("generation"),
            ),
        }
        if ttl:
            expiration = datetime.now(UTC) + ttl
            status["expiration"] = expiration.strftime("%Y-%m-%dT%H:%M:%SZ")
        self._patch(backup, status)
        if not entries:
            self._finish(backup)

    def _waiting_for_agent(self, backup: Obj, message: str) -> None:
        conditions = set_condition_of(
            backup,
            "Ready",
            None,
            "WaitingForAgent",
            f"{message} (waiting up to {self.agent_grace:.0f}s for it to start)",
        )
        self.kube.patch_status(
            api.BACKUP,
            backup["metadata"]["namespace"],
            backup["metadata"]["name"],
            {"conditions": conditions},
        )

    def _create_item(
        self, backup: Obj, repo_name: str, volume: Volume
    ) -> tuple[str, dict[str, str]]:
        """The VolumeBackup's name and where it reads the volume."""
        meta = backup["metadata"]
        name = item_name(meta["name"], volume.namespace, volume.pvc)
        source = dict(volume.source)
        changed_blocks = None
        if "volumeSnapshotClass" in source:
            source = {
                "volumeSnapshot": self._snapshot(backup, volume, source["volumeSnapshotClass"])
            }
            repository = f"{meta['namespace']}/{repo_name}"
            changed_blocks = cbt_bases.find_base(
                self.kube, volume.namespace, volume.pvc, repository
            )
        item: Obj = {
            "apiVersion": api.API_VERSION,
            "kind": "VolumeBackup",
            "metadata": {
                "name": name,
                "namespace": meta["namespace"],
                "labels": {api.NODE_LABEL: volume.node, api.BACKUP_LABEL: meta["name"]},
                "ownerReferences": [owner_ref(backup)],
            },
            "spec": {
                "backup": meta["name"],
                "repository": repo_name,
                "node": volume.node,
                "pvc": {"namespace": volume.namespace, "name": volume.pvc},
                "pv": volume.pv,
                "source": source,
                "cancel": False,
            },
        }
        if changed_blocks is not None:  # read only what changed since this base
            item["spec"]["changedBlocks"] = changed_blocks
        try:
            self.kube.create(api.VOLUME_BACKUP, item)
        except KubeError as exc:
            if exc.status != 409:  # made by an earlier pass: keep it
                raise
        return name, source

    def _snapshot(self, backup: Obj, volume: Volume, snapshot_class: str) -> str:
        """A CSI VolumeSnapshot of the PVC, in its namespace (where snapshots must live)."""
        name = item_name(backup["metadata"]["name"], volume.namespace, volume.pvc)
        body = {
            "apiVersion": "snapshot.storage.k8s.io/v1",
            "kind": "VolumeSnapshot",
            "metadata": {
                "name": name,
                "namespace": volume.namespace,
                "labels": {api.BACKUP_LABEL: backup["metadata"]["name"]},
            },
            "spec": {
                "volumeSnapshotClassName": snapshot_class,
                "source": {"persistentVolumeClaimName": volume.pvc},
            },
        }
        try:
            self.kube.create(api.VOLUME_SNAPSHOT, body)
        except KubeError as exc:
            if exc.status != 409:
                raise
        return name

    def _advance(self, backup: Obj) -> None:
        meta, status = backup["metadata"], backup.get("status") or {}
        entries: list[Obj] = [dict(e) for e in status.get("volumes") or []]
        changed = False
        for entry in entries:
            if entry.get("phase") in api.DONE_PHASES:
                continue
            item = self.kube.find(api.VOLUME_BACKUP, meta["namespace"], entry["volumeBackup"])
            if item is None:
                entry.update(phase=api.FAILED, message="its VolumeBackup was deleted")
                changed = True
                continue
            item_status = item.get("status") or {}
            phase = item_status.get("phase") or api.NEW
            if phase != entry.get("phase"):
                changed = True
                entry["phase"] = phase
                entry["message"] = item_status.get("message", "")
                if phase == api.COMPLETED:
                    entry["snapshot"] = item_status.get("snapshot", "")
                    entry["tree"] = item_status.get("tree", "")
        if changed:
            self._patch(backup, {"volumes": entries})
        if all(e.get("phase") in api.DONE_PHASES for e in entries):
            self._finish(backup)
            return
        # Work waits for an agent that went away (a node reboot, a rollout): say so, and keep
        # the work; the agent carries on when it is back.
        live = agent_leases.live_nodes(self.kube, self.agent_namespace)
        orphaned = sorted(
            {str(e.get("node")) for e in entries if e.get("phase") not in api.DONE_PHASES} - live
        )
        reason = "WaitingForAgent" if orphaned else "WaitingForVolumes"
        if (condition(backup, "Ready") or {}).get("reason") != reason:
            message = (
                f"no mover node agent runs on {', '.join(orphaned)}; its volumes wait for it"
                if orphaned
                else "volumes are being backed up"
            )
            conditions = set_condition_of(
                backup, "Ready", None if orphaned else False, reason, message
            )
            self._patch(backup, {"conditions": conditions})

    def _finish(self, backup: Obj) -> None:
        hook_failure = self._post_hooks(backup)  # the volumes are read: thaw first
        meta, spec, status = backup["metadata"], backup.get("spec") or {}, backup["status"]
        entries: list[Obj] = status.get("volumes") or []
        done = [e for e in entries if e.get("phase") == api.COMPLETED]
        manifest = {
            "format": store.MANIFEST_FORMAT,
            "backup": {
                "namespace": meta["namespace"],
                "name": meta["name"],
                "uid": meta.get("uid"),
            },
            "cluster": self.kube.host,
            "started": status.get("startTimestamp"),
            "objects": {
                "snapshot": status["objectsSnapshot"],
                "tree": status["objectsTree"],
                "count": status.get("objectCount", 0),
            },
            "volumes": [
                {
                    k: e.get(k)
                    for k in ("namespace", "pvc", "pv", "storageClass", "size", "snapshot", "tree")
                }
                for e in done
            ],
        }
        try:
            repo = self.repos.open(meta["namespace"], str(spec.get("repository")))
            try:
                stored = store.store_document(
                    repo, manifest, store.source_name(meta["namespace"], meta["name"], "manifest")
                )
            finally:
                repo.close()
        except SpecError as exc:
            self._fail(backup, exc.reason, str(exc))
            return
        except KubeError:
            raise
        except MoverError as exc:
            self._fail(backup, "StorageFailed", str(exc))
            return
        self._delete_snapshots(backup, keep_bases=True)
        failed = [e for e in entries if e.get("phase") != api.COMPLETED]
        result: Obj = {
            "manifestSnapshot": stored.id,
            "rootHash": stored.tree,
            "completionTimestamp": now(),
        }
        if failed:
            names = ", ".join(
                f"{e['namespace']}/{e['pvc']}: {e.get('message') or e.get('phase')}" for e in failed
            )
            result["phase"] = api.PARTIALLY_FAILED
            result["conditions"] = set_condition_of(
                backup,
                "Ready",
                False,
                "VolumeFailed",
                f"objects and {len(done)} volume(s) stored; failed: {names}",
            )
        elif hook_failure:
            result["phase"] = api.PARTIALLY_FAILED
            result["conditions"] = set_condition_of(
                backup,
                "Ready",
                False,
                "HookFailed",
                f"objects and {len(done)} volume(s) stored; {hook_failure}",
            )
        else:
            result["phase"] = api.COMPLETED
            result["conditions"] = set_condition_of(
                backup,
                "Ready",
                True,
                "Completed",
                f"{status.get('objectCount', 0)} objects and {len(done)} volume(s) stored; "
                f"root {stored.tree[:16]}",
            )
        self._patch(backup, result)

    def _delete_snapshots(self, backup: Obj, keep_bases: bool = False) -> None:
        """The CSI snapshots were only a consistent point to read from: once the data is in
        the repository they would cost storage for nothing. Only those this Backup made; with
        `keep_bases`, a stored volume's snapshot stays when its driver offers changed block
        tracking, as the base of the claim's next backup (cbt_bases)."""
        view = BackupView.of(backup)
        for entry in view.volumes:
            if (
                keep_bases
                and entry.get("volumeSnapshot")
                and entry.get("phase") == api.COMPLETED
                and cbt_bases.keep_as_base(self.kube, entry, view.repository_key)
            ):
                continue
            name = entry.get("volumeSnapshot")
            snapshot = (
                self.kube.find(api.VOLUME_SNAPSHOT, entry["namespace"], name) if name else None
            )
            labels = Meta.of(snapshot).labels
            if snapshot is not None and labels.get(api.BACKUP_LABEL) == view.meta.name:
                self.kube.delete(api.VOLUME_SNAPSHOT, entry["namespace"], str(name))

    def _expire(self, backup: Obj) -> None:
        """After its TTL a Backup's snapshots are forgotten in the repository (the objects, the
        manifest, every volume), then its work items and the Backup go. Forgetting drops the
        references; the space comes back with `mover prune`, the repository owner's call (it
        takes the repository's exclusive lock). If the repository cannot be reached the Backup
        stays, so that its data is never orphaned unnamed."""
        status = backup.get("status") or {}
        expiration = status.get("expiration")
        if not expiration:
            return
        when = datetime.strptime(expiration, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        if when > datetime.now(UTC):
            return
        meta = backup["metadata"]
        ids = [status.get("manifestSnapshot"), status.get("objectsSnapshot")]
        ids += [v.get("snapshot") for v in status.get("volumes") or []]
        try:
            repo = self.repos.open(meta["namespace"], BackupView.of(backup).repository)
            try:
                present = {s.id for s in repo.snapshots()}
                mover_api.forget(repo, [i for i in ids if i and i in present])
            finally:
                repo.close()
        except MoverError as exc:
            if isinstance(exc, KubeError):
                raise
            conditions = set_condition_of(
                backup,
                "Expired",
                False,
                "ExpiryFailed",
                f"expired, but its snapshots could not be forgotten: {exc}",
            )
            self._patch(backup, {"conditions": conditions})
            return
        selector = f"{api.BACKUP_LABEL}={meta['name']}"
        for item in self.kube.list(api.VOLUME_BACKUP, meta["namespace"], label_selector=selector):
            self.kube.delete(api.VOLUME_BACKUP, meta["namespace"], item["metadata"]["name"])
        with contextlib.suppress(NotFound):
            self.kube.delete(api.BACKUP, meta["namespace"], meta["name"])
        log.info(
            "backup %s/%s expired: snapshots forgotten, deleted", meta["namespace"], meta["name"]
        )
