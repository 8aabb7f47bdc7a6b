"""Every call to the Kubernetes API goes through `Kube`; nothing else imports `kubernetes`.

Objects travel as plain JSON dicts (`Obj`), not the client's generated models: the controller
handles every kind the cluster serves, custom resources included, and must keep fields it does
not know about (a captured object is restored as it was read). The official client still does
what it is good at: kubeconfig and in-cluster configuration, authentication, TLS, and the HTTP
conventions of the API (`ApiClient.param_serialize` + `call_api`).

Errors: every failure is a `KubeError` (a MoverError) carrying the HTTP status and the API's
reason; `NotFound` and `Conflict` are the two that callers decide on.
"""

from __future__ import annotations

import builtins
import contextlib
import copy
import json
import threading
from collections.abc import Iterator
from typing import Any

import urllib3
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException
from kubernetes.stream import stream as k8s_stream

from mover_k8s.errors import Conflict, KubeError, NotFound
from mover_k8s.k8s.cache import Cache
from mover_k8s.k8s.types import ExecResult, Obj, ResourceType

__all__ = ["ExecResult", "Kube", "Obj", "ResourceType", "Watch"]

MERGE_PATCH = "application/merge-patch+json"
LIST_PAGE = 500
WATCH_SECONDS = 300  # how long the API server keeps one watch open (its timeoutSeconds)


def _config_from_kubeconfig(path: str | None, context: str | None) -> k8s_client.Configuration:
    configuration = k8s_client.Configuration()
    try:
        k8s_config.load_kube_config(
            config_file=path, context=context, client_configuration=configuration
        )
    except (ConfigException, OSError, TypeError, ValueError) as exc:
        where = path or "the default kubeconfig (~/.kube/config or $KUBECONFIG)"
        raise KubeError(f"cannot load {where}: {exc}") from None
    return configuration


class Kube:
    """A connection to one cluster's API. Thread-safe: urllib3's pool is."""

    def __init__(self, configuration: k8s_client.Configuration) -> None:
        self.host: str = configuration.host
        self._api = k8s_client.ApiClient(configuration)
        self._discovery: builtins.list[ResourceType] | None = None
        self.page_size = LIST_PAGE
        self._lock = threading.Lock()
        self.cache: Cache | None = None

    def cached(self, cache: Cache) -> Kube:
        """This connection, with lists of the kinds `cache` holds answered from it and writes
        of those kinds added to it (mover_k8s.k8s.cache). The original stays uncached."""
        twin = copy.copy(self)
        twin.cache = cache
        return twin

    @classmethod
    def connect(cls, kubeconfig: str | None = None, context: str | None = None) -> Kube:
        """From a kubeconfig (default: $KUBECONFIG, ~/.kube/config), else in-cluster."""
        if kubeconfig is None and context is None:
            try:
                configuration = k8s_client.Configuration()
                k8s_config.load_incluster_config(client_configuration=configuration)
                return cls(configuration)
            except ConfigException:
                pass  # not in a pod: the kubeconfig it is
        return cls(_config_from_kubeconfig(kubeconfig, context))

    @classmethod
    def from_kubeconfig(cls, kubeconfig: str | None = None, context: str | None = None) -> Kube:
        """From a kubeconfig only (default: $KUBECONFIG, ~/.kube/config), never in-cluster:
        a person's own credentials."""
        return cls(_config_from_kubeconfig(kubeconfig, context))

    @classmethod
    def at(cls, host: str) -> Kube:
        """An API server at `host` without authentication (a local emulator)."""
        configuration = k8s_client.Configuration()
        configuration.host = host
        return cls(configuration)

    def as_user(self, token: str) -> Kube:
        """A connection to the same API server (its address and TLS settings) that sends
        `token` as its bearer token instead of this one's credentials: a dashboard acting for
        the person whose request carried the token, so the API server applies their RBAC."""
        configuration = copy.copy(self._api.configuration)
        configuration.api_key = {"BearerToken": token}
        configuration.api_key_prefix = {"BearerToken": "Bearer"}
        configuration.refresh_api_key_hook = None
        configuration.cert_file = configuration.key_file = None  # not this process's identity
        configuration.username = configuration.password = None
        return Kube(configuration)

    def close(self) -> None:
        self._api.close()

    # -- the one place requests are made -------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        query: dict[str, str] | None = None,
        body: Obj | None = None,
        content_type: str | None = None,
        timeout: float = 60.0,
    ) -> Obj:
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type or "application/json"
        params = self._api.param_serialize(
            method,
            path,
            query_params=builtins.list((query or {}).items()) or None,
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        try:
            response = self._api.call_api(*params, _request_timeout=timeout)
            response.read()
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise KubeError(
                f"cannot reach the Kubernetes API at {self.host}: {exc}", temporary=True
            ) from None
        except ApiException as exc:  # raised by the client before a response (rare)
            raise KubeError(f"{method} {path}: {exc.reason}", status=exc.status or 0) from None
        raw: bytes = response.data or b""
        status: int = response.status
        try:
            payload = json.loads(raw) if raw else {}
        except ValueError:
            payload = {"message": raw[:200].decode(errors="replace")}
        if not 200 <= status <= 299:
            raise _error(method, path, status, payload)
        if not isinstance(payload, dict):
            raise KubeError(f"{method} {path}: the API answered {type(payload).__name__}")
        return payload

    def resource_version(
        self, rt: ResourceType, namespace: str | None = None, label_selector: str | None = None
    ) -> str:
        """The collection's resourceVersion now, read with a one-item list (the same cost at any
        number of objects): where a watch that wants the changes from now on starts. Asked
        without urllib3's retries, as watches are."""
        query = {"limit": "1"}
        if label_selector:
            query["labelSelector"] = label_selector
        response = self._get_once(
            rt.path(namespace), query, urllib3.Timeout(connect=10.0, read=60.0)
        )
        try:
            raw = response.read()
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise KubeError(
                f"cannot reach the Kubernetes API at {self.host}: {exc}", temporary=True
            ) from None
        finally:
            response.release_conn()
        try:
            page = json.loads(raw) if raw else {}
        except ValueError:
            page = {}
        if not 200 <= response.status <= 299:
            raise _error("GET", rt.path(namespace), response.status, page)
        meta = page.get("metadata") if isinstance(page, dict) else None
        return str((meta or {}).get("resourceVersion") or "")

    def watch(
        self,
        rt: ResourceType,
        namespace: str | None = None,
        label_selector: str | None = None,
        resource_version: str = "",
        timeout: int = WATCH_SECONDS,
    ) -> Watch:
        """A watch of the changes after `resource_version` (a list's, or where the last watch
        got to: `Watch.resource_version`), with bookmarks, that the server ends after `timeout`
        seconds; without a version, every object comes first as ADDED. Raises KubeError when it
        cannot be opened (status 410: the version is too old, list again)."""
        query = {
            "watch": "true",
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(int(timeout)),
        }
        if resource_version:
            query["resourceVersion"] = resource_version
        if label_selector:
            query["labelSelector"] = label_selector
        path = rt.path(namespace)
        # The server ends the watch after `timeout`; the read timeout only catches a connection
        # that died without a word.
        response = self._get_once(path, query, urllib3.Timeout(connect=10.0, read=timeout + 30.0))
        if not 200 <= response.status <= 299:
            try:
                raw = response.read()
            except (urllib3.exceptions.HTTPError, OSError):
                raw = b""
            finally:
                response.release_conn()
            try:
                payload = json.loads(raw) if raw else {}
            except ValueError:
                payload = {}
            raise _error("WATCH", path, response.status, payload)
        return Watch(response, path, resource_version)

    def _get_once(
        self, path: str, query: dict[str, str], timeout: urllib3.Timeout
    ) -> urllib3.BaseHTTPResponse:
        """A GET whose response is read by the caller, without urllib3's retries: a watch that
        fails is its caller's to retry with its own backoff, instead of urllib3 logging a
        warning for every retry of every watch while the API is away."""
        _, url, headers, _, _ = self._api.param_serialize(
            "GET",
            path,
            query_params=builtins.list(query.items()),
            header_params={"Accept": "application/json"},
            auth_settings=["BearerToken"],
        )
        try:
            response: urllib3.BaseHTTPResponse = self._api.rest_client.pool_manager.request(
                "GET", url, headers=headers, timeout=timeout, preload_content=False, retries=False
            )
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise KubeError(
                f"cannot reach the Kubernetes API at {self.host}: {exc}", temporary=True
            ) from None
        return response

    # -- pods/exec ------------------------------------------------------------------------

    def exec(
        self,
        namespace: str,
        pod: str,
        container: str,
        command: builtins.list[str],
        timeout: float,
    ) -> ExecResult:
        """Run `command` in a pod's container (pods/exec over the channel.k8s.io websocket
        protocol, through the official client's `stream`). Past `timeout` seconds the stream is
        closed and the exit code is None. The client's `stream` swaps the request function of
        the ApiClient it is given: each call gets its own, so it never races the other threads'
        requests."""
        api = k8s_client.ApiClient(self._api.configuration)
        try:
            ws = k8s_stream(
                k8s_client.CoreV1Api(api).connect_get_namespaced_pod_exec,
                pod,
                namespace,
                container=container,
                command=command,
                stdin=False,
                stdout=True,
                stderr=True,
                tty=False,
                _preload_content=False,
            )
        except ApiException as exc:
            raise KubeError(
                f"exec in {namespace}/{pod} ({container}): {exc.reason}", status=exc.status or 0
            ) from None
        try:
            ws.run_forever(timeout=timeout)
            stdout, stderr = ws.read_stdout(timeout=0), ws.read_stderr(timeout=0)
            if ws.is_open():
                return ExecResult(None, stdout, stderr)
            code = ws.returncode
            return ExecResult(int(code) if code is not None else None, stdout, stderr)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise KubeError(
                f"exec in {namespace}/{pod} ({container}): {exc}", temporary=True
            ) from None
        finally:
            ws.close()
            if ws.sock is not None:
                ws.sock.shutdown()  # close() leaves the socket open once the server closed
            api.close()

    # -- objects --------------------------------------------------------------------------

    def get(self, rt: ResourceType, namespace: str | None, name: str) -> Obj:
        return self.request("GET", rt.path(namespace, name))

    def find(self, rt: ResourceType, namespace: str | None, name: str) -> Obj | None:
        try:
            return self.get(rt, namespace, name)
        except NotFound:
            return None

    def list(
        self,
        rt: ResourceType,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> builtins.list[Obj]:
        """Every object: from the cache where it holds them, else read in pages of `page_size`
        (a namespace of 50,000 objects costs the API server, and this process, one page at a
        time, not one response of hundreds of MB)."""
        if self.cache is not None:
            held = self.cache.list(rt, namespace, label_selector, field_selector)
            if held is not None:
                return held
        return self.list_versioned(rt, namespace, label_selector, field_selector)[0]

    def list_versioned(
        self,
        rt: ResourceType,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> tuple[builtins.list[Obj], str]:
        """Every object from the API, and the collection's resourceVersion (the first page's:
        the server answers the later pages at that version), where a watch of the changes
        since starts."""
        query: dict[str, str] = {"limit": str(self.page_size)}
        if label_selector:
            query["labelSelector"] = label_selector
        if field_selector:
            query["fieldSelector"] = field_selector
        items: builtins.list[Obj] = []
        version = ""
        while True:
            page = self.request("GET", rt.path(namespace), query=query)
            items.extend(page.get("items") or [])
            meta = page.get("metadata") or {}
            version = version or str(meta.get("resourceVersion") or "")
            token = meta.get("continue")
            if not token:
                break
            query["continue"] = token
        for item in items:
            # Lists leave apiVersion/kind off their items; a captured object needs them.
            item.setdefault("apiVersion", rt.api_version)
            item.setdefault("kind", rt.kind)
        return items, version

    def create(self, rt: ResourceType, body: Obj) -> Obj:
        namespace = body.get("metadata", {}).get("namespace")
        return self._wrote(rt, self.request("POST", rt.path(namespace), body=body))

    def replace(self, rt: ResourceType, body: Obj) -> Obj:
        """PUT: fails with Conflict when metadata.resourceVersion is stale."""
        meta = body.get("metadata", {})
        path = rt.path(meta.get("namespace"), meta["name"])
        return self._wrote(rt, self.request("PUT", path, body=body))

    def patch(
        self, rt: ResourceType, namespace: str | None, name: str, patch: Obj, sub: str = ""
    ) -> Obj:
        """A JSON merge patch (RFC 7396): the one patch type every resource accepts."""
        path = rt.path(namespace, name, sub)
        answer = self.request("PATCH", path, body=patch, content_type=MERGE_PATCH)
        # Other subresources (scale) answer with an object of another kind.
        return self._wrote(rt, answer) if sub in ("", "status") else answer

    def patch_status(self, rt: ResourceType, namespace: str | None, name: str, status: Obj) -> Obj:
        sub = "status" if "status" in rt.subresources else ""
        return self.patch(rt, namespace, name, {"status": status}, sub)

    def delete(self, rt: ResourceType, namespace: str | None, name: str) -> bool:
        """False when it was already gone."""
        try:
            self.request("DELETE", rt.path(namespace, name))
        except NotFound:
            return False
        finally:
            if self.cache is not None:
                # Gone, or going (finalizers): the watch brings it back while it stays.
                self.cache.removed(rt, namespace, name)
        return True

    def _wrote(self, rt: ResourceType, obj: Obj) -> Obj:
        if self.cache is not None and obj.get("metadata"):
            self.cache.stored(rt, obj)
        return obj

    # -- discovery ------------------------------------------------------------------------

    def discover(self, refresh: bool = False) -> builtins.list[ResourceType]:
        """Every kind served, in each group's preferred version (cached until refresh)."""
        with self._lock:
            if self._discovery is not None and not refresh:
                return self._discovery
        found: builtins.list[ResourceType] = builtins.list(self._group_version("", "v1"))
        groups = self.request("GET", "/apis").get("groups") or []
        for group in groups:
            preferred = (group.get("preferredVersion") or {}).get("version")
            versions = [v["version"] for v in group.get("versions") or []]
            version = preferred or (versions[0] if versions else None)
            if version:
                found.extend(self._group_version(group["name"], version))
        with self._lock:
            self._discovery = found
        return found

    def _group_version(self, group: str, version: str) -> Iterator[ResourceType]:
        path = f"/apis/{group}/{version}" if group else f"/api/{version}"
        try:
            listing = self.request("GET", path)
        except NotFound:  # a group that went away between the two calls
            return
        entries = listing.get("resources") or []
        subs: dict[str, set[str]] = {}
        for entry in entries:
            name = entry.get("name", "")
            if "/" in name:
                parent, sub = name.split("/", 1)
                subs.setdefault(parent, set()).add(sub)
        for entry in entries:
            name = entry.get("name", "")
            if "/" in name or not entry.get("kind"):
                continue
            yield ResourceType(
                group=group,
                version=version,
                plural=name,
                kind=entry["kind"],
                namespaced=bool(entry.get("namespaced")),
                verbs=frozenset(entry.get("verbs") or ()),
                subresources=frozenset(subs.get(name, ())),
            )

    def resource_for(self, api_version: str, kind: str) -> ResourceType:
        """The type of `kind` in `api_version` (any served version of its group)."""
        group, _, version = api_version.rpartition("/")
        for refresh in (False, True):
            candidates = [
                rt for rt in self.discover(refresh) if rt.group == group and rt.kind == kind
            ]
            for rt in candidates:
                if rt.version == version:
                    return rt
            if candidates:
                # Discovery lists preferred versions only; the same kind in the asked version
                # has the same plural and scope.
                c = candidates[0]
                return ResourceType(
                    group, version, c.plural, kind, c.namespaced, c.verbs, c.subresources
                )
        raise NotFound(f"the cluster serves no {kind} in {api_version}")


class Watch:
    """One watch request's events ({"type", "object"}) as they arrive, until the server ends
    the stream (its timeoutSeconds) or the connection is cut; the caller then watches again
    from `resource_version`, which follows the events and bookmarks, so that the next watch
    neither misses nor replays anything. An ERROR event raises its KubeError (status 410: the
    version is too old, list again).

    `close()` may be called from any thread: it shuts the connection down, so that a thread
    blocked reading it (nothing may come for minutes) sees the end at once. Use it as a context
    manager, so that the connection goes back even if the events are not read to the end."""

    def __init__(
        self, response: urllib3.BaseHTTPResponse, path: str, resource_version: str
    ) -> None:
        self.resource_version = resource_version
        self._response = response
        self._path = path
        self._lock = threading.Lock()
        self._done = False

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *exc: object) -> None:
        self._finish(clean=False)

    def __iter__(self) -> Iterator[Obj]:
        clean = False
        try:
            pending = b""
            for chunk in self._response.stream(65536):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    event = json.loads(line) if line.strip() else None
                    if not isinstance(event, dict):
                        continue
                    obj = event.get("object")
                    obj = obj if isinstance(obj, dict) else {}
                    if event.get("type") == "ERROR":
                        raise _error("WATCH", self._path, int(obj.get("code") or 500), obj)
                    version = (obj.get("metadata") or {}).get("resourceVersion")
                    yield event
                    if version:
                        self.resource_version = str(version)
            clean = True
        except (urllib3.exceptions.HTTPError, OSError, ValueError):
            pass  # cut, or closed: the caller watches again from resource_version
        finally:
            self._finish(clean)

    def close(self) -> None:
        with self._lock:
            if self._done:
                return
            with contextlib.suppress(OSError, ValueError, RuntimeError):
                self._response.shutdown()  # unblocks a read in another thread

    def _finish(self, clean: bool) -> None:
        with self._lock:
            if self._done:
                return
            self._done = True
            if not clean:  # a connection in the middle of a response cannot be reused
                self._response.close()
            self._response.release_conn()


def _error(method: str, path: str, status: int, payload: Any) -> KubeError:
    message = payload.get("message") if isinstance(payload, dict) else None
    reason = payload.get("reason") if isinstance(payload, dict) else None
    text = f"{method} {path}: {status} {reason or ''} {message or ''}".strip()
    if status == 404:
        return NotFound(text, status=status, reason=reason or "NotFound")
    if status == 409:
        return Conflict(text, status=status, reason=reason or "Conflict")
    return KubeError(text, status=status, reason=reason or "", temporary=status >= 500)
