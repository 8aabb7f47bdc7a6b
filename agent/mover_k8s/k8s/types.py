"""What the API layer's callers name: a kind the API serves, and objects as JSON dicts. Free of
the `kubernetes` client, so that importing them (e.g. by the `mover` command line at start-up)
costs nothing."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

Obj = dict[str, Any]


@dataclass(frozen=True)
class ResourceType:
    """One kind the API serves, as discovery names it."""

    group: str  # "" for the core group
    version: str
    plural: str
    kind: str
    namespaced: bool
    verbs: frozenset[str] = field(default_factory=frozenset)
    subresources: frozenset[str] = field(default_factory=frozenset)

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def group_kind(self) -> str:
        """`Kind.group` as kubectl writes it (`Deployment.apps`; core kinds bare)."""
        return f"{self.kind}.{self.group}" if self.group else self.kind

    def path(self, namespace: str | None = None, name: str | None = None, sub: str = "") -> str:
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{quote(namespace, safe='')}"
        base += f"/{self.plural}"
        if name is not None:
            base += f"/{quote(name, safe='')}"
        if sub:
            base += f"/{sub}"
        return base


@dataclass(frozen=True)
class ExecResult:
    """What a command run in a container (pods/exec) did: its exit code (None when it ran past
    its timeout and was abandoned), its output, and its stderr."""

    exit_code: int | None
    stdout: str
    stderr: str
