"""Kubernetes tests: kmock's emulator (tests/k8s/emulator.py) over HTTP on loopback, reached
through the official client; the real controller and node agent run in threads of the test.

Volumes are files (the emulator's file provisioner and the path exposer). Repositories are
created with a cheap key derivation so that opening one costs milliseconds.
"""

from __future__ import annotations

import base64
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mover.chunking import ChunkerParams
from mover.crypto import KdfParams
from mover.objects.repository import RepoConfig, Repository
from mover.storage.stack import open_backend
from mover_k8s import api
from mover_k8s.cli import load_crds
from mover_k8s.controller.manager import Controller
from mover_k8s.k8s.client import Kube, Obj, ResourceType
from mover_k8s.node.agent import NodeAgent

from .emulator import FILE_PROVISIONER, ServedCluster

PASSWORD = "k8s-test password"
SYSTEM = "mover-system"
NODE = "node-a"
MiB = 1 << 20
VOLUME_SIZE = 3 * MiB
CHUNKS = ChunkerParams(min_size=16 * 1024, avg_size=64 * 1024, max_size=256 * 1024)
KDF = KdfParams(memory_kib=8 * 1024, iterations=1, lanes=1)

SERVICE_ACCOUNT = ResourceType("", "v1", "serviceaccounts", "ServiceAccount", True)
ROLE_BINDING = ResourceType("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding", True)
WIDGET = ResourceType(
    "example.com", "v1", "widgets", "Widget", True, frozenset(), frozenset({"status"})
)


def wait_until(check: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def init_repository(path: Path) -> Path:
    backend = open_backend(str(path))
    try:
        Repository.init(backend, PASSWORD.encode(), RepoConfig(CHUNKS, pack_size=4 * MiB), KDF)
    finally:
        backend.close()
    return path


@dataclass
class Env:
    """One emulated cluster (with its kube-system namespace) with mover installed: CRDs, the
    mover-system namespace, a Repository `default` (a local directory) and its password Secret."""

    served: ServedCluster
    kube: Kube
    repo_dir: Path
    volume_dir: Path

    def install(self) -> None:
        # Every cluster has it; its uid is the cluster's id (mover_k8s.capture.cluster_id).
        self.kube.create(api.NAMESPACE, {"metadata": {"name": "kube-system"}})
        for crd in load_crds():
            self.kube.create(api.CRD, crd)
        self.kube.create(api.NAMESPACE, {"metadata": {"name": SYSTEM}})
        self.repository("default", self.repo_dir)

    def repository(self, name: str, path: Path, password: str = PASSWORD) -> None:
        self.repository_in(SYSTEM, name, path, password)

    def repository_in(
        self, namespace: str, name: str, path: Path, password: str = PASSWORD
    ) -> None:
        self.kube.create(
            api.SECRET,
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": f"{name}-password", "namespace": namespace},
                "data": {"password": base64.b64encode(password.encode()).decode()},
            },
        )
        self.kube.create(
            api.REPOSITORY,
            {
                "apiVersion": api.API_VERSION,
                "kind": "Repository",
                "metadata": {"name": name, "namespace": namespace},
                "spec": {"url": str(path), "passwordSecretRef": {"name": f"{name}-password"}},
            },
        )

    @contextmanager
    def running(
        self,
        agent: bool = True,
        node: str = NODE,
        agent_grace: float = 0.5,
        bind_timeout: float = 30.0,
    ) -> Iterator[tuple[Controller, NodeAgent | None]]:
        """The controller and (optionally) a node agent, in threads, polling fast, with watches
        on as deployed: their passes read the copy the watches keep (mover_k8s.k8s.cache)."""
        stop = threading.Event()
        controller = Controller(
            self.kube,
            SYSTEM,
            interval=0.05,
            agent_grace=agent_grace,
            bind_timeout=bind_timeout,
            watch=True,
        )
        threads = [threading.Thread(target=controller.run, args=(stop,), daemon=True)]
        node_agent = None
        if agent:
            node_agent = NodeAgent(
                self.kube,
                node,
                SYSTEM,
                interval=0.05,
                progress_interval=0.05,
                threads=2,
                watch=True,
            )
            threads.append(threading.Thread(target=node_agent.run, args=(stop,), daemon=True))
        for thread in threads:
            thread.start()
        try:
            yield controller, node_agent
        finally:
            stop.set()
            for thread in threads:
                thread.join(60)

    def wait_phase(self, rt: ResourceType, name: str, timeout: float = 60.0) -> Obj:
        def done() -> Obj | None:
            obj = self.kube.get(rt, SYSTEM, name)
            return obj if (obj.get("status") or {}).get("phase") in api.DONE_PHASES else None

        result: Obj = wait_until(done, timeout, f"{rt.kind} {name} to end")
        return result


@pytest.fixture
def make_env(tmp_path: Path) -> Iterator[Callable[[str], Env]]:
    made: list[Env] = []

    def make(name: str = "one") -> Env:
        volume_dir = tmp_path / f"{name}-volumes"
        volume_dir.mkdir()
        served = ServedCluster(volume_dir=volume_dir, node=NODE).start()
        env = Env(
            served, Kube.at(served.url), init_repository(tmp_path / f"{name}-repo"), volume_dir
        )
        made.append(env)
        env.install()
        return env

    yield make
    for env in reversed(made):
        env.kube.close()
        env.served.stop()


@pytest.fixture
def env(make_env: Callable[[str], Env]) -> Env:
    return make_env("one")


# -- the application every end-to-end test backs up --------------------------------------

WIDGETS_CRD: Obj = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.example.com"},
    "spec": {
        "group": "example.com",
        "scope": "Namespaced",
        "names": {
            "kind": "Widget",
            "plural": "widgets",
            "singular": "widget",
            "listKind": "WidgetList",
        },
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "x-kubernetes-preserve-unknown-fields": True,
                    }
                },
            }
        ],
    },
}


def storage_class(name: str) -> Obj:
    return {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {"name": name},
        "provisioner": FILE_PROVISIONER,
        "reclaimPolicy": "Delete",
        "volumeBindingMode": "Immediate",
    }


def app_manifests(ns: str, sc: str = "fast") -> list[tuple[ResourceType, Obj]]:
    """What a pipeline applies: the app as git describes it (no status, no volumes' data)."""
    labels = {"app": "shop"}
    return [
        (
            api.NAMESPACE,
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": ns, "labels": {"team": "shop"}},
            },
        ),
        (
            api.CONFIG_MAP,
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "app-config", "namespace": ns, "labels": labels},
                "data": {"greeting": "hello", "mode": "production"},
            },
        ),
        (
            api.CONFIG_MAP,
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "other-config", "namespace": ns, "labels": labels},
                "data": {"colour": "blue"},
            },
        ),
        (
            api.SECRET,
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "app-secret", "namespace": ns, "labels": labels},
                "type": "Opaque",
                "data": {"token": base64.b64encode(b"s3cr3t-t0ken").decode()},
            },
        ),
        (
            api.SERVICE,
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": "shop", "namespace": ns, "labels": labels},
                "spec": {
                    "selector": labels,
                    "ports": [{"port": 80, "targetPort": 8080}],
                    "clusterIP": "10.96.0.17",
                },
            },
        ),
        (
            api.DEPLOYMENT,
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": "shop", "namespace": ns, "labels": labels},
                "spec": {
                    "replicas": 1,
                    "selector": {"matchLabels": labels},
                    "template": {
                        "metadata": {"labels": labels},
                        "spec": {
                            "containers": [{"name": "shop", "image": "shop:1.0"}],
                            "volumes": [
                                {"name": "a", "persistentVolumeClaim": {"claimName": "data-a"}},
                                {"name": "b", "persistentVolumeClaim": {"claimName": "data-b"}},
                            ],
                        },
                    },
                },
            },
        ),
        (
            api.PVC,
            {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {"name": "data-a", "namespace": ns, "labels": labels},
                "spec": {
                    "accessModes": ["ReadWriteOnce"],
                    "storageClassName": sc,
                    "resources": {"requests": {"storage": "3Mi"}},
                },
            },
        ),
        (
            api.PVC,
            {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {"name": "data-b", "namespace": ns, "labels": labels},
                "spec": {
                    "accessModes": ["ReadWriteOnce"],
                    "storageClassName": sc,
                    "resources": {"requests": {"storage": "3Mi"}},
                },
            },
        ),
        (
            WIDGET,
            {
                "apiVersion": "example.com/v1",
                "kind": "Widget",
                "metadata": {"name": "gizmo", "namespace": ns, "labels": labels},
                "spec": {"size": 3, "colour": "red"},
            },
        ),
    ]


def deploy_app(kube: Kube, ns: str, sc: str = "fast") -> None:
    """The app as it runs: manifests applied, then what the cluster adds (statuses, a
    ReplicaSet and a Pod owned by the Deployment)."""
    if kube.find(api.CRD, None, "widgets.example.com") is None:
        kube.create(api.CRD, WIDGETS_CRD)
    for cls in ("fast", "standard"):
        if kube.find(api.STORAGE_CLASS, None, cls) is None:
            kube.create(api.STORAGE_CLASS, storage_class(cls))
    for rt, body in app_manifests(ns, sc):
        kube.create(rt, body)
    rbac = "rbac.authorization.k8s.io/v1"
    for name in ("view", "shop-reader"):
        if kube.find(api.CLUSTER_ROLE, None, name) is None:
            kube.create(
                api.CLUSTER_ROLE,
                {
                    "apiVersion": rbac,
                    "kind": "ClusterRole",
                    "metadata": {"name": name},
                    "rules": [],
                },
            )
    kube.create(
        SERVICE_ACCOUNT,
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": "shop", "namespace": ns},
        },
    )
    subject = {"kind": "ServiceAccount", "name": "shop", "namespace": ns}
    kube.create(
        ROLE_BINDING,
        {
            "apiVersion": rbac,
            "kind": "RoleBinding",
            "metadata": {"name": "shop-view", "namespace": ns},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "view",
            },
            "subjects": [subject],
        },
    )
    kube.create(
        api.CLUSTER_ROLE_BINDING,
        {
            "apiVersion": rbac,
            "kind": "ClusterRoleBinding",
            "metadata": {"name": f"{ns}-reader"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "shop-reader",
            },
            "subjects": [subject],
        },
    )
    deployment = kube.get(api.DEPLOYMENT, ns, "shop")
    kube.patch_status(
        api.DEPLOYMENT, ns, "shop", {"replicas": 1, "readyReplicas": 1, "availableReplicas": 1}
    )
    kube.patch_status(WIDGET, ns, "gizmo", {"phase": "Spinning", "rpm": 1200})
    rs = kube.create(
        api.REPLICA_SET,
        {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {
                "name": "shop-5d9c",
                "namespace": ns,
                "labels": {"app": "shop"},
                "ownerReferences": [
                    {
                        "apiVersion": "apps/v1",
                        "kind": "Deployment",
                        "name": "shop",
                        "uid": deployment["metadata"]["uid"],
                        "controller": True,
                    }
                ],
            },
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": "shop"}},
                "template": deployment["spec"]["template"],
            },
        },
    )
    kube.create(
        api.POD,
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": "shop-5d9c-x7k2p",
                "namespace": ns,
                "labels": {"app": "shop"},
                "ownerReferences": [
                    {
                        "apiVersion": "apps/v1",
                        "kind": "ReplicaSet",
                        "name": "shop-5d9c",
                        "uid": rs["metadata"]["uid"],
                        "controller": True,
                    }
                ],
            },
            "spec": dict(deployment["spec"]["template"]["spec"], nodeName=NODE),
        },
    )


def volume_path(kube: Kube, ns: str, pvc: str) -> Path:
    claim = kube.get(api.PVC, ns, pvc)
    pv = kube.get(api.PV, None, claim["spec"]["volumeName"])
    return Path(pv["spec"]["local"]["path"])


def fill_volume(path: Path, seed: int) -> bytes:
    """Data with a zero run in the middle (stored as a hole) and a repeated block (deduplicated)."""
    rng = random.Random(seed)
    block = rng.randbytes(256 * 1024)
    data = rng.randbytes(MiB) + bytes(512 * 1024) + block + block + rng.randbytes(MiB - 512 * 1024)
    data = data[:VOLUME_SIZE].ljust(VOLUME_SIZE, b"\0")
    path.write_bytes(data)
    return data


def write_app_data(kube: Kube, ns: str) -> dict[str, bytes]:
    return {
        pvc: fill_volume(volume_path(kube, ns, pvc), seed)
        for seed, pvc in enumerate(("data-a", "data-b"))
    }


def backup_body(name: str, **spec: Any) -> Obj:
    return {
        "apiVersion": api.API_VERSION,
        "kind": "Backup",
        "metadata": {"name": name, "namespace": SYSTEM},
        "spec": {"repository": "default", **spec},
    }


def restore_body(name: str, **spec: Any) -> Obj:
    return {
        "apiVersion": api.API_VERSION,
        "kind": "Restore",
        "metadata": {"name": name, "namespace": SYSTEM},
        "spec": spec,
    }


def read_bytes(path: Path) -> bytes:
    with open(path, "rb") as f:
        return f.read()
