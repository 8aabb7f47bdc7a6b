"""A Kubernetes API for tests: kmock's KubernetesEmulator, with what kmock 0.8 lacks filled in.

kmock serves the HTTP, API discovery (`load_bundled()`: the built-in kinds of a real cluster),
and keeps objects in `kmock.objects` (the same store is used here, so its discovery sees every
write). What kmock 0.8 does not do, and a real API server does, is done
here, and only here, so that the code under test talks to something that behaves like a cluster
through the official client:

- discovery under a trailing slash (`/apis/`, `/api/v1/`): answered as without it;
- `watch=1` (kmock knows only `watch=true`);
- Namespaces: kmock cannot parse `/api/v1/namespaces[/NAME]` (it reads NAME as a namespace);
  served here as the cluster-scoped resource they are, and deleting one deletes everything in
  it (at once: a real cluster does it in the background);
- create answers 201, fills metadata.uid, resourceVersion, creationTimestamp, generation,
  honours generateName, refuses a set resourceVersion (422), a duplicate (409 AlreadyExists)
  and a namespaced object in a missing namespace (404);
- Services: a clusterIP or nodePort that another Service holds is refused (422 Invalid,
  "provided IP/port is already allocated"), as the API server's allocators refuse it; none is
  allocated when none is given (tests write what a cluster would assign);
- every write bumps one cluster-wide resourceVersion; PUT (kmock has none) and PATCH with a
  stale metadata.resourceVersion answer 409 Conflict;
- JSON merge patch (RFC 7396) and PUT replace; the status subresource: writes to the object
  keep its status, writes to /status change only the status; generation grows on spec changes;
- label selectors (=, ==, !=, in, notin, exists, !exists) and field selectors (=, ==, != on any
  dotted path) on list, and on watch; pages on list (`limit`, `continue`);
- watches as the API server serves them (kmock's replay every object and never end): from a
  `resourceVersion` (a list's, or the last event's) only the events after it, from the last
  `history` events kept (an older version: an ERROR event with code 410 Expired, then the end,
  as a real server's watch cache answers; a watcher that falls that far behind gets the same);
  without one (or "0"), every object as ADDED first; `allowWatchBookmarks=true`: a BOOKMARK
  with the current resourceVersion after `bookmark_interval` seconds in which writes to other
  objects moved it, and before the end; the stream ends after `timeoutSeconds` (default 1800);
  deletions get a resourceVersion of their own, as in etcd;
- `served`: how many requests of each verb were answered (LIST, WATCH, GET, CREATE, UPDATE,
  PATCH, DELETE, DISCOVERY, EXEC, OTHER), and how many objects list pages ("listed") and watch
  streams ("watched", bookmarks not counted) carried: what a client costs the API server;
- CustomResourceDefinitions: creating one makes the API serve its kind (as the apiextensions
  server does), deleting it stops that;
- deletion with finalizers sets deletionTimestamp and waits for them to be removed;
- pods/exec (`/api/v1/namespaces/NS/pods/NAME/exec`, what `kubectl exec` and the client's
  `stream(connect_get_namespaced_pod_exec, ...)` call): the websocket upgrade with the
  `v4.channel.k8s.io` subprotocol, as the API server proxies it from the kubelet. Every message
  is a binary frame whose first byte is the channel: 1 stdout, 2 stderr, 3 the error channel,
  which carries a JSON `Status` when the command ends (`Success`, or `Failure` with reason
  `NonZeroExitCode` and the code in `details.causes[{reason: ExitCode, message: "N"}]`); then
  the server closes. A pod or a container the pod does not have answers 404 / 400 before the
  upgrade. Test support, not emulation of a runtime: *a container is this host* — the command
  runs as a local subprocess of the emulator, with MOVER_TEST_POD (NS/NAME) and
  MOVER_TEST_CONTAINER in its environment, so that a test sees what ran, where, and in which
  order (e.g. by having commands append to a file). A command that cannot be started ends with
  exit code 127, as a shell reports it; closing the websocket before the end kills the process.

- serviceaccounts/NAME/token (TokenRequest): a token for the asked audiences and lifetime, of
  an existing ServiceAccount; `token_holder` answers what a TokenReview would (who holds it,
  for which audience, unexpired), for test servers that authenticate callers as a CSI sidecar
  does.
Access reviews, as the API server's authenticator and authorizer answer them: TokenReviews from
a table of tokens (`tokens`: token -> {username, groups}), SubjectAccessReviews and
SelfSubjectAccessReviews (the caller named by its bearer token) from a list of grants
(`grant()`); with no grant, every review allows (the emulator's callers are cluster admins).
Other requests are not authorized: the reviews are for code that asks them (`mover ui`).

What a cluster's controllers would do is not emulated, except one thing tests need: a file
provisioner. A PVC whose StorageClass names the provisioner `file.mover.test` is bound at once
(unless the class binds on first use, WaitForFirstConsumer) to a new PV backed by a sparse file
under `volume_dir` (a `local` volume on `node`), as a CSI driver would provision a disk; the
path exposer reads and writes such volumes.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import copy
import datetime
import gzip
import importlib.resources
import json
import os
import re
import secrets
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp.web
import attrs
import kmock

FILE_PROVISIONER = "file.mover.test"
EXEC_PROTOCOL = "v4.channel.k8s.io"
_EXEC_PATH = re.compile(r"^/api/v1/namespaces/([^/]+)/pods/([^/]+)/exec$")
_REVIEW_PATH = re.compile(
    r"^/apis/(authentication\.k8s\.io/v1/tokenreviews"
    r"|authorization\.k8s\.io/v1/(?:self)?subjectaccessreviews)$"
)
Obj = dict[str, Any]


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message

    def status(self) -> Obj:
        return {
            "apiVersion": "v1",
            "kind": "Status",
            "metadata": {},
            "status": "Failure",
            "code": self.code,
            "reason": self.reason,
            "message": self.message,
        }


# -- selectors --------------------------------------------------------------------------

_SET_TERM = re.compile(r"^\s*(!?)([\w./-]+)\s*(?:(notin|in)\s*\(([^)]*)\))?\s*$")
_EQ_TERM = re.compile(r"^\s*([\w./-]+)\s*(==|!=|=)\s*([\w./-]*)\s*$")


def _split_terms(selector: str) -> list[str]:
    terms, depth, current = [], 0, ""
    for ch in selector:
        depth += ch == "("
        depth -= ch == ")"
        if ch == "," and depth == 0:
            terms.append(current)
            current = ""
        else:
            current += ch
    if current.strip():
        terms.append(current)
    return terms


def label_matcher(selector: str) -> Callable[[Obj], bool]:
    tests: list[Callable[[dict[str, str]], bool]] = []
    for term in _split_terms(selector):
        if m := _EQ_TERM.match(term):
            key, op, value = m.groups()
            if op == "!=":
                tests.append(lambda labels, k=key, v=value: labels.get(k) != v)
            else:
                tests.append(lambda labels, k=key, v=value: labels.get(k) == v)
        elif m := _SET_TERM.match(term):
            negate, key, op, values = m.groups()
            if op:
                options = {v.strip() for v in values.split(",")}
                if op == "in":
                    tests.append(lambda labels, k=key, o=options: labels.get(k) in o)
                else:
                    tests.append(lambda labels, k=key, o=options: labels.get(k) not in o)
            elif negate:
                tests.append(lambda labels, k=key: k not in labels)
            else:
                tests.append(lambda labels, k=key: k in labels)
        else:
            raise ApiError(400, "BadRequest", f"unable to parse requirement: {term!r}")

    def match(obj: Obj) -> bool:
        labels = obj.get("metadata", {}).get("labels") or {}
        return all(test(labels) for test in tests)

    return match


def _field(obj: Obj, path: str) -> str:
    value: Any = obj
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return "" if value is None else str(value)


def field_matcher(selector: str) -> Callable[[Obj], bool]:
    tests: list[Callable[[Obj], bool]] = []
    for term in _split_terms(selector):
        m = _EQ_TERM.match(term)
        if not m:
            raise ApiError(400, "BadRequest", f"invalid field selector: {term!r}")
        path, op, value = m.groups()
        if op == "!=":
            tests.append(lambda o, p=path, v=value: _field(o, p) != v)
        else:
            tests.append(lambda o, p=path, v=value: _field(o, p) == v)
    return lambda obj: all(test(obj) for test in tests)


def selector_matcher(query: dict[str, str]) -> Callable[[Obj], bool]:
    labels = label_matcher(query["labelSelector"]) if query.get("labelSelector") else None
    fields = field_matcher(query["fieldSelector"]) if query.get("fieldSelector") else None
    return lambda obj: (labels is None or labels(obj)) and (fields is None or fields(obj))


# -- patches ----------------------------------------------------------------------------


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- the API ----------------------------------------------------------------------------


@attrs.frozen
class Target:
    resource: kmock.resource
    namespace: str | None
    name: str | None
    sub: str | None


def parse_target(path: str) -> Target | None:
    parts = [p for p in path.split("/") if p]
    if len(parts) >= 2 and parts[0] == "api":
        group, version, rest = "", parts[1], parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return None
    if not rest:
        return None  # discovery
    namespace = None
    if rest[0] == "namespaces" and len(rest) >= 3 and rest[2] not in ("status", "finalize"):
        namespace, rest = rest[1], rest[2:]
    plural = rest[0]
    name = rest[1] if len(rest) > 1 else None
    sub = "/".join(rest[2:]) or None
    return Target(kmock.resource(group, version, plural), namespace, name, sub)


@attrs.define(kw_only=True)
class Cluster(kmock.KubernetesEmulator):
    """The emulator with the gaps filled (see the module docstring)."""

    volume_dir: Path | None = None
    node: str = "node-a"
    history: int = 5000  # watch events kept, for watches that resume from a resourceVersion
    bookmark_interval: float = 1.0
    bookmarks: bool = True  # False: none sent, as from a server that does not offer them
    _rv: int = attrs.field(default=0, init=False)
    # (resourceVersion, resource, event), oldest first: `history` to twice as many
    _events: list[tuple[int, kmock.resource, Obj]] = attrs.field(factory=list, init=False)
    _forgotten: int = attrs.field(default=0, init=False)  # the newest version no longer kept
    _changed: asyncio.Event | None = attrs.field(default=None, init=False)
    _served: Counter[str] = attrs.field(factory=Counter, init=False)
    _served_lock: threading.Lock = attrs.field(factory=threading.Lock, init=False)
    # token -> (namespace, service account, audiences, expiry as time.time())
    _tokens: dict[str, tuple[str, str, tuple[str, ...], float]] = attrs.field(
        factory=dict, init=False
    )
    # Access reviews (TokenReview, SubjectAccessReview, SelfSubjectAccessReview): who a bearer
    # token is ({"username", "groups"}), and what they may do. With no grants, everyone may do
    # everything (the emulator's callers act as cluster admins, as without reviews).
    tokens: dict[str, Obj] = attrs.field(factory=dict, init=False)
    grants: list[Obj] = attrs.field(factory=list, init=False)

    def grant(
        self, subject: str, verbs: list[str], resources: list[str], namespaces: list[str]
    ) -> None:
        """Allow `subject` (a user name, or `group:NAME`) the verbs on the resources
        (`RESOURCE.GROUP`, or `*`) in the namespaces (`*`: any)."""
        self.grants.append(
            {"subject": subject, "verbs": verbs, "resources": resources, "namespaces": namespaces}
        )

    def allows(self, user: str, groups: list[str], attributes: Obj) -> bool:
        if not self.grants:
            return True
        subjects = {user, *(f"group:{g}" for g in groups)}
        resource = f"{attributes.get('resource', '')}.{attributes.get('group', '')}".rstrip(".")
        for g in self.grants:
            if g["subject"] not in subjects:
                continue
            if "*" not in g["verbs"] and attributes.get("verb") not in g["verbs"]:
                continue
            if "*" not in g["resources"] and resource not in g["resources"]:
                continue
            if "*" in g["namespaces"] or attributes.get("namespace", "") in g["namespaces"]:
                return True
        return False

    def _review(self, raw_request: aiohttp.web.BaseRequest, path: str, body: Obj) -> Obj:
        """Answer an access review as the API server's authenticator and authorizer would."""
        spec = body.get("spec") or {}
        status: Obj
        if path.endswith("tokenreviews"):
            user = self.tokens.get(str(spec.get("token") or ""))
            status = (
                {"authenticated": True, "user": user}
                if user
                else {"authenticated": False, "error": "invalid bearer token"}
            )
        else:
            if path.endswith("/selfsubjectaccessreviews"):
                header = raw_request.headers.get("Authorization", "")
                who = self.tokens.get(header.removeprefix("Bearer ").strip()) or {}
                name, groups = str(who.get("username") or ""), list(who.get("groups") or [])
            else:
                name, groups = str(spec.get("user") or ""), list(spec.get("groups") or [])
            attributes = spec.get("resourceAttributes") or {}
            status = {"allowed": self.allows(name, groups, attributes)}
        return {**body, "status": status}

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        # load_bundled() reads it with a deprecated importlib call (an error under our
        # warning filters); the same file, read the current way.
        bundled = importlib.resources.files("kmock._internal") / "resources.json.gz"
        self.resources.load_data(gzip.decompress(bundled.read_bytes()))

    # -- routing --

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        path = raw_request.path
        if len(path) > 1 and path.endswith("/"):
            raw_request = raw_request.clone(rel_url=raw_request.rel_url.with_path(path.rstrip("/")))
        exec_target = _EXEC_PATH.match(raw_request.path)
        if exec_target:
            self._count("EXEC")
            return await self._exec(raw_request, exec_target.group(1), exec_target.group(2))
        if raw_request.method == "POST" and _REVIEW_PATH.match(raw_request.path):
            self._count("CREATE")
            try:
                review = json.loads(await raw_request.read())
            except ValueError:
                return _json(ApiError(400, "BadRequest", "the body is not JSON").status(), 400)
            return _json(self._review(raw_request, raw_request.path, review), 201)
        target = parse_target(raw_request.path)
        query = dict(raw_request.query)
        watch = query.get("watch") in ("true", "1")
        if target is not None and watch and raw_request.method == "GET":
            self._count("WATCH")
            return await self._watch(raw_request, target, query)
        if query.get("watch") == "1":  # kmock knows only watch=true
            raw_request = raw_request.clone(rel_url=raw_request.rel_url.update_query(watch="true"))
            query["watch"] = "true"
        if target is None or watch:
            self._count("DISCOVERY" if target is None else "OTHER")
            return await super().__call__(raw_request)
        verbs = {"POST": "CREATE", "PUT": "UPDATE", "PATCH": "PATCH", "DELETE": "DELETE"}
        if raw_request.method == "GET":
            self._count("LIST" if target.name is None else "GET")
        else:
            self._count(verbs.get(raw_request.method, "OTHER"))
        body_raw = await raw_request.read()
        try:
            body = json.loads(body_raw) if body_raw else None
        except ValueError:
            return _json(ApiError(400, "BadRequest", "the body is not JSON").status(), 400)
        try:
            async with self._lock:
                code, payload = await self._serve(raw_request.method, target, query, body)
        except ApiError as exc:
            return _json(exc.status(), exc.code)
        return _json(payload, code)

    def _count(self, what: str, n: int = 1) -> None:
        with self._served_lock:
            self._served[what] += n

    @property
    def served(self) -> Counter[str]:
        """A copy of the counts (see the module docstring), safe to read from any thread."""
        with self._served_lock:
            return Counter(self._served)

    async def _serve(
        self, method: str, target: Target, query: dict[str, str], body: Any
    ) -> tuple[int, Obj]:
        info = self._info(target.resource)
        if info.namespaced and target.namespace is None and method != "GET":
            raise ApiError(404, "NotFound", f"{target.resource.plural} are namespaced")
        namespace = target.namespace if info.namespaced else None
        if target.name is None:
            if method == "GET":
                return 200, self._list(target.resource, info, namespace, query)
            if method == "POST":
                if not isinstance(body, dict):
                    raise ApiError(400, "BadRequest", "create needs an object")
                return 201, await self._create(target.resource, info, namespace, body)
            raise ApiError(405, "MethodNotAllowed", f"{method} on a collection")
        key = (target.resource, namespace, target.name)
        if (
            method == "POST"
            and target.resource.plural == "serviceaccounts"
            and target.sub == "token"
        ):
            self._current(key)  # 404 for a ServiceAccount that does not exist
            return 201, self._token_request(namespace or "", target.name, body)
        if method == "GET":
            return 200, self._current(key)
        if method in ("PUT", "PATCH"):
            if not isinstance(body, dict):
                raise ApiError(400, "BadRequest", f"{method} needs an object")
            return 200, await self._update(key, info, method, target.sub, body)
        if method == "DELETE":
            return 200, await self._delete(key)
        raise ApiError(405, "MethodNotAllowed", method)

    # -- serviceaccounts/token --

    def _token_request(self, namespace: str, name: str, body: Any) -> Obj:
        spec = body.get("spec") if isinstance(body, dict) else None
        audiences = (spec or {}).get("audiences") or []
        if not isinstance(audiences, list) or not all(isinstance(a, str) for a in audiences):
            raise ApiError(400, "BadRequest", "spec.audiences must be a list of strings")
        seconds = int((spec or {}).get("expirationSeconds") or 3600)
        token = secrets.token_urlsafe(24)
        with self._served_lock:
            self._tokens[token] = (namespace, name, tuple(audiences), time.time() + seconds)
        expires = datetime.datetime.fromtimestamp(time.time() + seconds, datetime.UTC)
        return {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"audiences": audiences, "expirationSeconds": seconds},
            "status": {
                "token": token,
                "expirationTimestamp": expires.strftime("%Y-%m-%dT%H:%M:%SZ"),
            },
        }

    def token_holder(self, token: str, audience: str) -> tuple[str, str] | None:
        """(namespace, service account) of an unexpired token issued for `audience`; None for
        any other token: what a TokenReview answers. Safe from any thread."""
        with self._served_lock:
            found = self._tokens.get(token)
        if found is None or audience not in found[2] or found[3] < time.time():
            return None
        return found[0], found[1]

    def expire_tokens(self) -> None:
        """Every token issued so far expires now (a long listing outliving its token)."""
        with self._served_lock:
            self._tokens = {t: (*v[:3], 0.0) for t, v in self._tokens.items()}

    # -- pods/exec --

    async def _exec(
        self, request: aiohttp.web.BaseRequest, namespace: str, name: str
    ) -> aiohttp.web.StreamResponse:
        """pods/exec: see the module docstring."""
        command = request.query.getall("command", [])
        container = request.query.get("container", "")
        key = (kmock.resource("", "v1", "pods"), namespace, name)
        try:
            pod = self._current(key)
        except ApiError as exc:
            return _json(exc.status(), exc.code)
        containers = [c.get("name") for c in (pod.get("spec") or {}).get("containers") or []]
        if not container and len(containers) == 1:
            container = str(containers[0])
        if container not in containers:
            error = ApiError(
                400, "BadRequest", f"container {container} is not valid for pod {name}"
            )
            return _json(error.status(), 400)
        if not command:
            return _json(ApiError(400, "BadRequest", "you must specify a command").status(), 400)
        ws = aiohttp.web.WebSocketResponse(protocols=(EXEC_PROTOCOL,))
        await ws.prepare(request)
        env = dict(os.environ, MOVER_TEST_POD=f"{namespace}/{name}", MOVER_TEST_CONTAINER=container)
        try:
            proc = await asyncio.create_subprocess_exec(
                *command,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=env,
            )
        except OSError as exc:
            await ws.send_bytes(b"\x02" + f"exec: {exc}\n".encode())
            await ws.send_bytes(b"\x03" + json.dumps(_exit_status(127)).encode())
            await ws.close()
            return ws

        async def pump(stream: asyncio.StreamReader | None, channel: int) -> None:
            assert stream is not None
            while chunk := await stream.read(65536):
                if not ws.closed:
                    await ws.send_bytes(bytes([channel]) + chunk)

        async def until_closed() -> None:
            async for _ in ws:  # stdin is not offered; this ends when the client goes
                pass

        closed = asyncio.ensure_future(until_closed())
        ran = asyncio.ensure_future(
            asyncio.gather(pump(proc.stdout, 1), pump(proc.stderr, 2), proc.wait())
        )
        try:
            await asyncio.wait({closed, ran}, return_when=asyncio.FIRST_COMPLETED)
            if not ran.done():  # the client left first (its timeout): the command goes too
                return ws
            code = proc.returncode or 0
            if not ws.closed:
                await ws.send_bytes(b"\x03" + json.dumps(_exit_status(code)).encode())
                await ws.close()
            return ws
        finally:
            # Whatever ended this handler (the command, the client leaving, the server
            # stopping and cancelling it): no process and no pipe is left behind, or a later
            # test sees their ResourceWarnings when they are collected.
            closed.cancel()
            ran.cancel()
            transport = getattr(proc, "_transport", None)
            if transport is not None:
                transport.close()  # kills the process if it still runs, closes its pipes

    def _info(self, resource: kmock.resource) -> kmock.ResourceInfo:
        if resource not in self.resources:
            raise ApiError(
                404, "NotFound", f"the server could not find the requested resource {resource}"
            )
        return self.resources[resource]

    # -- reads --

    def _current(self, key: tuple[kmock.resource, str | None, str]) -> Obj:
        if key not in self.objects or self.objects[key].deleted:
            raise ApiError(404, "NotFound", f'{key[0].plural} "{key[2]}" not found')
        return copy.deepcopy(self.objects[key].raw)

    def _list(
        self,
        resource: kmock.resource,
        info: kmock.ResourceInfo,
        namespace: str | None,
        query: dict[str, str],
    ) -> Obj:
        match = selector_matcher(query)
        items = [
            copy.deepcopy(obj.raw)
            for (res, ns, _), obj in self.objects.items()
            if res == resource and not obj.deleted and (namespace is None or ns == namespace)
        ]
        items = [item for item in items if match(item)]
        items.sort(key=lambda o: (o["metadata"].get("namespace") or "", o["metadata"]["name"]))
        api_version = f"{resource.group}/{resource.version}" if resource.group else "v1"
        meta: Obj = {"resourceVersion": str(self._rv)}
        # Pages: `continue` is the offset of the next page (a real server's token is opaque).
        start = int(query.get("continue") or 0)
        limit = int(query.get("limit") or 0)
        if limit:
            if start + limit < len(items):
                meta["continue"] = str(start + limit)
                meta["remainingItemCount"] = len(items) - start - limit
            items = items[start : start + limit]
        self._count("listed", len(items))
        return {
            "apiVersion": api_version,
            "kind": f"{info.kind}List",
            "metadata": meta,
            "items": items,
        }

    # -- writes --

    async def _publish(self, resource: kmock.resource, kind: str, obj: Obj) -> None:
        """Called with the lock held, after the write bumped the object's resourceVersion."""
        event = {"type": kind, "object": copy.deepcopy(obj)}
        if kind == "DELETED":
            self._bump(event["object"])  # a deletion is a change of its own, as in etcd
        version = int(event["object"]["metadata"]["resourceVersion"])
        self._events.append((version, resource, event))
        if len(self._events) > 2 * self.history:
            cut = len(self._events) - self.history
            self._forgotten = self._events[cut - 1][0]
            del self._events[:cut]
        if self._changed is not None:
            self._changed.set()
            self._changed = None
        await self._buses[resource].put(copy.deepcopy(event))

    def _bump(self, obj: Obj) -> None:
        self._rv += 1
        obj["metadata"]["resourceVersion"] = str(self._rv)

    async def _create(
        self, resource: kmock.resource, info: kmock.ResourceInfo, namespace: str | None, body: Obj
    ) -> Obj:
        obj = copy.deepcopy(body)
        meta = obj.setdefault("metadata", {})
        if meta.get("resourceVersion"):
            raise ApiError(422, "Invalid", "metadata.resourceVersion: must be empty on create")
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
        if not meta.get("name"):
            raise ApiError(422, "Invalid", "metadata.name: Required value")
        if info.namespaced:
            namespace = namespace or meta.get("namespace")
            if not namespace:
                raise ApiError(422, "Invalid", "metadata.namespace: Required value")
            ns_key = (kmock.resource("", "v1", "namespaces"), None, namespace)
            if ns_key not in self.objects or self.objects[ns_key].deleted:
                raise ApiError(404, "NotFound", f'namespaces "{namespace}" not found')
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        key = (resource, namespace, meta["name"])
        if key in self.objects and not self.objects[key].deleted:
            raise ApiError(
                409, "AlreadyExists", f'{resource.plural} "{meta["name"]}" already exists'
            )
        if "status" in info.subresources:
            obj.pop("status", None)  # set through /status only, as the API server does
        if resource == kmock.resource("", "v1", "services"):
            self._check_addresses(resource, obj)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = _now()
        meta["generation"] = 1
        obj.setdefault("apiVersion", _api_version(resource))
        obj.setdefault("kind", info.kind)
        if resource == kmock.resource("", "v1", "namespaces"):
            obj["status"] = {"phase": "Active"}
        self._bump(obj)
        if key in self.objects:
            self.objects[key].create(obj)
        else:
            self.objects[key] = obj
        await self._publish(resource, "ADDED", obj)
        if resource == kmock.resource("apiextensions.k8s.io", "v1", "customresourcedefinitions"):
            self._serve_crd(obj)
        if resource == kmock.resource("", "v1", "persistentvolumeclaims"):
            await self._provision(obj)
        return copy.deepcopy(obj)

    def _check_addresses(self, resource: kmock.resource, service: Obj) -> None:
        """What the API server's IP and port allocators refuse: an address another Service
        holds (a headless Service, `clusterIP: None`, holds none)."""
        ips: set[str] = set()
        ports: set[int] = set()
        for (res, _, _), obj in self.objects.items():
            if res == resource and not obj.deleted:
                spec = obj.raw.get("spec") or {}
                ips.update(spec.get("clusterIPs") or [spec.get("clusterIP")])
                ports.update(p.get("nodePort") for p in spec.get("ports") or [])
        spec = service.get("spec") or {}
        for ip in spec.get("clusterIPs") or [spec.get("clusterIP")]:
            if ip and ip != "None" and ip in ips:
                raise ApiError(
                    422,
                    "Invalid",
                    f"spec.clusterIPs: Invalid value: {ip!r}: failed to allocate IP {ip}: "
                    "provided IP is already allocated",
                )
        for index, port in enumerate(spec.get("ports") or []):
            if port.get("nodePort") and port["nodePort"] in ports:
                raise ApiError(
                    422,
                    "Invalid",
                    f"spec.ports[{index}].nodePort: Invalid value: {port['nodePort']}: "
                    "provided port is already allocated",
                )

    async def _update(
        self,
        key: tuple[kmock.resource, str | None, str],
        info: kmock.ResourceInfo,
        method: str,
        sub: str | None,
        body: Obj,
    ) -> Obj:
        current = self._current(key)
        given_rv = (body.get("metadata") or {}).get("resourceVersion")
        if given_rv and given_rv != current["metadata"]["resourceVersion"]:
            raise ApiError(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on {key[0].plural} "{key[2]}": the object has '
                "been modified; please apply your changes to the latest version and try again",
            )
        if method == "PATCH":
            new = merge_patch(current, body)
        else:
            new = copy.deepcopy(body)
            new.setdefault("apiVersion", current.get("apiVersion"))
            new.setdefault("kind", current.get("kind"))
        has_status = "status" in info.subresources
        if sub == "status":
            # Only the status changes through /status.
            new = dict(current, status=new.get("status"))
        elif has_status:
            new["status"] = current.get("status")
            if new["status"] is None:
                new.pop("status")
        # The server owns identity and bookkeeping.
        keep = ("uid", "creationTimestamp", "namespace", "name", "generation")
        new_meta = new.setdefault("metadata", {})
        for field in keep:
            if field in current["metadata"]:
                new_meta[field] = current["metadata"][field]
        if sub != "status" and _spec_of(new) != _spec_of(current):
            new_meta["generation"] = int(current["metadata"].get("generation", 1)) + 1
        self._bump(new)
        if new_meta.get("deletionTimestamp") and not new_meta.get("finalizers"):
            self.objects[key].history.append(new)
            self.objects[key].delete()
            await self._publish(key[0], "DELETED", new)
            return new
        self.objects[key].history.append(new)
        await self._publish(key[0], "MODIFIED", new)
        return copy.deepcopy(new)

    async def _delete(self, key: tuple[kmock.resource, str | None, str]) -> Obj:
        current = self._current(key)
        if current["metadata"].get("finalizers"):
            if not current["metadata"].get("deletionTimestamp"):
                current["metadata"]["deletionTimestamp"] = _now()
                self._bump(current)
                self.objects[key].history.append(current)
                await self._publish(key[0], "MODIFIED", current)
            return current
        if key[0] == kmock.resource("", "v1", "namespaces"):
            # The namespace controller's job, done at once.
            contents = [k for k, obj in self.objects.items() if k[1] == key[2] and not obj.deleted]
            for content_key in contents:
                gone = copy.deepcopy(self.objects[content_key].raw)
                self.objects[content_key].delete()
                await self._publish(content_key[0], "DELETED", gone)
        if key[0] == kmock.resource("apiextensions.k8s.io", "v1", "customresourcedefinitions"):
            self._unserve_crd(current)
        self.objects[key].delete()
        await self._publish(key[0], "DELETED", current)
        return {"apiVersion": "v1", "kind": "Status", "status": "Success", "metadata": {}}

    # -- what the apiextensions server does --

    def _serve_crd(self, crd: Obj) -> None:
        spec = crd.get("spec", {})
        names = spec.get("names", {})
        for version in spec.get("versions", []):
            if not version.get("served", True):
                continue
            subresources = set((version.get("subresources") or {}).keys())
            self.resources[f"{spec['group']}/{version['name']}/{names['plural']}"] = (
                kmock.ResourceInfo(
                    kind=names.get("kind"),
                    singular=names.get("singular"),
                    namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                    verbs={"create", "delete", "get", "list", "patch", "update", "watch"},
                    shortnames=set(names.get("shortNames", [])),
                    categories=set(names.get("categories", [])),
                    subresources=subresources,
                )
            )

    def _unserve_crd(self, crd: Obj) -> None:
        spec = crd.get("spec", {})
        for version in spec.get("versions", []):
            key = f"{spec['group']}/{version['name']}/{spec['names']['plural']}"
            if key in self.resources:
                del self.resources[key]

    # -- a CSI driver's provisioner, for file-backed volumes --

    async def _provision(self, pvc: Obj) -> None:
        class_name = pvc.get("spec", {}).get("storageClassName")
        if not class_name or self.volume_dir is None:
            return
        sc_key = (kmock.resource("storage.k8s.io", "v1", "storageclasses"), None, class_name)
        if sc_key not in self.objects or self.objects[sc_key].deleted:
            return
        if self.objects[sc_key].raw.get("provisioner") != FILE_PROVISIONER:
            return
        if self.objects[sc_key].raw.get("volumeBindingMode") == "WaitForFirstConsumer":
            return  # bound when a pod uses it: the scheduler's part, played by tests that need it
        if pvc["spec"].get("volumeName"):
            return  # bound statically
        meta = pvc["metadata"]
        pv_name = f"pvc-{meta['uid']}"
        size = pvc["spec"].get("resources", {}).get("requests", {}).get("storage", "1Mi")
        path = self.volume_dir / f"{pv_name}.img"
        with open(path, "wb") as f:
            f.truncate(parse_quantity(size))
        pv = {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": pv_name},
            "spec": {
                "capacity": {"storage": size},
                "accessModes": pvc["spec"].get("accessModes", ["ReadWriteOnce"]),
                "storageClassName": class_name,
                "persistentVolumeReclaimPolicy": "Delete",
                "local": {"path": str(path)},
                "claimRef": {
                    "kind": "PersistentVolumeClaim",
                    "namespace": meta["namespace"],
                    "name": meta["name"],
                    "uid": meta["uid"],
                },
                "nodeAffinity": {
                    "required": {
                        "nodeSelectorTerms": [
                            {
                                "matchExpressions": [
                                    {
                                        "key": "kubernetes.io/hostname",
                                        "operator": "In",
                                        "values": [self.node],
                                    }
                                ]
                            }
                        ]
                    }
                },
            },
        }
        pv_rt = kmock.resource("", "v1", "persistentvolumes")
        await self._create(pv_rt, self.resources[pv_rt], None, pv)
        pvc_key = (
            kmock.resource("", "v1", "persistentvolumeclaims"),
            meta["namespace"],
            meta["name"],
        )
        bound = self._current(pvc_key)
        bound["spec"]["volumeName"] = pv_name
        bound["status"] = {"phase": "Bound", "capacity": {"storage": size}}
        self._bump(bound)
        self.objects[pvc_key].history.append(bound)
        await self._publish(pvc_key[0], "MODIFIED", bound)

    # -- watch --

    async def _watch(
        self, raw_request: aiohttp.web.BaseRequest, target: Target, query: dict[str, str]
    ) -> aiohttp.web.StreamResponse:
        """A watch stream (see the module docstring): one JSON event a line."""
        try:
            info = self._info(target.resource)
            match = selector_matcher(query)
            since = _number(query.get("resourceVersion"), "resourceVersion", 0)
            seconds = _number(query.get("timeoutSeconds"), "timeoutSeconds", 1800)
        except ApiError as exc:
            return _json(exc.status(), exc.code)
        namespace = target.namespace if info.namespaced else None

        def wanted(resource: kmock.resource, obj: Obj) -> bool:
            meta = obj.get("metadata") or {}
            return (
                resource == target.resource
                and (namespace is None or meta.get("namespace") == namespace)
                and (target.name is None or meta.get("name") == target.name)
                and match(obj)
            )

        bookmarks = self.bookmarks and query.get("allowWatchBookmarks") == "true"
        response = aiohttp.web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(raw_request)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        told = since  # the resourceVersion the client has been brought to
        last_write = loop.time()
        async with self._lock:
            if since:
                batch, cursor, changed = self._events_after(since, wanted)
            else:  # every object first, as ADDED
                batch = [
                    {"type": "ADDED", "object": obj.raw}
                    for (resource, _, _), obj in self.objects.items()
                    if not obj.deleted and wanted(resource, obj.raw)
                ]
                batch = json.loads(json.dumps(batch))  # a snapshot: writes go on meanwhile
                cursor, changed = self._rv, self._change_event()
        try:
            while True:
                for event in batch:
                    await response.write(json.dumps(event).encode() + b"\n")
                if batch:
                    last_write = loop.time()
                    self._count("watched", sum(1 for e in batch if e["type"] != "ERROR"))
                    told = int(batch[-1]["object"].get("metadata", {}).get("resourceVersion", told))
                if cursor is None:
                    break  # too old: the client lists again
                now = loop.time()
                due = now >= deadline or now - last_write >= self.bookmark_interval
                if bookmarks and cursor > told and due:
                    bookmark = {
                        "type": "BOOKMARK",
                        "object": {
                            "apiVersion": _api_version(target.resource),
                            "kind": info.kind,
                            "metadata": {"resourceVersion": str(cursor)},
                        },
                    }
                    await response.write(json.dumps(bookmark).encode() + b"\n")
                    told, last_write = cursor, now
                transport = raw_request.transport
                if now >= deadline or transport is None or transport.is_closing():
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        changed.wait(), min(deadline - now, self.bookmark_interval)
                    )
                async with self._lock:
                    batch, cursor, changed = self._events_after(cursor, wanted)
            await response.write_eof()
        except ConnectionError:
            pass  # the client went away
        return response

    def _change_event(self) -> asyncio.Event:
        if self._changed is None:
            self._changed = asyncio.Event()
        return self._changed

    def _events_after(
        self, version: int, wanted: Callable[[kmock.resource, Obj], bool]
    ) -> tuple[list[Obj], int | None, asyncio.Event]:
        """With the lock held: the events after `version` that a watch wants, the version that
        brings it to (None: `version` is no longer kept, an ERROR 410 is all it gets), and the
        asyncio.Event that the next write sets."""
        changed = self._change_event()
        if version < self._forgotten:
            expired = ApiError(
                410, "Expired", f"too old resource version: {version} ({self._forgotten + 1})"
            )
            return [{"type": "ERROR", "object": expired.status()}], None, changed
        start = bisect.bisect_right(self._events, version, key=lambda e: e[0])
        batch = [
            event
            for _, resource, event in self._events[start:]
            if wanted(resource, event["object"])
        ]
        return batch, self._rv, changed


def _number(text: str | None, name: str, default: int) -> int:
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise ApiError(400, "BadRequest", f"{name}: not a number: {text!r}")
    return value


def _spec_of(obj: Obj) -> Obj:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status")}


def _api_version(resource: kmock.resource) -> str:
    return f"{resource.group}/{resource.version}" if resource.group else str(resource.version)


def _exit_status(code: int) -> Obj:
    """What the error channel carries when an exec'd command ends (as the kubelet says it)."""
    if code == 0:
        return {"metadata": {}, "status": "Success"}
    return {
        "metadata": {},
        "status": "Failure",
        "message": f"command terminated with non-zero exit code: exit status {code}",
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]},
    }


def _json(payload: Obj, code: int) -> aiohttp.web.Response:
    return aiohttp.web.json_response(payload, status=code)


_QUANTITY = re.compile(r"^(\d+)(Ki|Mi|Gi|Ti|k|M|G|T)?$")
_UNITS = {None: 1, "Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40}
_UNITS.update({"k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12})


def parse_quantity(text: str) -> int:
    m = _QUANTITY.match(text)
    if not m:
        raise ApiError(422, "Invalid", f"quantity {text!r}")
    return int(m.group(1)) * _UNITS[m.group(2)]


class ServedCluster:
    """A Cluster served over HTTP on loopback by its own event loop in a thread, so that the
    code under test (synchronous, threads) reaches it as it would reach a cluster."""

    def __init__(self, volume_dir: Path | None = None, node: str = "node-a") -> None:
        self.cluster = Cluster(volume_dir=volume_dir, node=node)
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="k8s-emulator", daemon=True)
        self._error: BaseException | None = None

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._serve())
        except BaseException as exc:  # reported to the test thread by start()
            self._error = exc
            self._ready.set()
        finally:
            self._loop.close()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        async with self.cluster, kmock.Server(self.cluster) as server:
            self.url = str(server.url).rstrip("/")
            self._ready.set()
            await self._stop.wait()

    def start(self) -> ServedCluster:
        self._thread.start()
        self._ready.wait(30)
        if self._error is not None or not self.url:
            raise RuntimeError(f"the emulator did not start: {self._error!r}")
        return self

    def stop(self) -> None:
        """Stop serving. With several clusters, stop them in the reverse order of their start:
        each kmock Server hooks aiohttp's host resolution, a chain that unwinds LIFO."""
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)
        if self._error is not None:
            raise RuntimeError(f"the emulator failed: {self._error!r}") from self._error

    def kubeconfig(self, path: Path) -> Path:
        """A kubeconfig for this cluster, as `mover app` reads one."""
        doc = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "emu", "cluster": {"server": self.url}}],
            "users": [{"name": "tester", "user": {"token": "test-token"}}],
            "contexts": [{"name": "emu", "context": {"cluster": "emu", "user": "tester"}}],
            "current-context": "emu",
        }
        path.write_text(json.dumps(doc))
        os.chmod(path, 0o600)
        return path
