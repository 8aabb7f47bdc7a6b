"""Status conditions in the usual form (metav1.Condition): type, status, reason, message,
lastTransitionTime, observedGeneration; one entry per type."""

from __future__ import annotations

from typing import Any

from mover_k8s.timestamps import now

Obj = dict[str, Any]


def set_condition(
    conditions: list[Obj] | None,
    type_: str,
    status: bool | None,
    reason: str,
    message: str,
    generation: int | None = None,
) -> list[Obj]:
    """A new list with `type_` set; lastTransitionTime moves only when the status changes."""
    text = "Unknown" if status is None else "True" if status else "False"
    result: list[Obj] = []
    previous: Obj | None = None
    for condition in conditions or []:
        if condition.get("type") == type_:
            previous = condition
        else:
            result.append(condition)
    if previous is not None and previous.get("status") == text:
        since = str(previous.get("lastTransitionTime") or now())
    else:
        since = now()
    entry: Obj = {
        "type": type_,
        "status": text,
        "reason": reason,
        "message": message,
        "lastTransitionTime": since,
    }
    if generation is not None:
        entry["observedGeneration"] = generation
    result.append(entry)
    return result


def set_condition_of(
    obj: Obj, type_: str, status: bool | None, reason: str, message: str
) -> list[Obj]:
    """set_condition on the object's own conditions, for its current generation."""
    return set_condition(
        (obj.get("status") or {}).get("conditions"),
        type_,
        status,
        reason,
        message,
        obj["metadata"].get("generation"),
    )


def condition(obj: Obj, type_: str) -> Obj | None:
    for entry in (obj.get("status") or {}).get("conditions") or []:
        if entry.get("type") == type_:
            return dict(entry)
    return None
