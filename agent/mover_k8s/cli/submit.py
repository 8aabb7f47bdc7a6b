"""Create one of our objects for people: a clear word when that cannot be done, then, with
--wait, follow it to its end and exit with its outcome."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING

import click

from mover.errors import MoverError, UsageError
from mover_k8s import api
from mover_k8s.cli.options import DEFAULT_NAMESPACE
from mover_k8s.cli.progress import status_line
from mover_k8s.cli.render import show_object
from mover_k8s.conditions import condition
from mover_k8s.errors import Conflict, KubeError
from mover_k8s.k8s.types import Obj, ResourceType

if TYPE_CHECKING:
    from mover_k8s.k8s.client import Kube


def create_or_explain(kube: Kube, rt: ResourceType, body: Obj) -> Obj:
    """Create `body`; a name taken, or no such kind or namespace there, is one clear line."""
    try:
        return kube.create(rt, body)
    except Conflict:
        meta = body["metadata"]
        raise UsageError(
            f"{body['kind']} {meta['namespace']}/{meta['name']} exists already; choose another name"
        ) from None
    except KubeError as exc:
        if exc.status == 404:
            raise UsageError(
                f"cannot create {body['kind']} in namespace {body['metadata']['namespace']}: "
                f"{exc}; is mover installed (mover agent crds | kubectl apply -f -) and the "
                "namespace there?"
            ) from None
        raise


def submit(
    kube: Kube,
    rt: ResourceType,
    namespace: str,
    name: str,
    spec: Obj,
    wait: bool,
    timeout: float,
    as_json: bool,
) -> None:
    """Create one of our objects, show it (once finished, with wait) and, with wait, exit with
    its outcome."""
    repository = spec.get("repository") or (spec.get("template") or {}).get("repository")
    if repository:
        require_repository(kube, namespace, str(repository))
    body = {
        "apiVersion": api.API_VERSION,
        "kind": rt.kind,
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }
    obj = create_or_explain(kube, rt, body)
    if wait:
        obj = wait_for(kube, rt, namespace, name, timeout)
    show_object(obj, as_json)
    if wait:
        outcome(obj)


def require_repository(kube: Kube, namespace: str, name: str) -> None:
    """The Repository a new object names must be in mover's namespace: a missing one most often
    means -n was given the app's namespace."""
    try:
        found = kube.find(api.REPOSITORY, namespace, name)
    except KubeError:
        return  # not allowed to read it, or the API is away: the controller will say
    if found is None:
        raise UsageError(
            f"no Repository {name!r} in namespace {namespace!r}: -n/--namespace is mover's own "
            f"namespace (default {DEFAULT_NAMESPACE}), where its Repositories are; name the "
            "app's namespaces with --include-namespace"
        )


def wait_for(kube: Kube, rt: ResourceType, namespace: str, name: str, timeout: float) -> Obj:
    """Poll until the object ends; on a terminal, show its progress on stderr as it changes."""
    deadline = time.monotonic() + timeout
    last = ""
    while True:
        obj = kube.get(rt, namespace, name)
        phase = (obj.get("status") or {}).get("phase") or api.NEW
        if sys.stderr.isatty():
            line = status_line(kube, obj)
            if line != last:
                click.echo(line, err=True)
            last = line
        if phase in api.DONE_PHASES:
            return obj
        if time.monotonic() > deadline:
            raise MoverError(f"{rt.kind} {name} is still {phase} after {timeout:.0f}s")
        time.sleep(0.5)


def outcome(obj: Obj) -> None:
    """Exit 1 with the Ready condition's reason when the object did not complete."""
    phase = (obj.get("status") or {}).get("phase")
    if phase == api.COMPLETED:
        return
    ready = condition(obj, "Ready") or {}
    raise MoverError(
        f"{obj['kind']} {obj['metadata']['name']} {phase}: "
        f"{ready.get('reason', '')}: {ready.get('message', '')}"
    )
