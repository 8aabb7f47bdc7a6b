"""The restore rules on their own: order, what is stripped, what is skipped and why, mappings
wherever a namespace or a storage class is named, filters."""

from __future__ import annotations

import random

from mover_k8s.restore_plan import Filters, apply_mappings, make_plan, rank, strip

from .conftest import Obj


def obj(kind: str, name: str, namespace: str | None = "shop", **fields: object) -> Obj:
    meta: Obj = {"name": name, "uid": f"uid-{kind}-{name}", "resourceVersion": "7"}
    if namespace:
        meta["namespace"] = namespace
    api_version = {"Deployment": "apps/v1", "StatefulSet": "apps/v1", "Widget": "example.com/v1"}
    return {"apiVersion": api_version.get(kind, "v1"), "kind": kind, "metadata": meta, **fields}


def test_dependency_order() -> None:
    kinds = [
        "CustomResourceDefinition",
        "Namespace",
        "ServiceAccount",
        "StorageClass",
        "PersistentVolumeClaim",
        "Service",
        "Deployment",
        "Widget",
    ]
    shuffled = kinds[:]
    random.Random(3).shuffle(shuffled)
    ordered = sorted(shuffled, key=lambda k: rank({"kind": k}))
    assert ordered == kinds
    assert (
        rank({"kind": "ConfigMap"}) == rank({"kind": "Secret"}) == rank({"kind": "ServiceAccount"})
    )


def test_strip_removes_what_the_cluster_assigns() -> None:
    service = obj(
        "Service",
        "web",
        spec={"clusterIP": "10.0.0.1", "clusterIPs": ["10.0.0.1"], "ports": [{"port": 80}]},
        status={"loadBalancer": {}},
    )
    service["metadata"].update(
        creationTimestamp="2026-01-01T00:00:00Z",
        managedFields=[{}],
        generation=3,
        ownerReferences=[{"uid": "gone"}],
        annotations={"keep": "me", "deployment.kubernetes.io/revision": "4"},
    )
    stripped = strip(service)
    assert stripped == {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web", "namespace": "shop", "annotations": {"keep": "me"}},
        "spec": {"ports": [{"port": 80}]},
    }
    assert service["spec"]["clusterIP"] == "10.0.0.1"  # the original is untouched
    source = {"kind": "VolumeSnapshot", "name": "old", "apiGroup": "snapshot.storage.k8s.io"}
    spec = {"volumeName": "pv-1", "resources": {}, "dataSource": source, "dataSourceRef": source}
    claim = strip(obj("PersistentVolumeClaim", "data", spec=spec))
    assert claim["spec"] == {"resources": {}}
    pod = strip(obj("Pod", "p", spec={"nodeName": "node-a", "containers": []}))
    assert pod["spec"] == {"containers": []}


def test_mappings_apply_wherever_names_appear() -> None:
    binding = obj(
        "RoleBinding",
        "view",
        subjects=[
            {"kind": "ServiceAccount", "name": "shop", "namespace": "shop"},
            {"kind": "ServiceAccount", "name": "ops", "namespace": "ops"},
        ],
    )
    mapped = apply_mappings(binding, {"shop": "shop2"}, {})
    assert mapped["metadata"]["namespace"] == "shop2"
    assert [s["namespace"] for s in mapped["subjects"]] == ["shop2", "ops"]
    sts = obj(
        "StatefulSet",
        "db",
        spec={"volumeClaimTemplates": [{"spec": {"storageClassName": "fast"}}]},
    )
    sts["metadata"]["annotations"] = {"volume.beta.kubernetes.io/storage-class": "fast"}
    mapped = apply_mappings(sts, {}, {"fast": "standard"})
    assert mapped["spec"]["volumeClaimTemplates"][0]["spec"]["storageClassName"] == "standard"
    assert (
        mapped["metadata"]["annotations"]["volume.beta.kubernetes.io/storage-class"] == "standard"
    )
    namespace = apply_mappings(obj("Namespace", "shop", namespace=None), {"shop": "shop2"}, {})
    assert namespace["metadata"]["name"] == "shop2"
    assert apply_mappings(obj("StorageClass", "fast", namespace=None), {}, {"fast": "std"}) == {}


def test_skips_say_why_and_owners_outside_the_backup_do_not_skip() -> None:
    deployment = obj("Deployment", "web")
    owned = obj("Pod", "web-1")
    owned["metadata"]["ownerReferences"] = [
        {
            "kind": "Deployment",
            "name": "web",
            "uid": deployment["metadata"]["uid"],
            "controller": True,
        }
    ]
    orphan = obj("Pod", "job-1")
    orphan["metadata"]["ownerReferences"] = [
        {"kind": "Job", "name": "gone", "uid": "not-captured", "controller": True}
    ]
    token = obj("Secret", "t", type="kubernetes.io/service-account-token")
    objects = [deployment, owned, orphan, token, obj("ConfigMap", "kube-root-ca.crt")]
    plan = make_plan(objects, [], "full", Filters(), {}, {})
    skips = {s.original["metadata"]["name"]: s.skip for s in plan.steps}
    assert skips == {
        "web": None,
        "web-1": "managed by Deployment/web, which recreates it",
        "job-1": None,
        "t": "service account tokens are issued by the cluster",
        "kube-root-ca.crt": "created in every namespace by the cluster",
    }


def test_filters_select_objects_and_their_volumes() -> None:
    objects = [
        obj("ConfigMap", "a"),
        obj("ConfigMap", "b"),
        obj("PersistentVolumeClaim", "data-a"),
        obj("PersistentVolumeClaim", "data-b"),
    ]
    objects[0]["metadata"]["labels"] = {"tier": "web"}
    volumes = [
        {"namespace": "shop", "pvc": "data-a", "snapshot": "s1"},
        {"namespace": "shop", "pvc": "data-b", "snapshot": "s2"},
    ]
    names = Filters(included_names=("ConfigMap/a", "PersistentVolumeClaim/data-b"))
    plan = make_plan(objects, volumes, "full", names, {}, {})
    assert [s.key for s in plan.steps] == ["ConfigMap/shop/a", "PersistentVolumeClaim/shop/data-b"]
    assert [v["pvc"] for v in plan.volumes] == ["data-b"]
    labelled = Filters(selector={"matchLabels": {"tier": "web"}})
    assert [s.key for s in make_plan(objects, volumes, "full", labelled, {}, {}).steps] == [
        "ConfigMap/shop/a"
    ]
    # data-only: kinds do not filter, no object is planned, volumes follow the subset.
    data_only = make_plan(objects, volumes, "data-only", Filters(volumes=("data-a",)), {}, {})
    assert data_only.steps == [] and [v["pvc"] for v in data_only.volumes] == ["data-a"]
    resources_only = make_plan(objects, volumes, "resources-only", Filters(), {}, {})
    assert resources_only.volumes == [] and len(resources_only.steps) == 4
