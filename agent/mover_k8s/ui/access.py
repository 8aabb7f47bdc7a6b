"""Who asks, and what they may see and do.

One rule for both ways of running (local and in the cluster), asked of the API server: a
person sees application (namespace) N when they may `get` mover.dev `backups` **in N**, starts
a backup of N when they may `create` mover.dev `backups` in N, and restores into namespace M
when they may `create` mover.dev `restores` in M. mover's Backups and Restores live in
mover's own namespace, never in the apps', so these grants in an app's namespace are what RBAC
can say about "this person's apps": the chart's ClusterRoles `mover-app-viewer` and
`mover-app-operator` carry them, bound per namespace, or aggregated into the built-in `view`
and `edit`/`admin` (`ui.aggregateToBuiltInRoles`) so that whoever may view or edit a namespace
sees and protects its app (docs/security.md). The repositories and node agents are shown to
those who may `list` mover.dev `repositories` in mover's namespace.

- Local (`LocalAccess`): the kubeconfig user asks about themself (SelfSubjectAccessReview) and
  every call is theirs.
- In the cluster (`ClusterAccess`): the request's bearer token is authenticated with a
  TokenReview; the dashboard's ServiceAccount, which may only read mover's objects and
  namespaces, lists them, and a SubjectAccessReview for the authenticated user decides which
  the user is shown; every write, and every read of a repository's Secrets or of the apps'
  objects, is made with the user's own token, so the API server applies their RBAC too.

An access review that fails (the API is away, the review API is not served) counts as "no":
the dashboard fails closed.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from mover.errors import MoverError
from mover_k8s import api
from mover_k8s.errors import KubeError
from mover_k8s.k8s.client import Kube, Obj
from mover_k8s.k8s.types import ResourceType

log = logging.getLogger(__name__)

TOKEN_REVIEW = ResourceType("authentication.k8s.io", "v1", "tokenreviews", "TokenReview", False)
SUBJECT_ACCESS_REVIEW = ResourceType(
    "authorization.k8s.io", "v1", "subjectaccessreviews", "SubjectAccessReview", False
)
SELF_SUBJECT_ACCESS_REVIEW = ResourceType(
    "authorization.k8s.io", "v1", "selfsubjectaccessreviews", "SelfSubjectAccessReview", False
)

# (verb, mover.dev resource) asked in an app's namespace.
SEE = ("get", "backups")
BACK_UP = ("create", "backups")
RESTORE_INTO = ("create", "restores")
# Asked in mover's own namespace: the repositories page (their URLs name buckets) and the
# node agents; `mover-app-user` has it.
LIST_REPOSITORIES = ("list", "repositories")

REVIEW_SECONDS = 10.0  # answers kept this long: a page asks about every namespace it shows


class Unauthenticated(MoverError):
    """The request carries no token, or one the API server does not accept (HTTP 401)."""


class Forbidden(MoverError):
    """The user may not do this (HTTP 403)."""


@dataclass(frozen=True)
class User:
    name: str
    uid: str = ""
    groups: tuple[str, ...] = ()
    extra: tuple[tuple[str, tuple[str, ...]], ...] = ()


@dataclass
class Session:
    """One request's view of the cluster. `reader` reads mover's own objects (Backups, Restores,
    Schedules, Repositories, work items, the agents' Leases) and the namespaces; `actor` makes
    every write and reads Secrets and the apps' objects. `may` answers the rule above."""

    user: User
    reader: Kube
    actor: Kube
    ask: Callable[[str, str, str], bool]
    _close: Callable[[], None] = field(default=lambda: None)

    def may(self, permission: tuple[str, str], namespace: str) -> bool:
        verb, resource = permission
        return self.ask(verb, resource, namespace)

    def require(self, permission: tuple[str, str], namespace: str) -> None:
        if not self.may(permission, namespace):
            verb, resource = permission
            raise Forbidden(
                f"{self.user.name} may not {verb} {resource}.{api.GROUP} in namespace "
                f"{namespace}: ask for mover-app-operator there (docs/security.md)"
            )

    def close(self) -> None:
        self._close()


class _Answers:
    """Access review answers for REVIEW_SECONDS, so that a page listing 50 namespaces costs 50
    reviews once, not on every refresh."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: dict[tuple[str, ...], tuple[float, bool]] = {}

    def get(self, key: tuple[str, ...], ask: Callable[[], bool]) -> bool:
        now = time.monotonic()
        with self._lock:
            held = self._held.get(key)
            if held is not None and now - held[0] < REVIEW_SECONDS:
                return held[1]
            if len(self._held) > 10000:
                self._held.clear()
        answer = ask()
        with self._lock:
            self._held[key] = (now, answer)
        return answer


def _attributes(verb: str, resource: str, namespace: str) -> Obj:
    return {"namespace": namespace, "verb": verb, "group": api.GROUP, "resource": resource}


def _allowed(kube: Kube, rt: ResourceType, spec: Obj) -> bool:
    body = {"apiVersion": rt.api_version, "kind": rt.kind, "spec": spec}
    try:
        answer = kube.request("POST", rt.path(), body=body)
    except KubeError as exc:
        log.warning("%s failed, counted as not allowed: %s", rt.kind, exc)
        return False
    return (answer.get("status") or {}).get("allowed") is True


class LocalAccess:
    """The kubeconfig user, for `mover ui` on a workstation."""

    def __init__(self, kube: Kube, user: str = "you (kubeconfig)") -> None:
        self.kube = kube
        self.user = User(user)
        self._answers = _Answers()

    def session(self, token: str | None) -> Session:
        def ask(verb: str, resource: str, namespace: str) -> bool:
            spec = {"resourceAttributes": _attributes(verb, resource, namespace)}
            return self._answers.get(
                (verb, resource, namespace),
                lambda: _allowed(self.kube, SELF_SUBJECT_ACCESS_REVIEW, spec),
            )

        return Session(self.user, self.kube, self.kube, ask)


class ClusterAccess:
    """In the cluster: `kube` is the dashboard's ServiceAccount (read-only on mover's objects,
    tokenreviews and subjectaccessreviews create); each request's token is the user's."""

    def __init__(self, kube: Kube, audiences: tuple[str, ...] = ()) -> None:
        self.kube = kube
        self.audiences = audiences
        self._answers = _Answers()
        self._lock = threading.Lock()
        self._users: dict[str, tuple[float, User]] = {}

    def authenticate(self, token: str) -> User:
        digest = hashlib.sha256(token.encode()).hexdigest()  # tokens are never kept as such
        now = time.monotonic()
        with self._lock:
            held = self._users.get(digest)
            if held is not None and now - held[0] < REVIEW_SECONDS:
                return held[1]
        spec: Obj = {"token": token}
        if self.audiences:
            spec["audiences"] = list(self.audiences)
        body = {"apiVersion": TOKEN_REVIEW.api_version, "kind": TOKEN_REVIEW.kind, "spec": spec}
        try:
            answer = self.kube.request("POST", TOKEN_REVIEW.path(), body=body)
        except KubeError as exc:
            raise Unauthenticated(f"cannot check the token: {exc}") from None
        status = answer.get("status") or {}
        if status.get("authenticated") is not True:
            raise Unauthenticated(str(status.get("error") or "the token is not valid"))
        info = status.get("user") or {}
        user = User(
            str(info.get("username") or ""),
            str(info.get("uid") or ""),
            tuple(info.get("groups") or ()),
            tuple(sorted((k, tuple(v)) for k, v in (info.get("extra") or {}).items())),
        )
        with self._lock:
            if len(self._users) > 10000:
                self._users.clear()
            self._users[digest] = (now, user)
        return user

    def session(self, token: str | None) -> Session:
        if not token:
            raise Unauthenticated("sign in with a Kubernetes token")
        user = self.authenticate(token)
        actor = self.kube.as_user(token)

        def ask(verb: str, resource: str, namespace: str) -> bool:
            spec: Obj = {
                "user": user.name,
                "groups": list(user.groups),
                "resourceAttributes": _attributes(verb, resource, namespace),
            }
            if user.uid:
                spec["uid"] = user.uid
            if user.extra:
                spec["extra"] = {k: list(v) for k, v in user.extra}
            return self._answers.get(
                (user.name, *user.groups, "|", verb, resource, namespace),
                lambda: _allowed(self.kube, SUBJECT_ACCESS_REVIEW, spec),
            )

        return Session(user, self.kube, actor, ask, actor.close)


Access = LocalAccess | ClusterAccess
