"""What the dashboard's pages show, as plain dicts (the JSON endpoints return the same).

Everything is read per request from the API server (mover's objects through the session's
`reader`, what needs the user's own rights through its `actor`), filtered by what the user may
see (mover_k8s.ui.access). Nothing is cached here: the controller's objects are the state.

Progress (mover_k8s.progress) and what a Backup captured (mover_k8s.captured) are the command
line's too; `state_of` here is the dashboard's own (a dict for a badge, not a line of text).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from croniter import croniter

from mover import api as mover_api
from mover.errors import MoverError
from mover_k8s import api, captured
from mover_k8s.agent_leases import LEASE_SECONDS, PREFIX
from mover_k8s.apps import APP_LABEL, SYSTEM_NAMESPACES
from mover_k8s.captured import by_kind
from mover_k8s.conditions import condition
from mover_k8s.errors import KubeError
from mover_k8s.k8s.client import Kube, Obj
from mover_k8s.progress import item_progress, total_progress, volume_entries, work_items
from mover_k8s.repo_access import Repositories
from mover_k8s.timestamps import parse as parse_time
from mover_k8s.ui.access import LIST_REPOSITORIES, SEE, Session
from mover_k8s.verify import verify_backup

# A scheduled run counts as missed once it is this late (the Backup is made at the due time,
# and takes a while): the RPO is met while the newest Completed Backup was made at or after the
# latest due time older than this.
RUN_GRACE = timedelta(minutes=30)


def now() -> datetime:
    return datetime.now(UTC)


def _created(obj: Obj) -> datetime | None:
    return parse_time(str(obj["metadata"].get("creationTimestamp") or ""))


def _ended(obj: Obj) -> datetime | None:
    return parse_time(str((obj.get("status") or {}).get("completionTimestamp") or ""))


def age(when: datetime | None, at: datetime | None = None) -> str:
    if when is None:
        return ""
    return mover_api.format_age(max(0.0, ((at or now()) - when).total_seconds()))


def phase_of(obj: Obj) -> str:
    return str((obj.get("status") or {}).get("phase") or api.NEW)


def state_of(obj: Obj) -> Obj:
    """{"phase", "reason", "message"}: the Ready condition's (or a Failed one's) reason and
    message unless it is Ready."""
    found = condition(obj, "Ready") or condition(obj, "Failed") or {}
    ready = found.get("type") == "Ready" and found.get("status") == "True"
    reason = "" if ready else str(found.get("reason") or "")
    return {
        "phase": phase_of(obj),
        "reason": "" if reason == phase_of(obj) else reason,
        "message": "" if ready else str(found.get("message") or ""),
    }


# -- progress ------------------------------------------------------------------------------


def progress_text(progress: Obj) -> Obj:
    """The numbers of a progress as people read them."""
    done, total = int(progress.get("bytesDone") or 0), int(progress.get("bytesTotal") or 0)
    rate = progress.get("bytesPerSecond")
    eta = progress.get("etaSeconds")
    return {
        "done": mover_api.format_size(done),
        "total": mover_api.format_size(total) if total else "",
        "percent": min(100, int(done * 100 / total)) if total else None,
        "rate": mover_api.format_rate(rate) if rate else "",
        "eta": mover_api.format_duration(eta) if eta and done < total else "",
    }


def progress_of(kube: Kube, obj: Obj) -> Obj:
    """A Backup's or Restore's phase and its volumes' progress, for the live views."""
    key = "volumeBackup" if obj.get("kind") == "Backup" else "volumeRestore"
    entries = volume_entries(obj)
    sizes = {str(e[key]): int(e.get("size") or 0) for e in entries if e.get(key)}
    items = work_items(kube, obj)
    by_name = {i["metadata"]["name"]: i for i in items}
    volumes = []
    for entry in entries:
        item = by_name.get(str(entry.get(key) or ""))
        progress = item_progress(item) if item is not None else {}
        if item is not None and not progress.get("bytesTotal") and entry.get("size"):
            progress["bytesTotal"] = int(entry["size"])
        volumes.append(
            {
                "namespace": entry.get("namespace", ""),
                "name": entry.get("pvc") or entry.get("name") or "",
                "phase": ((item or {}).get("status") or {}).get("phase")
                or entry.get("phase")
                or entry.get("result")
                or "",
                "progress": progress,
                "text": progress_text(progress),
            }
        )
    total = total_progress(items, sizes)
    done = sum(1 for i in items if (i.get("status") or {}).get("phase") in api.DONE_PHASES)
    return {
        "kind": obj.get("kind"),
        "name": obj["metadata"]["name"],
        **state_of(obj),
        "done": phase_of(obj) in api.DONE_PHASES,
        "volumesDone": done,
        "volumeCount": len(items),
        "progress": total,
        "text": progress_text(total),
        "volumes": volumes,
    }


# -- applications --------------------------------------------------------------------------


def _labels_match(labels: dict[str, str], selector: Obj) -> bool:
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        if (op == "In" and labels.get(key) not in values) or (
            op == "NotIn" and labels.get(key) in values
        ):
            return False
        if (op == "Exists" and key not in labels) or (op == "DoesNotExist" and key in labels):
            return False
    return True


def backup_namespaces(backup: Obj) -> list[str]:
    """The apps (namespaces) a Backup captures: its includedNamespaces, else its app label."""
    named = list((backup.get("spec") or {}).get("includedNamespaces") or [])
    label = (backup["metadata"].get("labels") or {}).get(APP_LABEL)
    return named or ([str(label)] if label else [])


def schedule_covers(schedule: Obj, namespace: Obj) -> bool:
    spec = schedule.get("spec") or {}
    name = namespace["metadata"]["name"]
    template = spec.get("template") or {}
    if name in (template.get("includedNamespaces") or []):
        return True
    if not spec.get("perNamespace") or name in (spec.get("excludedNamespaces") or []):
        return False
    selector = spec.get("namespaceSelector")
    labels = namespace["metadata"].get("labels") or {}
    return selector is not None and _labels_match(labels, selector)


def rpo(schedule: Obj, last_success: Obj | None, at: datetime) -> Obj:
    """Whether a Schedule's last due run produced a Completed Backup: {"state": met | missed |
    paused | invalid, "due", "period"}."""
    spec = schedule.get("spec") or {}
    expression = str(spec.get("schedule") or "")
    if spec.get("paused") or spec.get("suspend"):
        return {"state": "paused", "due": "", "period": ""}
    if not croniter.is_valid(expression):
        return {"state": "invalid", "due": "", "period": ""}
    due: datetime = croniter(expression, at - RUN_GRACE).get_prev(datetime)
    after: datetime = croniter(expression, due).get_next(datetime)
    period = mover_api.format_duration((after - due).total_seconds())
    made = _created(last_success) if last_success else None
    created = _created(schedule)
    if made is not None and made >= due - timedelta(seconds=60):  # clocks differ a little
        state = "met"
    elif created is not None and created > due:
        state = "met" if made is not None else "pending"  # nothing was due since it was made
    else:
        state = "missed"
    return {"state": state, "due": due.isoformat(), "period": period}


def _newest(backups: Iterable[Obj]) -> Obj | None:
    done = [b for b in backups if phase_of(b) == api.COMPLETED]
    return max(done, key=lambda b: _ended(b) or _created(b) or now(), default=None)


@dataclass(frozen=True)
class Listing:
    namespaces: list[Obj]
    backups: list[Obj]
    restores: list[Obj]
    schedules: list[Obj]


def listing(session: Session, mover_namespace: str) -> Listing:
    reader = session.reader
    return Listing(
        reader.list(api.NAMESPACE),
        reader.list(api.BACKUP, mover_namespace),
        reader.list(api.RESTORE, mover_namespace),
        reader.list(api.SCHEDULE, mover_namespace),
    )


def visible_namespaces(session: Session, found: Listing, mover_namespace: str) -> list[Obj]:
    """The apps' namespaces the user may see: not the cluster's own nor mover's, not being
    deleted, and SEE granted there."""
    return sorted(
        (
            ns
            for ns in found.namespaces
            if ns["metadata"]["name"] not in SYSTEM_NAMESPACES
            and ns["metadata"]["name"] != mover_namespace
            and not ns["metadata"].get("deletionTimestamp")
            and session.may(SEE, ns["metadata"]["name"])
        ),
        key=lambda ns: str(ns["metadata"]["name"]),
    )


def application(namespace: Obj, found: Listing, at: datetime | None = None) -> Obj:
    """One app's protection: its schedules with their RPO, its last successful backup and its
    age, its volumes and their bytes, and how many backups run now."""
    at = at or now()
    name = namespace["metadata"]["name"]
    backups = [b for b in found.backups if name in backup_namespaces(b)]
    last = _newest(backups)
    schedules = []
    for schedule in found.schedules:
        if not schedule_covers(schedule, namespace):
            continue
        spec = schedule.get("spec") or {}
        own = [
            b
            for b in backups
            if (b["metadata"].get("labels") or {}).get(api.SCHEDULE_LABEL)
            == schedule["metadata"]["name"]
        ]
        schedules.append(
            {
                "name": schedule["metadata"]["name"],
                "cron": spec.get("schedule", ""),
                "rpo": rpo(schedule, _newest(own) or last, at),
            }
        )
    entries = list((last.get("status") or {}).get("volumes") or []) if last else []
    states = [s["rpo"]["state"] for s in schedules]
    if not schedules:
        protection = "unscheduled"
    elif "missed" in states:
        protection = "missed"
    elif "met" in states:
        protection = "met"
    else:
        protection = states[0]
    return {
        "name": name,
        "labels": namespace["metadata"].get("labels") or {},
        "protection": protection,
        "schedules": schedules,
        "lastBackup": last["metadata"]["name"] if last else "",
        "lastBackupAge": age(_ended(last) or _created(last), at) if last else "",
        "lastBackupTime": (last["status"].get("completionTimestamp") or "") if last else "",
        "backups": len(backups),
        "running": sum(1 for b in backups if phase_of(b) not in api.DONE_PHASES),
        "volumes": len(entries),
        "bytes": sum(int(e.get("size") or 0) for e in entries),
        "size": mover_api.format_size(sum(int(e.get("size") or 0) for e in entries)),
    }


def applications(session: Session, mover_namespace: str) -> list[Obj]:
    found = listing(session, mover_namespace)
    at = now()
    shown = visible_namespaces(session, found, mover_namespace)
    return [application(ns, found, at) for ns in shown]


def may_see_backup(session: Session, backup: Obj) -> bool:
    names = backup_namespaces(backup)
    return bool(names) and all(session.may(SEE, n) for n in names)


def restore_point(backup: Obj, at: datetime | None = None) -> Obj:
    status = backup.get("status") or {}
    entries = list(status.get("volumes") or [])
    size = sum(int(e.get("size") or 0) for e in entries)
    return {
        "name": backup["metadata"]["name"],
        "namespaces": backup_namespaces(backup),
        **state_of(backup),
        "created": backup["metadata"].get("creationTimestamp") or "",
        "age": age(_created(backup), at),
        "completed": status.get("completionTimestamp") or "",
        "objects": status.get("objectCount"),
        "volumes": [
            {
                "namespace": e.get("namespace", ""),
                "pvc": e.get("pvc", ""),
                "size": mover_api.format_size(int(e.get("size") or 0)),
                "phase": e.get("phase", ""),
                "snapshot": str(e.get("snapshot") or "")[:12],
            }
            for e in entries
        ],
        "size": mover_api.format_size(size),
        "rootHash": status.get("rootHash") or "",
        "schedule": (backup["metadata"].get("labels") or {}).get(api.SCHEDULE_LABEL, ""),
        "expiration": status.get("expiration") or "",
    }


def restore_points(session: Session, mover_namespace: str, namespace: str) -> list[Obj]:
    """An app's Backups, newest first."""
    backups = [
        b
        for b in session.reader.list(api.BACKUP, mover_namespace)
        if namespace in backup_namespaces(b)
    ]
    backups.sort(key=lambda b: _created(b) or now(), reverse=True)
    at = now()
    return [restore_point(b, at) for b in backups]


def find_backup(session: Session, mover_namespace: str, name: str) -> Obj | None:
    """The Backup, when it exists and the user may see every app it captured."""
    backup = session.reader.find(api.BACKUP, mover_namespace, name)
    if backup is None or not may_see_backup(session, backup):
        return None
    return backup


def capture_of(session: Session, backup: Obj) -> Obj:
    """What a Backup captured, read back from its repository with the user's rights (the
    repository's password Secret): {"objects": N, "kinds": [{kind, group, count, objects}],
    "external": [...], "namespaces", "storageClasses"}; {"error": why} when it cannot be read."""
    status = backup.get("status") or {}
    if not status.get("objectsSnapshot"):
        return {"error": f"{phase_of(backup)}: nothing captured yet"}
    try:
        doc = read_capture(session, backup)
    except MoverError as exc:
        return {"error": str(exc)}
    objects = list(doc.get("objects") or [])
    classes = {
        str(cls)
        for obj in objects
        if obj.get("kind") == "PersistentVolumeClaim"
        and (cls := (obj.get("spec") or {}).get("storageClassName"))
    }
    return {
        **by_kind(objects),
        "namespaces": list(doc.get("namespaces") or []),
        "storageClasses": sorted(classes),
    }


def read_capture(session: Session, backup: Obj) -> Obj:
    """The capture document (read_backup)."""
    return read_backup(session, backup)[1]


def read_backup(session: Session, backup: Obj) -> tuple[Obj, Obj]:
    """(the manifest, the capture document) of a Backup, read from its repository with the
    user's rights; the manifest is checked against the Backup's root hash first."""
    return captured.read_backup(session.actor, backup)


def verify(session: Session, backup: Obj, read_data: bool) -> Obj:
    """`mover app verify`: {"ok", "rootHash", "parts", "bytes", "message"}."""
    status = backup.get("status") or {}
    if not status.get("rootHash"):
        return {"ok": False, "message": f"{phase_of(backup)}: no root hash yet"}
    try:
        repo = Repositories(session.actor).open(
            backup["metadata"]["namespace"], str((backup.get("spec") or {}).get("repository"))
        )
        try:
            verified = verify_backup(repo, status, read_data)
        finally:
            repo.close()
    except MoverError as exc:
        return {"ok": False, "rootHash": status["rootHash"], "message": str(exc)}
    what = f"{len(verified.parts)} parts" + (
        f", {mover_api.format_size(verified.bytes)} read and verified"
        if read_data
        else ", structure"
    )
    return {
        "ok": True,
        "rootHash": verified.root_hash,
        "parts": verified.parts,
        "bytes": verified.bytes,
        "readData": read_data,
        "message": f"root {verified.root_hash[:16]}… verified ({what})",
    }


# -- running -------------------------------------------------------------------------------


def restore_namespaces(restore: Obj, backups: dict[str, Obj]) -> list[str]:
    """The namespaces a Restore writes into: its Backup's, mapped."""
    spec = restore.get("spec") or {}
    backup = backups.get(str(spec.get("backup") or "").rpartition("/")[2])
    mapping = spec.get("namespaceMapping") or {}
    sources = backup_namespaces(backup) if backup else []
    return sorted({*sources, *(str(mapping.get(n, n)) for n in sources)})


RECENT = timedelta(hours=24)  # ended Backups and Restores the live view still lists
RECENT_SHOWN = 50  # at most this many of them (each costs a list of its work items)


def running(session: Session, mover_namespace: str, include_done: bool = False) -> list[Obj]:
    """Backups and Restores not ended (with include_done, also the RECENT_SHOWN newest that
    ended within RECENT) that the user may see, with their progress: the live view."""
    found = listing(session, mover_namespace)
    by_name = {b["metadata"]["name"]: b for b in found.backups}
    at = now()
    ended = sorted(
        (
            o
            for o in [*found.backups, *found.restores]
            if phase_of(o) in api.DONE_PHASES
            and at - (_ended(o) or _created(o) or at - 2 * RECENT) < RECENT
        ),
        key=lambda o: _ended(o) or _created(o) or at,
        reverse=True,
    )
    shown = {id(o) for o in ended[:RECENT_SHOWN]} if include_done else set()
    entries = []
    for obj in [*found.backups, *found.restores]:
        if phase_of(obj) in api.DONE_PHASES and id(obj) not in shown:
            continue
        names = (
            backup_namespaces(obj)
            if obj.get("kind") == "Backup"
            else restore_namespaces(obj, by_name)
        )
        if not names or not all(session.may(SEE, n) for n in names):
            continue
        entry = progress_of(session.reader, obj)
        entry["namespaces"] = sorted(set(names))
        entry["age"] = age(_created(obj))
        entries.append(entry)
    entries.sort(key=lambda e: (e["done"], e["kind"], e["name"]))
    return entries


# -- repositories and agents ----------------------------------------------------------------


def repositories(session: Session, mover_namespace: str, sizes: bool = True) -> list[Obj]:
    """Each Repository: Ready (as the controller last checked it), and, opened with the user's
    rights, its snapshots, logical and stored bytes and the deduplication ratio. Only for those
    who may list Repositories in mover's namespace (their URLs name buckets)."""
    session.require(LIST_REPOSITORIES, mover_namespace)
    result = []
    opener = Repositories(session.actor)
    for obj in session.reader.list(api.REPOSITORY, mover_namespace):
        meta, status = obj["metadata"], obj.get("status") or {}
        ready = condition(obj, "Ready") or {}
        entry: Obj = {
            "name": meta["name"],
            "url": (obj.get("spec") or {}).get("url", ""),
            "ready": ready.get("status") == "True",
            "reason": ready.get("reason", ""),
            "message": ready.get("message", ""),
            "since": ready.get("lastTransitionTime", ""),
            "repositoryId": status.get("repositoryId", ""),
        }
        if sizes:
            entry.update(repository_stats(opener, mover_namespace, meta["name"]))
        result.append(entry)
    return result


def repository_stats(opener: Repositories, namespace: str, name: str) -> Obj:
    """`mover stats` of one repository; {"statsError": why} when it cannot be opened."""
    try:
        repo = opener.open(namespace, name)
    except (MoverError, KubeError) as exc:
        return {"statsError": str(exc)}
    try:
        found = repo.snapshots()
        logical = sum(s.size for s in found)
        stored = sum(repo.backend.size(p) for p in repo.backend.list("data/"))
    except MoverError as exc:
        return {"statsError": str(exc)}
    finally:
        repo.close()
    return {
        "snapshots": len(found),
        "logical": mover_api.format_size(logical),
        "stored": mover_api.format_size(stored),
        "ratio": f"{logical / stored:.2f} x" if stored else "-",
    }


def agents(session: Session, mover_namespace: str) -> list[Obj]:
    """The node agents by their Leases: node, alive (renewed within its duration), last
    renewal, and the work items of the node that have not ended. As for repositories()."""
    session.require(LIST_REPOSITORIES, mover_namespace)
    at = now()
    busy: dict[str, int] = {}
    for rt in (api.VOLUME_BACKUP, api.VOLUME_RESTORE):
        for item in session.reader.list(rt, mover_namespace):
            if (item.get("status") or {}).get("phase") in api.DONE_PHASES:
                continue
            node = str((item.get("spec") or {}).get("node") or "")
            busy[node] = busy.get(node, 0) + 1
    result = []
    for lease in session.reader.list(api.LEASE, mover_namespace):
        name = lease["metadata"]["name"]
        if not name.startswith(PREFIX):
            continue
        spec = lease.get("spec") or {}
        renewed = parse_time(str(spec.get("renewTime") or ""))
        seconds = int(spec.get("leaseDurationSeconds") or LEASE_SECONDS)
        node = name[len(PREFIX) :]
        result.append(
            {
                "node": node,
                "holder": spec.get("holderIdentity", ""),
                "alive": renewed is not None and renewed + timedelta(seconds=seconds) > at,
                "renewed": age(renewed, at),
                "workItems": busy.get(node, 0),
            }
        )
    return sorted(result, key=lambda a: str(a["node"]))


# -- drift ----------------------------------------------------------------------------------


def drift(session: Session, backup: Obj, directory: Path) -> Obj:
    """`mover app diff`: what the Backup captured live against the manifests, kustomization or
    chart in `directory` (on the dashboard's machine): the report's dict (diff.Report.as_dict)
    with `desiredForm`. UsageError for a directory that is not one, a manifest that does not
    parse, a missing kubectl or helm."""
    from mover_k8s.diff import desired_source, diff, load_desired

    source = desired_source(directory)
    capture = read_capture(session, backup)
    scope = (capture.get("scope") or {}).get("namespaces") or []
    default_namespace = scope[0] if len(scope) == 1 else ""
    wanted = load_desired(source, default_namespace)
    report = diff(capture.get("objects") or [], wanted, default_namespace)
    return {"desired": str(directory), "desiredForm": source.form, **report.as_dict()}
