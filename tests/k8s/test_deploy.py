"""The deploy manifests: each component runs a `mover agent` command that exists with the
options given, as the account that the RBAC rules grant to."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from mover_k8s.cli import agent

DEPLOY = Path(__file__).resolve().parents[2] / "agent" / "deploy"


def documents() -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    return [
        doc
        for name in kustomization["resources"]
        for doc in yaml.safe_load_all((DEPLOY / name).read_text())
    ]


def workload(kind: str) -> dict[str, Any]:
    found: dict[str, Any] = next(d for d in documents() if d["kind"] == kind)
    return found


@pytest.mark.parametrize(("kind", "command"), [("Deployment", "controller"), ("DaemonSet", "node")])
def test_components_run_existing_commands(
    kind: str, command: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NODE_NAME", "node-a")  # the DaemonSet sets it from spec.nodeName
    spec = workload(kind)["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    args = container["args"]
    assert args[:2] == ["agent", command]
    sub = agent.get_command(click.Context(agent), command)
    assert sub is not None
    ctx = sub.make_context(command, list(args[2:]))
    assert ctx.params["namespace"] == "mover-system"
    (port,) = [p["containerPort"] for p in container["ports"] if p["name"] == "metrics"]
    assert port == ctx.params["metrics_port"]
    bindings = [d for d in documents() if d["kind"] == "ClusterRoleBinding"]
    accounts = {s["name"] for b in bindings for s in b["subjects"]}
    assert spec["serviceAccountName"] in accounts


def test_node_agent_sees_the_kubelet_directory_and_its_node_name() -> None:
    spec = workload("DaemonSet")["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts["/var/lib/kubelet"]["mountPropagation"] == "HostToContainer"
    env = {e["name"]: e for e in container["env"]}
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    assert container["securityContext"]["privileged"] is True
