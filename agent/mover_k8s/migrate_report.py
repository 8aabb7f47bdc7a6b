"""The report of a migration (mover_k8s.migrate), per app, read once its runs are done: objects
and volumes its Restores restored, the bytes moved (stored by its Backups, as the source
repository's snapshots say; replicated; fetched, written and left unchanged by its
VolumeRestores), the external names its objects recorded, and the drift against git."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from mover.api import Repository
from mover.errors import MoverError
from mover_k8s import api, store
from mover_k8s.k8s.client import Obj
from mover_k8s.migrate_plan import FINAL, AppRun, Notify, Plan, Side
from mover_k8s.repo_access import Repositories


def snapshot_ids(backup: Obj) -> list[str]:
    """The snapshots a Backup stored: its objects, its manifest, its volumes."""
    status = backup.get("status") or {}
    ids = [status.get("objectsSnapshot"), status.get("manifestSnapshot")]
    ids += [v.get("snapshot") for v in status.get("volumes") or []]
    return [str(i) for i in ids if i]


def app_report(
    run: AppRun,
    plan: Plan,
    uploaded: dict[str, int] | None,
    volume_items: dict[str, list[Obj]],
    drift: Obj | None,
) -> Obj:
    """One app's report; `uploaded`: bytes stored by snapshot (stored_bytes), `volume_items`:
    VolumeRestores by Restore (volume_restores), `drift`: against git (drifts)."""
    # From the reports' entries: a Restore's status.counts may predate the workloads it
    # created last (once the volumes' data was in).
    counts = {"created": 0, "updated": 0, "skipped": 0, "failed": 0}
    for restore in run.restores.values():
        report = (restore.get("status") or {}).get("report") or {}
        for entry in report.get("objects") or []:
            if entry.get("result") in counts:
                counts[str(entry["result"])] += 1
    final = run.restores.get(FINAL) or {}
    final_report = (final.get("status") or {}).get("report") or {}
    volumes = final_report.get("volumes") or []
    if not final:  # seeds only: what the last seed restored
        seeds = [r for k, r in sorted(run.restores.items()) if k != FINAL]
        volumes = (
            ((seeds[-1].get("status") or {}).get("report") or {}).get("volumes") or []
            if seeds
            else []
        )
    items = [
        item
        for restore in run.restores.values()
        for item in volume_items.get(restore["metadata"]["name"], [])
    ]
    fetched = sum(
        int(s.get("bytesFetched", s.get("bytesWritten", 0)) or 0)
        for s in (i.get("status") or {} for i in items)
    )
    written = sum(int((i.get("status") or {}).get("bytesWritten") or 0) for i in items)
    unchanged = sum(int((i.get("status") or {}).get("bytesUnchanged") or 0) for i in items)
    stored = None
    if uploaded is not None:
        stored = sum(uploaded.get(i, 0) for b in run.backups.values() for i in snapshot_ids(b))
    return {
        "app": run.app,
        "target": run.target,
        "state": run.state,
        "failedStep": run.failed_step,
        "error": run.error,
        "seconds": round((run.ended or time.monotonic()) - run.started, 3) if run.started else 0.0,
        "backups": [run.name(plan, k) for k in run.backups],
        "restores": [run.name(plan, k) for k in run.restores],
        "objects": counts,
        "volumes": {
            "restored": sum(1 for v in volumes if v.get("result") == "restored"),
            "total": len(volumes),
            "bytes": sum(int(v.get("size") or 0) for v in volumes),
        },
        "bytes": {
            "stored": stored,
            "replicated": run.replicated,
            "fetched": fetched,
            "written": written,
            "unchanged": unchanged,
            "moved": (stored or 0) + run.replicated + fetched,
        },
        "external": list(final_report.get("external") or []),
        "drift": drift,
    }


def stored_bytes(repos: Repositories, source: Side, notify: Notify) -> dict[str, int] | None:
    """Snapshot id -> bytes its backup stored (new data, compressed and encrypted), read
    once from the source repository; None when it cannot be read."""
    try:
        repo = repos.open(source.namespace, source.repository)
    except MoverError as exc:
        notify(f"bytes stored not known: {exc}")
        return None
    try:
        return {s.id: int((s.stats or {}).get("stored_bytes") or 0) for s in repo.snapshots()}
    finally:
        repo.close()


def volume_restores(target: Side, plan: Plan, runs: list[AppRun]) -> dict[str, list[Obj]]:
    """The target's VolumeRestores of this migration's Restores, by Restore name."""
    found: dict[str, list[Obj]] = {}
    names = {run.name(plan, k) for run in runs for k in run.restores}
    if not names:
        return found
    for item in target.kube.list(api.VOLUME_RESTORE, target.namespace):
        owner = (item["metadata"].get("labels") or {}).get(api.RESTORE_LABEL)
        if owner in names:
            found.setdefault(str(owner), []).append(item)
    return found


def drifts(repos: Repositories, source: Side, desired: Path, runs: list[AppRun]) -> dict[str, Obj]:
    """App -> the drift of its last captured state against git (see drift_of)."""
    result: dict[str, Obj] = {}
    done = [r for r in runs if r.backups]
    if not done:
        return result
    repo = repos.open(source.namespace, source.repository)
    try:
        for run in done:
            last = run.backups.get(FINAL) or run.backups[sorted(run.backups)[-1]]
            try:
                result[run.app] = drift_of(repo, last, desired, run.app)
            except (MoverError, OSError) as exc:
                result[run.app] = {"error": str(exc)}
    finally:
        repo.close()
    return result


def drift_of(repo: Repository, backup: Obj, desired: Path, app: str) -> Obj:
    """What the Backup captured of `app` against git: `desired/APP` when that is a directory,
    else `desired`, its objects of that namespace (and the Namespace itself, and cluster-scoped
    objects the Backup captured) only."""
    from mover_k8s.diff import desired_source, diff, group_of, key_of, load_desired

    status = backup.get("status") or {}
    manifest = repo.find_snapshot(str(status["manifestSnapshot"]))
    doc = store.verify_manifest(repo, manifest, status.get("rootHash"))
    live = list(store.load_document(repo, doc["objects"]["snapshot"]).get("objects") or [])
    directory = desired / app if (desired / app).is_dir() else desired
    wanted_all = load_desired(desired_source(directory), app)
    captured = {key_of(o) for o in live}
    namespaced = {
        (group_of(o), str(o.get("kind")))
        for o in live
        if (o.get("metadata") or {}).get("namespace")
    }

    def mine(obj: Obj) -> bool:
        meta = obj.get("metadata") or {}
        if meta.get("namespace"):
            return bool(meta["namespace"] == app)
        if (group_of(obj), str(obj.get("kind"))) in namespaced:
            return True  # no namespace written: it is the app's (as `kubectl apply -n APP`)
        if obj.get("kind") == "Namespace":
            return bool(meta.get("name") == app)
        return key_of(obj) in captured  # a cluster-scoped object this app uses

    wanted = [o for o in wanted_all if mine(o)]
    report = diff(live, wanted, app)
    return {
        "desired": str(directory),
        "onlyInCluster": len(report.only_in_cluster),
        "onlyInGit": len(report.only_in_git),
        "changed": len(report.changed),
        "unchanged": report.same,
        "drift": report.drift,
        "details": report.as_dict(),
    }


def summary(reports: list[Obj]) -> Obj:
    """Totals over the apps."""
    total: dict[str, Any] = {
        "apps": len(reports),
        "completed": sum(1 for r in reports if r["state"] == "completed"),
        "failed": sum(1 for r in reports if r["state"] == "failed"),
        "objectsCreated": sum(r["objects"]["created"] for r in reports),
        "volumesRestored": sum(r["volumes"]["restored"] for r in reports),
        "bytesMoved": sum(r["bytes"]["moved"] for r in reports),
        "external": sum(len(r["external"]) for r in reports),
    }
    return total
