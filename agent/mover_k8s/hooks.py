"""Backup hooks: commands run in a pod's container before the volumes are backed up (e.g. a
database freeze or a flush) and after (the thaw), declared by pod annotations or in
`Backup.spec.hooks` (the names Velero users know, under mover.dev).

Annotations on a pod in the Backup's scope (`pre.` and the same with `post.`):

    pre.hook.backup.mover.dev/container   the container (default: the pod's first)
    pre.hook.backup.mover.dev/command     a JSON array of strings: ["fsfreeze", "--freeze", "/data"]
    pre.hook.backup.mover.dev/timeout     a duration, e.g. 30s, 2m (default 30s)
    pre.hook.backup.mover.dev/on-error    Fail (default) or Continue

In the spec: `hooks: [{namespace, labelSelector, container, pre: [[...]], post: [[...]],
timeout, onError}]`, run in every pod the selector finds (in `namespace`, else in each of
spec.includedNamespaces, else in every namespace).

Everything is parsed before anything runs: a bad declaration fails the Backup with reason
InvalidHook and nothing run or stored. The commands run through `Executor` (pods/exec; the
real one is `Kube.exec`).
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass
from typing import Protocol

from mover_k8s import api
from mover_k8s.capture import selector_string
from mover_k8s.errors import KubeError, SpecError
from mover_k8s.k8s.types import ExecResult, Obj, ResourceType

ANNOTATION = "hook.backup.mover.dev"
PHASES = ("pre", "post")
FAIL, CONTINUE = "Fail", "Continue"
DEFAULT_TIMEOUT = 30.0
STDERR_TAIL = 400
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(h|m|s)")


class Executor(Protocol):
    """Runs a command in a pod's container (pods/exec)."""

    def exec(
        self, namespace: str, pod: str, container: str, command: list[str], timeout: float
    ) -> ExecResult: ...


class PodLister(Protocol):
    def list(
        self,
        rt: ResourceType,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> list[Obj]: ...


@dataclass(frozen=True)
class Hook:
    namespace: str
    pod: str
    container: str
    phase: str  # pre | post
    command: list[str]
    timeout: float
    on_error: str
    source: str  # "annotation" or "spec.hooks[N]"

    def to_obj(self) -> Obj:
        obj = asdict(self)
        obj["onError"] = obj.pop("on_error")
        return obj

    @classmethod
    def of(cls, obj: Obj) -> Hook:
        return cls(
            str(obj["namespace"]),
            str(obj["pod"]),
            str(obj["container"]),
            str(obj["phase"]),
            [str(a) for a in obj["command"]],
            float(obj["timeout"]),
            str(obj["onError"]),
            str(obj.get("source", "")),
        )

    def describe(self) -> str:
        return (
            f"{self.phase} hook in pod {self.namespace}/{self.pod}, container {self.container}, "
            f"command {json.dumps(self.command)}"
        )


def parse_duration(text: str, what: str) -> float:
    parts = _DURATION.findall(text)
    if not parts or "".join(a + b for a, b in parts) != text:
        raise SpecError("InvalidHook", f"{what}: {text!r} is not a duration like 30s or 2m")
    unit = {"h": 3600, "m": 60, "s": 1}
    seconds = sum(float(n) * unit[u] for n, u in parts)
    if seconds <= 0:
        raise SpecError("InvalidHook", f"{what}: the timeout must be more than 0s")
    return seconds


def _on_error(text: str, what: str) -> str:
    if text not in (FAIL, CONTINUE):
        raise SpecError("InvalidHook", f"{what}: on-error {text!r} is neither Fail nor Continue")
    return text


def _command(value: object, what: str) -> list[str]:
    if not isinstance(value, list) or not value or not all(isinstance(a, str) for a in value):
        raise SpecError("InvalidHook", f"{what}: a command is a non-empty array of strings")
    return [str(a) for a in value]


def _container(pod: Obj, name: str, what: str) -> str:
    names = [str(c.get("name")) for c in (pod.get("spec") or {}).get("containers") or []]
    if not name:
        if not names:
            raise SpecError("InvalidHook", f"{what}: the pod has no container")
        return names[0]
    if name not in names:
        raise SpecError("InvalidHook", f"{what}: the pod has no container {name!r}")
    return name


def _runs(pod: Obj) -> bool:
    """A pod that ended (Succeeded, Failed) has no process to run a command in."""
    return ((pod.get("status") or {}).get("phase") or "Running") not in ("Succeeded", "Failed")


def from_annotations(pod: Obj) -> list[Hook]:
    meta = pod.get("metadata") or {}
    notes = meta.get("annotations") or {}
    where = f"pod {meta.get('namespace')}/{meta.get('name')}"
    hooks: list[Hook] = []
    for phase in PHASES:
        prefix = f"{phase}.{ANNOTATION}/"
        keys = {k[len(prefix) :]: str(v) for k, v in notes.items() if k.startswith(prefix)}
        if not keys:
            continue
        what = f"{where}: annotation {prefix}"
        unknown = sorted(set(keys) - {"container", "command", "timeout", "on-error"})
        if unknown:
            raise SpecError("InvalidHook", f"{what}{unknown[0]} is not a hook setting")
        if "command" not in keys:
            raise SpecError("InvalidHook", f"{what}command is missing")
        try:
            value = json.loads(keys["command"])
        except ValueError as exc:
            raise SpecError(
                "InvalidHook", f"{what}command is not a JSON array of strings: {exc}"
            ) from None
        hooks.append(
            Hook(
                str(meta.get("namespace")),
                str(meta.get("name")),
                _container(pod, keys.get("container", ""), f"{what}container"),
                phase,
                _command(value, f"{what}command"),
                parse_duration(keys["timeout"], f"{what}timeout")
                if "timeout" in keys
                else DEFAULT_TIMEOUT,
                _on_error(keys.get("on-error", FAIL), f"{what}on-error"),
                "annotation",
            )
        )
    return hooks


def from_spec(spec: Obj, pods: PodLister) -> list[Hook]:
    hooks: list[Hook] = []
    for index, entry in enumerate(spec.get("hooks") or []):
        what = f"spec.hooks[{index}]"
        if not isinstance(entry, dict):
            raise SpecError("InvalidHook", f"{what} is not an object")
        timeout = (
            parse_duration(str(entry["timeout"]), f"{what}.timeout")
            if entry.get("timeout")
            else DEFAULT_TIMEOUT
        )
        on_error = _on_error(str(entry.get("onError") or FAIL), f"{what}.onError")
        commands = {
            phase: [
                _command(c, f"{what}.{phase}[{i}]") for i, c in enumerate(entry.get(phase) or [])
            ]
            for phase in PHASES
        }
        selector = selector_string(entry.get("labelSelector"))
        namespaces: list[str | None] = (
            [str(entry["namespace"])]
            if entry.get("namespace")
            else list(spec.get("includedNamespaces") or []) or [None]
        )
        for namespace in namespaces:
            found = pods.list(api.POD, namespace, label_selector=selector or None)
            for pod in sorted(
                found, key=lambda p: (p["metadata"]["namespace"], p["metadata"]["name"])
            ):
                if not _runs(pod):
                    continue
                meta = pod["metadata"]
                container = _container(
                    pod,
                    str(entry.get("container") or ""),
                    f"{what} in pod {meta['namespace']}/{meta['name']}",
                )
                for phase in PHASES:
                    for command in commands[phase]:
                        hooks.append(
                            Hook(
                                meta["namespace"],
                                meta["name"],
                                container,
                                phase,
                                command,
                                timeout,
                                on_error,
                                what,
                            )
                        )
    return hooks


def plan(spec: Obj, captured: list[Obj], pods: PodLister) -> list[Hook]:
    """Every hook of a Backup, in the order they run: the annotations of the captured pods
    (sorted by namespace and name), then spec.hooks in order. Raises SpecError (InvalidHook)."""
    in_scope = sorted(
        (o for o in captured if o.get("kind") == "Pod" and o.get("apiVersion") == "v1"),
        key=lambda p: (p["metadata"].get("namespace", ""), p["metadata"]["name"]),
    )
    hooks: list[Hook] = []
    for pod in in_scope:
        if _runs(pod):
            hooks.extend(from_annotations(pod))
    hooks.extend(from_spec(spec, pods))
    return hooks


def run(
    executor: Executor, hooks: list[Hook], stop_on_failure: bool = True
) -> tuple[list[Obj], str | None]:
    """Run `hooks` in order. Returns the record of each run and, when a hook with onError=Fail
    failed, why (the first such); a failure under Continue is recorded only. Pre hooks stop at
    that failure; post hooks (stop_on_failure=False) all run, so that nothing stays frozen."""
    records: list[Obj] = []
    failure: str | None = None
    for hook in hooks:
        started = time.monotonic()
        record: Obj = {
            "namespace": hook.namespace,
            "pod": hook.pod,
            "container": hook.container,
            "phase": hook.phase,
            "command": hook.command,
            "onError": hook.on_error,
        }
        try:
            result = executor.exec(
                hook.namespace, hook.pod, hook.container, hook.command, hook.timeout
            )
        except KubeError as exc:
            record.update(outcome="Error", message=str(exc)[-STDERR_TAIL:])
        else:
            if result.exit_code is None:
                record.update(
                    outcome="TimedOut", message=f"ran past its timeout of {hook.timeout:g}s"
                )
            else:
                record["exitCode"] = result.exit_code
                record["outcome"] = "Succeeded" if result.exit_code == 0 else "Failed"
                if result.exit_code != 0:
                    record["message"] = (
                        f"exit code {result.exit_code}: {result.stderr.strip()[-STDERR_TAIL:]}"
                    )
        record["durationSeconds"] = round(time.monotonic() - started, 3)
        records.append(record)
        if record["outcome"] != "Succeeded" and hook.on_error == FAIL:
            failure = failure or f"{hook.describe()}: {record['message']}"
            if stop_on_failure:
                break
    return records, failure


def owed_post_hooks(hooks: list[Hook], pre_records: list[Obj], pre_failed: bool) -> list[Hook]:
    """The post hooks owed once pre hooks ran: all of them, or, when a pre hook failed, those of
    the pods in which a pre hook ran (the failed one included), so that nothing stays frozen."""
    post = [h for h in hooks if h.phase == "post"]
    if not pre_failed:
        return post
    touched = {(r["namespace"], r["pod"]) for r in pre_records}
    return [h for h in post if (h.namespace, h.pod) in touched]
