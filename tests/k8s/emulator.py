"""A Kubernetes API for tests: kmock's KubernetesEmulator, with what kmock 0.8 lacks filled in.

kmock serves the HTTP, API discovery (`load_bundled()`: the built-in kinds of a real cluster),
watch streams, and keeps objects in `kmock.objects` (the same store is used here, so its watch
and discovery see every write). What kmock 0.8 does not do, and a real API server does, is done
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
- every write bumps one cluster-wide resourceVersion; PUT (kmock has none) and PATCH with a
  stale metadata.resourceVersion answer 409 Conflict;
- JSON merge patch (RFC 7396) and PUT replace; the status subresource: writes to the object
  keep its status, writes to /status change only the status; generation grows on spec changes;
- label selectors (=, ==, !=, in, notin, exists, !exists) and field selectors (=, ==, != on any
  dotted path) on list, and on watch; pages on list (`limit`, `continue`);
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

What a cluster's controllers would do is not emulated, except one thing tests need: a file
provisioner. A PVC whose StorageClass names the provisioner `file.mover.test` is bound at once
(unless the class binds on first use, WaitForFirstConsumer) to a new PV backed by a sparse file
under `volume_dir` (a `local` volume on `node`), as a CSI driver would provision a disk; the
path exposer reads and writes such volumes.
"""

from __future__ import annotations

import asyncio
import copy
import datetime
import gzip
import importlib.resources
import json
import os
import re
import threading
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp.web
import attrs
import kmock
from kmock._internal import rendering

FILE_PROVISIONER = "file.mover.test"
EXEC_PROTOCOL = "v4.channel.k8s.io"
_EXEC_PATH = re.compile(r"^/api/v1/namespaces/([^/]+)/pods/([^/]+)/exec$")
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
    _rv: int = attrs.field(default=0, init=False)

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
            return await self._exec(raw_request, exec_target.group(1), exec_target.group(2))
        target = parse_target(raw_request.path)
        query = dict(raw_request.query)
        if query.get("watch") == "1":  # kmock knows only watch=true
            raw_request = raw_request.clone(rel_url=raw_request.rel_url.update_query(watch="true"))
            query["watch"] = "true"
        if target is None or query.get("watch") == "true":
            return await super().__call__(raw_request)
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
        if method == "GET":
            return 200, self._current(key)
        if method in ("PUT", "PATCH"):
            if not isinstance(body, dict):
                raise ApiError(400, "BadRequest", f"{method} needs an object")
            return 200, await self._update(key, info, method, target.sub, body)
        if method == "DELETE":
            return 200, await self._delete(key)
        raise ApiError(405, "MethodNotAllowed", method)

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
        return {
            "apiVersion": api_version,
            "kind": f"{info.kind}List",
            "metadata": meta,
            "items": items,
        }

    # -- writes --

    async def _publish(self, resource: kmock.resource, kind: str, obj: Obj) -> None:
        await self._buses[resource].put({"type": kind, "object": copy.deepcopy(obj)})

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

    # -- watch with selectors --

    async def _serve_watch(self, request: rendering.Request) -> AsyncIterator[rendering.Payload]:
        match = selector_matcher(dict(request.params))
        async for event in super()._serve_watch(request):
            if isinstance(event, dict) and not match(event.get("object") or {}):
                continue
            yield event


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
