"""Per-namespace backups: one restore point (Backup) per app, an app being a namespace.

A platform team protects hundreds of teams' apps with one Schedule (`spec.perNamespace: true`)
or one `mover app backup --per-namespace`; each matching namespace gets a Backup of its own, so
each app is restored, expired and migrated on its own, and one app's failure is that app's
only.

Which namespaces: those whose labels match a namespace selector, plus those named; minus those
excluded. The cluster's own namespaces (kube-system, kube-public, kube-node-lease) and mover's
namespace are left out unless named explicitly; a namespace being deleted is left out.

Names: `PREFIX-NAMESPACE[-SUFFIX]`, at most 63 characters (a Backup's name is a label value on
its work items); a longer one is cut and ends with a digest of the whole, so it stays unique.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from mover_k8s import api
from mover_k8s.capture import selector_string
from mover_k8s.errors import SpecError
from mover_k8s.k8s.client import Kube, Obj

APP_LABEL = f"{api.GROUP}/app"  # the namespace a per-namespace Backup captures
SET_LABEL = f"{api.GROUP}/backup-set"  # `mover app backup NAME --per-namespace`: NAME
SYSTEM_NAMESPACES = frozenset({"kube-system", "kube-public", "kube-node-lease"})
MAX_NAME = 63


def object_name(prefix: str, namespace: str, suffix: str = "") -> str:
    """`PREFIX-NAMESPACE[-SUFFIX]`, cut to 63 characters with a digest of the whole name when
    longer (the suffix, e.g. a run's time stamp, is always kept whole)."""
    tail = f"-{suffix}" if suffix else ""
    name = f"{prefix}-{namespace}{tail}"
    if len(name) <= MAX_NAME:
        return name
    digest = hashlib.blake2b(name.encode(), digest_size=4).hexdigest()
    keep = MAX_NAME - len(tail) - len(digest) - 1
    return f"{prefix}-{namespace}"[:keep].rstrip("-.") + f"-{digest}{tail}"


def check_selector(selector: object, where: str) -> Obj | None:
    """A namespace selector ({matchLabels, matchExpressions}) or None; SpecError
    (InvalidNamespaceSelector) when it is not one."""
    if selector is None:
        return None
    if not isinstance(selector, dict) or set(selector) - {"matchLabels", "matchExpressions"}:
        raise SpecError(
            "InvalidNamespaceSelector",
            f"{where} must be a label selector (matchLabels, matchExpressions)",
        )
    try:
        selector_string(selector)
    except SpecError as exc:
        raise SpecError("InvalidNamespaceSelector", f"{where}: {exc}") from None
    return selector


def select_namespaces(
    kube: Kube,
    selector: Obj | None,
    included: Iterable[str] = (),
    excluded: Iterable[str] = (),
    own: str = "",
) -> list[str]:
    """The namespaces matched by `selector` (None: none by labels) plus `included` (those that
    exist), minus `excluded`; the cluster's own and mover's (`own`) only when included by name.
    Namespaces being deleted are left out. Sorted."""
    named = set(included)
    found: set[str] = set()
    if selector is not None:
        query = selector_string(selector)
        for ns in kube.list(api.NAMESPACE, label_selector=query or None):
            meta = ns["metadata"]
            if meta.get("deletionTimestamp"):
                continue
            if meta["name"] in SYSTEM_NAMESPACES or (own and meta["name"] == own):
                continue
            found.add(meta["name"])
    for name in named - found:
        obj = kube.find(api.NAMESPACE, None, name)
        if obj is not None and not obj["metadata"].get("deletionTimestamp"):
            found.add(name)
    return sorted(found - set(excluded))


def missing_namespaces(kube: Kube, names: Iterable[str]) -> list[str]:
    return sorted(n for n in set(names) if kube.find(api.NAMESPACE, None, n) is None)


def app_backup_spec(template: Obj, namespace: str) -> Obj:
    """A Backup spec for one app: the template's, capturing that namespace only."""
    spec = {k: v for k, v in template.items() if k not in ("includedNamespaces",)}
    spec["includedNamespaces"] = [namespace]
    return spec
