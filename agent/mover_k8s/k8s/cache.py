"""A copy of the collections a loop reconciles, kept current by its watches (an informer).

Without it every pass of the controller and of each node agent lists every Backup, Restore and
work item again, and watches wake a pass at every change: with N apps in flight that is O(N)
objects served per pass and O(N) passes. With it, a kind is listed once (and again only after a
410 Gone), the watch's events keep the copy current, and a pass reads memory.

What it serves and what it does not:
- `list` only, and only for a kind that is filled, in the namespace it holds (or all) and a
  label selector of equality terms (`k=v`, `k==v`, `k!=v`, `k`, `!k`) that is the cache's own
  or narrower; anything else (`in`/`notin`, field selectors, an unfilled kind) returns None and
  the caller asks the API. `get` always asks the API (one object costs the same either way,
  and a read-modify-write wants the newest).
- Writes made through a cached `Kube` (create, patch, replace, delete) go into the copy at once,
  so that the next pass never acts on the state from before its own write; the watch's event
  for that write arrives later with the same resourceVersion and changes nothing. An event
  older than what the copy holds (the same object written since) is not applied.
- The copy may lag behind other writers by the time an event takes to arrive; the loops are
  level-triggered, and the event wakes another pass. While a watch fails, its kind is not
  served (the loop lists from the API, as without a copy) until a new list fills it.

Objects are kept as JSON text and parsed on every `list`: callers get their own dicts to change
as they like, and parsing is several times faster than a deep copy.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from mover_k8s.k8s.types import Obj, ResourceType

__all__ = ["Cache", "label_matcher"]

Key = tuple[str, str]  # (namespace, name)


def label_matcher(selector: str | None) -> Callable[[dict[str, str]], bool] | None:
    """A test of an object's labels for an equality-based selector; None for a selector this
    module does not evaluate (set-based terms), which the API must answer."""
    terms: list[tuple[str, str, str]] = []  # (operator, key, value)
    for raw in (selector or "").split(","):
        term = raw.strip()
        if not term:
            continue
        if "(" in term or " in " in f" {term} " or " notin " in f" {term} ":
            return None
        if "!=" in term:
            key, value = term.split("!=", 1)
            terms.append(("!=", key.strip(), value.strip()))
        elif "=" in term:
            key, value = term.replace("==", "=", 1).split("=", 1)
            terms.append(("=", key.strip(), value.strip()))
        elif term.startswith("!"):
            terms.append(("absent", term[1:].strip(), ""))
        else:
            terms.append(("present", term, ""))

    def matches(labels: dict[str, str]) -> bool:
        for operator, key, value in terms:
            if operator == "=" and labels.get(key) != value:
                return False
            if operator == "!=" and labels.get(key) == value:
                return False
            if operator == "absent" and key in labels:
                return False
            if operator == "present" and key not in labels:
                return False
        return True

    return matches


def _version(obj: Obj) -> int | None:
    """The resourceVersion as a number, where it is one (etcd's are); None: not comparable."""
    try:
        return int((obj.get("metadata") or {}).get("resourceVersion") or "")
    except ValueError:
        return None


@dataclass
class _Entry:
    text: str
    namespace: str
    labels: dict[str, str]
    version: int | None


def _older(entry: _Entry, than: _Entry) -> bool:
    return entry.version is not None and than.version is not None and entry.version < than.version


@dataclass
class _Store:
    rt: ResourceType
    namespace: str | None  # what it holds: one namespace, or all (None)
    selector: str | None  # and which labels
    filled: bool = False
    objects: dict[Key, _Entry] = field(default_factory=dict)


class Cache:
    """The kinds a loop watches, each as a `_Store`. Thread-safe: the watch threads write,
    the loop reads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stores: dict[str, _Store] = {}

    def hold(self, rt: ResourceType, namespace: str | None, selector: str | None) -> None:
        """Keep `rt` (in `namespace`, with labels matching `selector`) from now on; it is
        served once `fill` has been called."""
        with self._lock:
            self._stores[rt.plural] = _Store(rt, namespace, selector)

    def holds(self, rt: ResourceType) -> bool:
        with self._lock:
            return rt.plural in self._stores

    def stale(self, rt: ResourceType) -> None:
        """The watch of `rt` failed: not served until the next `fill`."""
        with self._lock:
            store = self._stores.get(rt.plural)
            if store is not None:
                store.filled = False
                store.objects = {}

    # -- what the watches write --

    def fill(self, rt: ResourceType, items: list[Obj]) -> None:
        """A list's items: everything there is (what the copy held before and the list lacks
        was deleted meanwhile)."""
        entries = {}
        for obj in items:
            key, entry = self._entry(rt, obj)
            entries[key] = entry
        with self._lock:
            store = self._stores[rt.plural]
            store.objects = entries
            store.filled = True

    def apply(self, rt: ResourceType, event: Obj) -> None:
        """A watch event (ADDED, MODIFIED, DELETED; others change nothing)."""
        kind, obj = event.get("type"), event.get("object")
        if not isinstance(obj, dict) or kind not in ("ADDED", "MODIFIED", "DELETED"):
            return
        if kind == "DELETED":
            meta = obj.get("metadata") or {}
            self.removed(rt, meta.get("namespace"), str(meta.get("name") or ""))
        else:
            self.stored(rt, obj)

    # -- what writes through a cached Kube add --

    def stored(self, rt: ResourceType, obj: Obj) -> None:
        """`obj` as the API now has it (a write's answer, or an event)."""
        with self._lock:
            store = self._stores.get(rt.plural)
        if store is None or not (obj.get("metadata") or {}).get("name"):
            return
        key, entry = self._entry(rt, obj)
        if store.namespace is not None and entry.namespace != store.namespace:
            return
        matches = label_matcher(store.selector)
        with self._lock:
            if matches is not None and not matches(entry.labels):
                store.objects.pop(key, None)  # relabelled out of what this copy holds
                return
            held = store.objects.get(key)
            if held is not None and _older(entry, held):
                return  # an event from before a write already applied
            store.objects[key] = entry

    def removed(self, rt: ResourceType, namespace: str | None, name: str) -> None:
        with self._lock:
            store = self._stores.get(rt.plural)
            if store is not None:
                store.objects.pop((namespace or "", name), None)

    # -- what the loop reads --

    def list(
        self,
        rt: ResourceType,
        namespace: str | None,
        selector: str | None,
        field_selector: str | None = None,
    ) -> list[Obj] | None:
        """The objects, or None when this copy cannot answer (see the module's docstring)."""
        if field_selector:
            return None
        with self._lock:
            store = self._stores.get(rt.plural)
            if store is None or not store.filled:
                return None
            if store.namespace is not None and namespace != store.namespace:
                return None
            if store.selector and store.selector != selector:
                return None  # a narrower copy cannot answer a wider question
            matches = None  # the copy's own selector (or none asked): every object it holds
            if selector and not store.selector:
                matches = label_matcher(selector)
                if matches is None:
                    return None  # set-based: the API's to answer
            texts = [
                (key, entry.text)
                for key, entry in store.objects.items()
                if (namespace is None or entry.namespace == namespace)
                and (matches is None or matches(entry.labels))
            ]
        texts.sort()  # as the API answers: by namespace, then name
        return [json.loads(text) for _, text in texts]

    @staticmethod
    def _entry(rt: ResourceType, obj: Obj) -> tuple[Key, _Entry]:
        # Lists and some events leave apiVersion/kind off; callers expect them, as from `list`.
        obj.setdefault("apiVersion", rt.api_version)
        obj.setdefault("kind", rt.kind)
        meta = obj.get("metadata") or {}
        namespace = str(meta.get("namespace") or "")
        labels = {str(k): str(v) for k, v in (meta.get("labels") or {}).items()}
        entry = _Entry(json.dumps(obj), namespace, labels, _version(obj))
        return (namespace, str(meta.get("name") or "")), entry
