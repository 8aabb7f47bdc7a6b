"""A fleet moved between clusters: N apps backed up per namespace, then migrated, 0 lost.

    python -m benchmarks.fleet [--apps 200] [--quick] [--volume-size 1MiB] [--parallel 50]
                               [--workers 4] [--json FILE]

Two emulated clusters (tests/k8s/emulator.py: kmock's API emulator over HTTP, the official
client), each with mover's controller and one node agent running as `mover agent`
subprocesses (as in their pods), sharing one repository (a local directory both reach). On the
source, N namespaces (`--quick`: 20), each an app of 26 objects of 17 kinds (Namespace,
ServiceAccounts, Role and RoleBinding, ConfigMaps, Secrets, Deployments with a ReplicaSet and a
Pod, a StatefulSet with its headless Service, a ClusterIP, a LoadBalancer and an ExternalName
Service, an Ingress, a NetworkPolicy, a PodDisruptionBudget, a CronJob, a LimitRange) and
2 volumes of generated data (random bytes, a zero run: a hole).

Steps, timed:

1. **backup all**: a per-namespace Schedule (`spec.perNamespace`, namespaces labelled
   fleet=yes) makes its run at once (a missed run, caught up): one Backup per app; wait for
   all to complete;
2. **seed**: `mover app migrate --phase seed` (in this process, as the CLI runs it): per app,
   a Backup on the source and a Restore of its claims and volumes' data on the target;
3. the apps "keep running": 64 KiB of one volume of every app change, and a ConfigMap;
4. **cut over**: `mover app migrate --phase cutover`: per app, a last Backup and a full Restore
   by difference on the target.

Then every object of every app is compared, source against target (what the cluster assigns
left out: uid, resourceVersion, timestamps, a Service's cluster IP; the ReplicaSet and Pod that
a Deployment's controller remakes are not restored, by design), and every byte of every
volume. Reported: wall times, API requests per app at the source and target
(`Cluster.served`, by verb), the peak RSS of each controller and agent (VmHWM), bytes moved,
and lost objects and bytes (must be 0: the exit code is 1 otherwise).
"""

from __future__ import annotations

import argparse
import base64
import copy
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import attrs
import kmock

from mover.cli.sizes import format_size, parse_size
from mover_k8s import api, migrate
from mover_k8s.k8s.cache import Cache
from mover_k8s.k8s.client import Kube, Obj, ResourceType
from mover_k8s.wakeup import Wakeup
from tests.k8s.conftest import NODE, SYSTEM, Env, init_repository, storage_class, volume_path
from tests.k8s.emulator import Cluster, ServedCluster, selector_matcher

APP_LABEL = "fleet"
SA = ResourceType("", "v1", "serviceaccounts", "ServiceAccount", True)
ROLE = ResourceType("rbac.authorization.k8s.io", "v1", "roles", "Role", True)
ROLE_BINDING = ResourceType("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding", True)
STATEFUL_SET = ResourceType(
    "apps", "v1", "statefulsets", "StatefulSet", True, frozenset(), api.STATUS
)
INGRESS = ResourceType(
    "networking.k8s.io", "v1", "ingresses", "Ingress", True, frozenset(), api.STATUS
)
NETWORK_POLICY = ResourceType("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy", True)
PDB = ResourceType("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget", True)
CRON_JOB = ResourceType("batch", "v1", "cronjobs", "CronJob", True)
# Not a HorizontalPodAutoscaler: the emulator keeps an object under the version it was written
# in, and serves autoscaling in v1 and v2 (an API server serves each object in every version).
LIMIT_RANGE = ResourceType("", "v1", "limitranges", "LimitRange", True)
# Made by a Deployment's controller (here: by us, as the cluster would): not restored.
REMADE = {"ReplicaSet", "Pod"}
SERVER_FIELDS = ("uid", "resourceVersion", "creationTimestamp", "generation", "managedFields")


# -- the apps ----------------------------------------------------------------------------------


def app_objects(ns: str, index: int) -> list[tuple[ResourceType, Obj]]:
    """One app: 24 objects in its namespace (+ the Namespace; 2 PVCs come with the volumes)."""
    labels = {"app": "web", "team": f"team-{index % 10}"}
    template = {
        "metadata": {"labels": labels},
        "spec": {
            "serviceAccountName": "web",
            "containers": [
                {
                    "name": "web",
                    "image": f"registry.example/web:{index % 7}.0",
                    "env": [{"name": "DB_HOST", "value": f"db-0.db.{ns}.svc.cluster.local"}],
                    "volumeMounts": [{"name": "uploads", "mountPath": "/uploads"}],
                }
            ],
            "volumes": [{"name": "uploads", "persistentVolumeClaim": {"claimName": "uploads"}}],
        },
    }

    def meta(name: str, **extra: Any) -> Obj:
        return {"name": name, "namespace": ns, "labels": dict(labels), **extra}

    secret = base64.b64encode(f"password-{index}".encode()).decode()
    rbac = "rbac.authorization.k8s.io"
    return [
        (SA, {"metadata": meta("web")}),
        (SA, {"metadata": meta("worker")}),
        (
            ROLE,
            {
                "metadata": meta("reader"),
                "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}],
            },
        ),
        (
            ROLE_BINDING,
            {
                "metadata": meta("web-reader"),
                "roleRef": {"apiGroup": rbac, "kind": "Role", "name": "reader"},
                "subjects": [{"kind": "ServiceAccount", "name": "web", "namespace": ns}],
            },
        ),
        (api.CONFIG_MAP, {"metadata": meta("web-config"), "data": {"mode": "production"}}),
        (
            api.CONFIG_MAP,
            {"metadata": meta("web-flags"), "data": {f"f{i}": "on" for i in range(8)}},
        ),
        (
            api.CONFIG_MAP,
            {"metadata": meta("db-config"), "data": {"postgresql.conf": "max_connections = 50\n"}},
        ),
        (api.SECRET, {"metadata": meta("db-password"), "type": "Opaque", "data": {"p": secret}}),
        (api.SECRET, {"metadata": meta("api-token"), "type": "Opaque", "data": {"t": secret}}),
        (
            api.DEPLOYMENT,
            {
                "metadata": meta("web"),
                "spec": {"replicas": 2, "selector": {"matchLabels": labels}, "template": template},
            },
        ),
        (
            api.DEPLOYMENT,
            {
                "metadata": meta("worker"),
                "spec": {
                    "replicas": 1,
                    "selector": {"matchLabels": {"app": "worker"}},
                    "template": {
                        "metadata": {"labels": {"app": "worker"}},
                        "spec": {"containers": [{"name": "w", "image": "worker:1"}]},
                    },
                },
            },
        ),
        (
            api.SERVICE,
            {
                "metadata": meta("web"),
                "spec": {
                    "selector": labels,
                    "ports": [{"port": 80, "targetPort": 8080}],
                    "clusterIP": f"10.{96 + index // 60000}.{index // 250 % 240}.{index % 250 + 2}",
                },
            },
        ),
        (
            api.SERVICE,
            {
                "metadata": meta("db"),
                "spec": {
                    "selector": {"app": "db"},
                    "clusterIP": "None",
                    "clusterIPs": ["None"],
                    "ports": [{"port": 5432}],
                },
            },
        ),
        (
            api.SERVICE,
            {
                "metadata": meta("edge"),
                "spec": {"type": "LoadBalancer", "selector": labels, "ports": [{"port": 443}]},
            },
        ),
        (
            api.SERVICE,
            {
                "metadata": meta("payments"),
                "spec": {"type": "ExternalName", "externalName": "pay.partner.example"},
            },
        ),
        (
            STATEFUL_SET,
            {
                "metadata": meta("db"),
                "spec": {
                    "serviceName": "db",
                    "replicas": 1,
                    "selector": {"matchLabels": {"app": "db"}},
                    "template": {
                        "metadata": {"labels": {"app": "db"}},
                        "spec": {"containers": [{"name": "postgres", "image": "postgres:16"}]},
                    },
                    "volumeClaimTemplates": [
                        {
                            "metadata": {"name": "data"},
                            "spec": {
                                "accessModes": ["ReadWriteOnce"],
                                "resources": {"requests": {"storage": "1Mi"}},
                            },
                        }
                    ],
                },
            },
        ),
        (
            INGRESS,
            {
                "metadata": meta("web"),
                "spec": {
                    "rules": [
                        {
                            "host": f"{ns}.apps.example.com",
                            "http": {
                                "paths": [
                                    {
                                        "path": "/",
                                        "pathType": "Prefix",
                                        "backend": {
                                            "service": {"name": "web", "port": {"number": 80}}
                                        },
                                    }
                                ]
                            },
                        }
                    ]
                },
            },
        ),
        (
            NETWORK_POLICY,
            {
                "metadata": meta("db-from-web"),
                "spec": {
                    "podSelector": {"matchLabels": {"app": "db"}},
                    "ingress": [{"from": [{"podSelector": {"matchLabels": labels}}]}],
                },
            },
        ),
        (
            PDB,
            {
                "metadata": meta("web"),
                "spec": {"minAvailable": 1, "selector": {"matchLabels": labels}},
            },
        ),
        (
            CRON_JOB,
            {
                "metadata": meta("vacuum"),
                "spec": {
                    "schedule": f"{index % 60} 3 * * *",
                    "jobTemplate": {
                        "spec": {
                            "template": {
                                "spec": {
                                    "restartPolicy": "OnFailure",
                                    "containers": [{"name": "v", "image": "postgres:16"}],
                                }
                            }
                        }
                    },
                },
            },
        ),
        (
            LIMIT_RANGE,
            {
                "metadata": meta("defaults"),
                "spec": {
                    "limits": [
                        {"type": "Container", "default": {"memory": f"{256 + index % 4 * 64}Mi"}}
                    ]
                },
            },
        ),
    ]


def pvc(ns: str, name: str, size: int) -> Obj:
    return {
        "metadata": {"name": name, "namespace": ns, "labels": {"app": "db"}},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "storageClassName": "fast",
            "resources": {"requests": {"storage": f"{size}"}},
        },
    }


def volume_data(seed: int, size: int) -> bytes:
    """Random bytes with a zero run in the middle (stored as a hole), as the tests' volumes."""
    rng = random.Random(seed)
    quarter = size // 4
    data = rng.randbytes(quarter) + bytes(quarter) + rng.randbytes(size - 2 * quarter)
    return data[:size]


def deploy(kube: Kube, ns: str, index: int, size: int) -> dict[str, bytes]:
    """The app as it runs: its objects, what the cluster adds (a ReplicaSet and a Pod of the
    web Deployment, a load balancer's hostname), and its volumes' data."""
    kube.create(
        api.NAMESPACE,
        {"metadata": {"name": ns, "labels": {APP_LABEL: "yes", "team": f"team-{index % 10}"}}},
    )
    for rt, body in app_objects(ns, index):
        kube.create(rt, body)
    for name in ("data-db-0", "uploads"):
        kube.create(api.PVC, pvc(ns, name, size))
    kube.patch_status(
        api.SERVICE,
        ns,
        "edge",
        {"loadBalancer": {"ingress": [{"hostname": f"lb-{index}.elb.example.com"}]}},
    )
    web = kube.get(api.DEPLOYMENT, ns, "web")
    owner = {"apiVersion": "apps/v1", "controller": True, "uid": web["metadata"]["uid"]}
    rs = kube.create(
        api.REPLICA_SET,
        {
            "metadata": {
                "name": "web-5d9c",
                "namespace": ns,
                "labels": dict(web["spec"]["selector"]["matchLabels"]),
                "ownerReferences": [dict(owner, kind="Deployment", name="web")],
            },
            "spec": {
                "replicas": 2,
                "selector": web["spec"]["selector"],
                "template": web["spec"]["template"],
            },
        },
    )
    kube.create(
        api.POD,
        {
            "metadata": {
                "name": "web-5d9c-x7k2p",
                "namespace": ns,
                "labels": dict(web["spec"]["selector"]["matchLabels"]),
                "ownerReferences": [
                    dict(owner, kind="ReplicaSet", name="web-5d9c", uid=rs["metadata"]["uid"])
                ],
            },
            "spec": dict(web["spec"]["template"]["spec"], nodeName=NODE),
        },
    )
    data = {}
    for seed, name in enumerate(("data-db-0", "uploads")):
        content = volume_data(index * 2 + seed, size)
        volume_path(kube, ns, name).write_bytes(content)
        data[name] = content
    return data


# -- the clusters --------------------------------------------------------------------------------


@attrs.define(kw_only=True)
class IndexedCluster(Cluster):
    """The tests' emulator, answering a list from an index of the objects by resource instead
    of a scan of every object it holds (tens of thousands here: the scan, not the API, would be
    measured). The same answers: the list's filters, order, pages and counts are Cluster's."""

    _keys: dict[kmock.resource, set[tuple[kmock.resource, str | None, str]]] = attrs.field(
        factory=dict, init=False
    )

    async def _create(
        self, resource: kmock.resource, info: kmock.ResourceInfo, namespace: str | None, body: Obj
    ) -> Obj:
        obj = await super()._create(resource, info, namespace, body)
        meta = obj["metadata"]
        key = (resource, meta.get("namespace") if info.namespaced else None, meta["name"])
        self._keys.setdefault(resource, set()).add(key)
        return obj

    def _list(
        self,
        resource: kmock.resource,
        info: kmock.ResourceInfo,
        namespace: str | None,
        query: dict[str, str],
    ) -> Obj:
        match = selector_matcher(query)
        items = []
        for key in self._keys.get(resource, ()):
            if namespace is not None and key[1] != namespace:
                continue
            if key not in self.objects:  # an ObjectsArray: no get()
                continue
            obj = self.objects[key]
            if not obj.deleted:
                raw = copy.deepcopy(obj.raw)
                if match(raw):
                    items.append(raw)
        items.sort(key=lambda o: (o["metadata"].get("namespace") or "", o["metadata"]["name"]))
        api_version = f"{resource.group}/{resource.version}" if resource.group else "v1"
        meta: Obj = {"resourceVersion": str(self._rv)}
        start = int(query.get("continue") or 0)
        limit = int(query.get("limit") or 0)
        if limit:
            if start + limit < len(items):
                meta["continue"] = str(start + limit)
                meta["remainingItemCount"] = len(items) - start - limit
            items = items[start : start + limit]
        self._count("listed", len(items))
        self._count(f"listed:{resource.plural}:{namespace is not None}", len(items))
        return {
            "apiVersion": api_version,
            "kind": f"{info.kind}List",
            "metadata": meta,
            "items": items,
        }


@dataclass
class Component:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    def peak_rss(self) -> int:
        """VmHWM: the most resident memory the process ever had (bytes)."""
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            pass
        return 0

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)


def start_components(env: Env, name: str, work: Path, workers: int) -> list[Component]:
    kubeconfig = env.served.kubeconfig(work / f"{name}.kubeconfig")
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("MOVER_", "KUBE"))}
    environ.update(KUBECONFIG=str(kubeconfig), NODE_NAME=NODE)
    common = ["--metrics-port", "0", "--interval", "1"]
    components = []
    for role, args in (
        ("controller", ["controller", "--agent-grace", "60"]),
        (
            "agent",
            ["node", "--no-snapshots", "--workers", str(workers), "--progress-interval", "5"],
        ),
    ):
        log = work / f"{name}-{role}.log"
        proc = subprocess.Popen(
            [sys.executable, "-m", "mover", "agent", *args, *common],
            env=environ,
            stdout=subprocess.DEVNULL,
            stderr=open(log, "wb"),  # noqa: SIM115 -- the child holds it
        )
        components.append(Component(f"{name} {role}", proc, log))
    return components


def make_env(work: Path, name: str) -> Env:
    volume_dir = work / f"{name}-volumes"
    volume_dir.mkdir()
    served = ServedCluster(volume_dir=volume_dir, node=NODE)
    served.cluster = IndexedCluster(volume_dir=volume_dir, node=NODE)
    served.start()
    env = Env(served, Kube.at(served.url), work / f"{name}-repo", volume_dir)
    env.install()  # CRDs, mover-system; Repository `default` (its repo made below)
    return env


@contextmanager
def clusters(work: Path, workers: int) -> Iterator[tuple[Env, Env, list[Component]]]:
    init_repository(work / "one-repo")
    source = make_env(work, "one")
    target = make_env(work, "two")
    init_repository(work / "two-repo")
    # The target reads the source's repository: one store both clusters reach.
    target.repository("shared", source.repo_dir)
    components: list[Component] = []
    try:
        components = start_components(source, "source", work, workers) + start_components(
            target, "target", work, workers
        )
        yield source, target, components
    finally:
        for component in components:
            if component.proc.poll() is None:
                component.stop()
        for env in (target, source):
            env.kube.close()
            env.served.stop()


# -- checks --------------------------------------------------------------------------------------


def comparable(obj: Obj) -> Obj:
    """What must arrive: the object without what a cluster assigns (cluster IPs but `None`,
    node ports), its status, and the tracking of its owner."""
    result = json.loads(json.dumps(obj))
    result.pop("status", None)
    meta = result["metadata"]
    for name in (*SERVER_FIELDS, "ownerReferences"):
        meta.pop(name, None)
    if result.get("kind") == "Service":
        spec = result["spec"]
        if spec.get("clusterIP") != "None":
            spec.pop("clusterIP", None)
            spec.pop("clusterIPs", None)
        for port in spec.get("ports") or []:
            port.pop("nodePort", None)
    if result.get("kind") == "PersistentVolumeClaim":
        result["spec"].pop("volumeName", None)
    return result


def app_state(kube: Kube, ns: str, kinds: list[ResourceType]) -> dict[tuple[str, str], Obj]:
    found: dict[tuple[str, str], Obj] = {}
    for rt in kinds:
        for obj in kube.list(rt, ns):
            obj.setdefault("kind", rt.kind)
            if obj["kind"] not in REMADE:
                found[(obj["kind"], obj["metadata"]["name"])] = comparable(obj)
    namespace = kube.find(api.NAMESPACE, None, ns)
    if namespace is not None:
        found[("Namespace", ns)] = {"labels": namespace["metadata"].get("labels") or {}}
    return found


def verify(
    source: Env, target: Env, apps: list[str], data: dict[str, dict[str, bytes]]
) -> dict[str, Any]:
    kinds = [
        rt
        for rt in source.kube.discover(refresh=True)
        if rt.namespaced and "list" in rt.verbs and rt.group != api.GROUP and rt.kind != "Event"
    ]
    objects = lost_objects = volume_bytes = lost_bytes = 0
    problems: list[str] = []
    for ns in apps:
        want = app_state(source.kube, ns, kinds)
        got = app_state(target.kube, ns, kinds)
        objects += len(want)
        for key, obj in want.items():
            if got.get(key) != obj:
                lost_objects += 1
                problems.append(
                    f"{ns} {key[0]}/{key[1]}: " + ("missing" if key not in got else "differs")
                )
        for name, content in data[ns].items():
            volume_bytes += len(content)
            try:
                arrived = volume_path(target.kube, ns, name).read_bytes()
            except Exception as exc:  # a missing claim is a loss, reported
                problems.append(f"{ns} volume {name}: {exc}")
                lost_bytes += len(content)
                continue
            if arrived != content:
                lost_bytes += sum(1 for a, b in zip(arrived, content, strict=False) if a != b)
                lost_bytes += abs(len(content) - len(arrived))
                problems.append(f"{ns} volume {name}: bytes differ")
    return {
        "objects": objects,
        "objectsLost": lost_objects,
        "volumeBytes": volume_bytes,
        "bytesLost": lost_bytes,
        "problems": problems[:20],
    }


# -- the run -------------------------------------------------------------------------------------


def served(env: Env) -> Counter[str]:
    return env.served.cluster.served


def delta(after: Counter[str], before: Counter[str]) -> dict[str, int]:
    verbs = (
        "LIST",
        "WATCH",
        "GET",
        "CREATE",
        "UPDATE",
        "PATCH",
        "DELETE",
        "DISCOVERY",
        "EXEC",
        "OTHER",
    )
    counts = {v: after[v] - before[v] for v in verbs if after[v] - before[v]}
    counts["requests"] = sum(after[v] - before[v] for v in verbs)
    counts["objectsListed"] = after["listed"] - before["listed"]  # objects list pages carried
    return counts


def wait_for(check: Any, timeout: float, what: str, components: list[Component]) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        for component in components:
            if component.proc.poll() is not None:
                tail = component.log.read_text(errors="replace")[-3000:]
                raise SystemExit(f"{component.name} exited ({component.proc.returncode}):\n{tail}")
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.5)


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    apps = [f"app-{i:03d}" for i in range(args.apps)]
    size = args.volume_size
    result: dict[str, Any] = {
        "apps": args.apps,
        "volumeSize": size,
        "cpus": os.cpu_count(),
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
    }
    with clusters(work, args.workers) as (source, target, components):
        kube = source.kube
        kube.create(api.STORAGE_CLASS, storage_class("fast"))
        started = time.monotonic()
        data = {ns: deploy(kube, ns, i, size) for i, ns in enumerate(apps)}
        result["deploySeconds"] = round(time.monotonic() - started, 1)
        counts: dict[str, dict[str, Any]] = {}

        # 1. backup all: a per-namespace Schedule's run, made at once (a missed run).
        before = served(source), served(target)
        started = time.monotonic()
        kube.create(
            api.SCHEDULE,
            {
                "apiVersion": api.API_VERSION,
                "kind": "Schedule",
                "metadata": {"name": "fleet", "namespace": SYSTEM},
                "spec": {
                    "schedule": "0 2 * * *",
                    "perNamespace": True,
                    "namespaceSelector": {"matchLabels": {APP_LABEL: "yes"}},
                    "keepLast": 3,
                    "template": {"repository": "default"},
                },
            },
        )
        kube.patch_status(
            api.SCHEDULE, SYSTEM, "fleet", {"lastScheduleTime": "2026-01-01T02:00:00Z"}
        )
        selector = f"{api.SCHEDULE_LABEL}=fleet"
        # The benchmark waits on a copy a watch keeps, so that its own polling is not counted
        # as the product's API load (a list of every Backup a second would be).
        cache, stop_watch = Cache(), threading.Event()
        watched = kube.cached(cache)

        def all_backed_up() -> bool:
            backups = watched.list(api.BACKUP, SYSTEM, label_selector=selector)
            phases = Counter((b.get("status") or {}).get("phase") for b in backups)
            return len(backups) == len(apps) and sum(phases[p] for p in api.DONE_PHASES) == len(
                apps
            )

        with Wakeup(kube, (api.BACKUP,), SYSTEM, selector, cache=cache).running(stop_watch):
            wait_for(all_backed_up, args.timeout, "the per-namespace backups", components)
            backups = watched.list(api.BACKUP, SYSTEM, label_selector=selector)
        result["backupAll"] = {
            "seconds": round(time.monotonic() - started, 1),
            "completed": sum(1 for b in backups if b["status"]["phase"] == api.COMPLETED),
        }
        counts["backupAll"] = {
            "source": delta(served(source), before[0]),
            "target": delta(served(target), before[1]),
        }

        # 2-4. migrate: seed, the apps go on writing, cut over.
        sides = (
            migrate.Side(source.kube, SYSTEM, "default"),
            migrate.Side(target.kube, SYSTEM, "shared"),
        )
        reports: dict[str, list[Obj]] = {}
        for phase in ("seed", "cutover"):
            if phase == "cutover":
                for i, ns in enumerate(apps):
                    changed = bytearray(data[ns]["uploads"])
                    at = (i * 4096) % max(1, size - 65536)
                    changed[at : at + 65536] = random.Random(i).randbytes(65536)
                    volume_path(kube, ns, "uploads").write_bytes(changed)
                    data[ns]["uploads"] = bytes(changed)
                    kube.patch(api.CONFIG_MAP, ns, "web-config", {"data": {"mode": "moved"}})
            before = served(source), served(target)
            started = time.monotonic()
            plan = migrate.Plan(
                "move",
                apps,
                phase=phase,
                parallel=args.parallel,
                external_wait="1s",
                poll=args.poll,
                timeout=args.timeout,
            )
            migration = migrate.Migration(*sides, plan)
            migration.check()
            reports[phase] = migration.run()
            result[phase] = {
                "seconds": round(time.monotonic() - started, 1),
                **migrate.summary(reports[phase]),
            }
            counts[phase] = {
                "source": delta(served(source), before[0]),
                "target": delta(served(target), before[1]),
            }
        final = reports["cutover"]
        result["bytes"] = {
            key: sum(int(r["bytes"][key] or 0) for r in final)
            for key in ("stored", "fetched", "written", "unchanged", "moved")
        }
        result["bytes"]["seedMoved"] = sum(int(r["bytes"]["moved"]) for r in reports["seed"])
        result["failed"] = [
            f"{r['app']} ({r['failedStep']}): {r['error']}"
            for phase in reports.values()
            for r in phase
            if r["state"] != "completed"
        ][:20]
        result["requests"] = counts
        result["peakRss"] = {c.name: c.peak_rss() for c in components}
        result["verify"] = verify(source, target, apps, data)
        for component in components:
            component.stop()
    return result


def per_app(counts: dict[str, Any], apps: int) -> str:
    return f"{counts['requests'] / apps:.0f}"


def show(result: dict[str, Any]) -> None:
    apps = result["apps"]
    print(
        f"fleet: {apps} apps, 26 objects and 2 volumes of {format_size(result['volumeSize'])} "
        f"each, {result['cpus']} CPUs (deploy took {result['deploySeconds']} s, not counted)"
    )
    print()
    print(f"{'step':<12}{'wall s':>8}{'apps ok':>9}{'API req/app src':>17}{'API req/app tgt':>17}")
    for step in ("backupAll", "seed", "cutover"):
        counts = result["requests"][step]
        ok = result[step].get("completed")
        print(
            f"{step:<12}{result[step]['seconds']:>8}{ok:>9}"
            f"{per_app(counts['source'], apps):>17}{per_app(counts['target'], apps):>17}"
        )
    migrate_s = result["seed"]["seconds"] + result["cutover"]["seconds"]
    total = result["backupAll"]["seconds"] + migrate_s
    print(f"{'total':<12}{round(total, 1):>8}   (migrate: {round(migrate_s, 1)} s)")
    print()
    for step in ("backupAll", "seed", "cutover"):
        for side in ("source", "target"):
            counts = {
                k: v
                for k, v in result["requests"][step][side].items()
                if k not in ("requests", "objectsListed")
            }
            counts["objects listed"] = result["requests"][step][side]["objectsListed"]
            print(f"requests {step} {side}: {counts}")
    print()
    for name, rss in result["peakRss"].items():
        print(f"peak RSS {name}: {format_size(rss)}")
    moved = result["bytes"]
    print(
        f"bytes: seed moved {format_size(moved['seedMoved'])}; cut over stored "
        f"{format_size(moved['stored'])}, fetched {format_size(moved['fetched'])}, left "
        f"unchanged {format_size(moved['unchanged'])}"
    )
    check = result["verify"]
    print(
        f"arrived: {check['objects'] - check['objectsLost']} of {check['objects']} objects, "
        f"{check['volumeBytes'] - check['bytesLost']} of {check['volumeBytes']} volume bytes"
    )
    print(f"lost: {check['objectsLost']} objects, {check['bytesLost']} bytes")
    for line in result["failed"] + check["problems"]:
        print(f"  {line}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fleet", description=__doc__)
    parser.add_argument("--apps", type=int, default=200)
    parser.add_argument("--quick", action="store_true", help="20 apps (CI)")
    parser.add_argument(
        "--volume-size",
        type=lambda text: parse_size(text, "--volume-size"),
        default=1 << 20,
        help="each volume's size (default 1MiB)",
    )
    parser.add_argument("--parallel", type=int, default=50, help="apps migrating at once")
    parser.add_argument("--workers", type=int, default=4, help="each node agent's workers")
    parser.add_argument("--poll", type=float, default=2.0, help="migrate's seconds between reads")
    parser.add_argument("--timeout", type=float, default=3600.0)
    parser.add_argument("--json", type=Path, help="write the figures here too")
    args = parser.parse_args(argv)
    if args.quick:
        args.apps = 20
    # A SIGTERM (a timeout) unwinds: the components and the emulators are stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    work = Path(tempfile.mkdtemp(prefix="mover-fleet-", dir=os.environ.get("MOVER_TMPDIR")))
    try:
        result = run(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    show(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    check = result["verify"]
    ok = not check["objectsLost"] and not check["bytesLost"] and not result["failed"]
    return 0 if ok else 1


if __name__ == "__main__":
    threading.current_thread().name = "fleet"
    sys.exit(main())
