"""The Restore report's external names: those recorded in the captured objects, paired with the
restored objects' current ones (mover_k8s.external), refreshed until none is pending or
spec.externalWait has run out since the Restore ended."""

from __future__ import annotations

import logging

from mover_k8s import external
from mover_k8s.controller.common import parse_ttl, seconds_since
from mover_k8s.errors import KubeError, NotFound, SpecError
from mover_k8s.k8s.client import Kube, Obj
from mover_k8s.restore_plan import Plan

log = logging.getLogger("mover.k8s.restore")
EXTERNAL_WAIT = "10m"  # spec.externalWait's default
# report.externalPhase: pending external names are refreshed (Waiting), none is pending
# (Settled), or spec.externalWait ran out with some still pending (TimedOut).
EXTERNAL_WAITING, EXTERNAL_SETTLED, EXTERNAL_TIMED_OUT = "Waiting", "Settled", "TimedOut"


def external_wait(spec: Obj) -> float:
    """spec.externalWait in seconds; SpecError if it is not a duration."""
    text = str(spec.get("externalWait") or EXTERNAL_WAIT)
    try:
        return parse_ttl(text).total_seconds()
    except SpecError:
        raise SpecError(
            "InvalidExternalWait", f"spec.externalWait {text!r} is not a duration like 10m or 90s"
        ) from None


def wait_of(restore: Obj) -> float:
    """spec.externalWait of a Restore that was checked already: the default if it has been
    changed since to something that is not a duration."""
    try:
        return external_wait(restore.get("spec") or {})
    except SpecError:
        return external_wait({})


def external_fields(entries: list[Obj], wait: float, waited: float | None) -> Obj:
    """The report's external fields; `waited`: seconds since the Restore ended (None: not yet).
    Nothing when nothing external was recorded."""
    if not entries:
        return {}
    pending = sum(1 for e in entries if e.get("state") == external.PENDING)
    if not pending:
        phase = EXTERNAL_SETTLED
        message = "every recorded external name is known on the restored objects"
    elif waited is not None and waited >= wait:
        phase = EXTERNAL_TIMED_OUT
        message = (
            f"{pending} external name(s) still pending; stopped checking {wait:.0f}s after "
            "the restore ended (spec.externalWait)"
        )
    else:
        phase = EXTERNAL_WAITING
        message = (
            f"{pending} external name(s) pending; checked until {wait:.0f}s after the restore "
            "ends (spec.externalWait)"
        )
    return {"external": entries, "externalPhase": phase, "externalMessage": message}


def recorded_external(plan: Plan) -> list[Obj]:
    """The external names of the captured objects this restore makes (or finds existing),
    under their restored (mapped) namespace; not yet compared."""
    entries: list[Obj] = []
    for step in plan.steps:
        if step.skip:
            continue
        meta = step.prepared.get("metadata") or {}
        for what, value in external.values_of(step.original):
            entry: Obj = {
                "apiVersion": step.prepared.get("apiVersion", ""),
                "kind": step.prepared.get("kind", ""),
                "name": meta.get("name", ""),
                "what": what,
                "recorded": value,
                "current": "",
                "state": external.PENDING,
            }
            if meta.get("namespace"):
                entry["namespace"] = meta["namespace"]
            entries.append(entry)
    return entries


class ExternalNames:
    """Reads the restored objects' external names now, to pair them with the recorded ones."""

    def __init__(self, kube: Kube) -> None:
        self.kube = kube

    def _current(self, api_version: str, kind: str, ns: str, name: str) -> list[tuple[str, str]]:
        """(type, value) of the restored object's external names now; none if it is not there
        (or its kind is not served, or mover's RBAC does not let it read that kind: 403)."""
        try:
            obj = self.kube.find(self.kube.resource_for(api_version, kind), ns or None, name)
        except NotFound:
            return []
        except KubeError as exc:
            if exc.status != 403:
                raise
            return []
        return external.values_of(obj) if obj is not None else []

    def refresh(self, entries: list[Obj]) -> list[Obj]:
        """`entries` paired again with the restored objects' current values."""
        groups: dict[tuple[str, str, str, str, str], list[tuple[str, str]]] = {}
        for e in entries:
            if e.get("recorded"):
                key = (
                    str(e.get("apiVersion") or ""),
                    str(e.get("kind") or ""),
                    str(e.get("namespace") or ""),
                    str(e.get("name") or ""),
                    external.family(str(e.get("what") or "")),
                )
                groups.setdefault(key, []).append((str(e["what"]), str(e["recorded"])))
        live: dict[tuple[str, str, str, str], list[tuple[str, str]]] = {}
        refreshed: list[Obj] = []
        for (api_version, kind, ns, name, family), recorded in groups.items():
            obj_key = (api_version, kind, ns, name)
            if obj_key not in live:
                live[obj_key] = self._current(api_version, kind, ns, name)
            current = [(t, v) for t, v in live[obj_key] if external.family(t) == family]
            for what, old, new, state in external.pair(recorded, current):
                entry: Obj = {"apiVersion": api_version, "kind": kind, "name": name}
                if ns:
                    entry["namespace"] = ns
                entry.update(what=what, recorded=old, current=new, state=state)
                refreshed.append(entry)
        return refreshed

    def follow(self, restore: Obj) -> Obj | None:
        """After the Restore has ended: its report with the pending external names refreshed,
        until none is pending or spec.externalWait has run out since it ended; None when there
        is nothing to write."""
        status = restore.get("status") or {}
        report = dict(status.get("report") or {})
        if report.get("externalPhase") != EXTERNAL_WAITING:
            return None
        wait = wait_of(restore)
        waited = seconds_since(str(status.get("completionTimestamp") or ""))
        try:
            names = self.refresh(list(report.get("external") or []))
        except KubeError as exc:  # the Restore has ended well: its condition stays; next pass
            log.warning("restore %s: external names: %s", restore["metadata"]["name"], exc)
            return None
        updated = dict(report, **external_fields(names, wait, waited))
        return updated if updated != report else None
