"""The test-support layer (emulator.py) behaves like an API server where kmock 0.8 does not:
checked here with the official client's own typed API, independently of mover's k8s layer."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

from .emulator import ServedCluster


@pytest.fixture
def served(tmp_path: Path) -> Iterator[ServedCluster]:
    cluster = ServedCluster(volume_dir=tmp_path).start()
    yield cluster
    cluster.stop()


@pytest.fixture
def api_client(served: ServedCluster) -> Iterator[client.ApiClient]:
    configuration = client.Configuration()
    configuration.host = served.url
    with client.ApiClient(configuration) as api:
        yield api


def make_ns(core: client.CoreV1Api, name: str) -> None:
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))


def test_discovery_answers_with_and_without_trailing_slash(api_client: client.ApiClient) -> None:
    for path in ("/apis", "/apis/", "/api/v1", "/api/v1/", "/apis/apps/v1/"):
        params = api_client.param_serialize("GET", path, header_params={})
        response = api_client.call_api(*params)
        response.read()
        assert response.status == 200, path
    groups = client.ApisApi(api_client).get_api_versions()
    assert "apps" in {g.name for g in groups.groups}
    core = client.CoreV1Api(api_client).get_api_resources()
    namespaces = next(r for r in core.resources if r.name == "namespaces")
    assert namespaces.namespaced is False


def test_namespaces_are_a_cluster_resource_and_deleting_one_empties_it(
    api_client: client.ApiClient,
) -> None:
    core = client.CoreV1Api(api_client)
    make_ns(core, "alpha")
    assert core.read_namespace("alpha").status.phase == "Active"
    assert [n.metadata.name for n in core.list_namespace().items] == ["alpha"]
    core.create_namespaced_config_map(
        "alpha", client.V1ConfigMap(metadata=client.V1ObjectMeta(name="c"), data={"k": "v"})
    )
    core.delete_namespace("alpha")
    with pytest.raises(ApiException) as gone:
        core.read_namespaced_config_map("c", "alpha")
    assert gone.value.status == 404
    with pytest.raises(ApiException) as missing:
        core.create_namespaced_config_map(
            "alpha", client.V1ConfigMap(metadata=client.V1ObjectMeta(name="c"))
        )
    assert missing.value.status == 404


def test_create_answers_201_with_server_fields(api_client: client.ApiClient) -> None:
    core = client.CoreV1Api(api_client)
    make_ns(core, "alpha")
    body = client.V1ConfigMap(metadata=client.V1ObjectMeta(generate_name="cfg-"))
    created, status, _ = core.create_namespaced_config_map_with_http_info("alpha", body)
    assert status == 201
    meta = created.metadata
    assert meta.name.startswith("cfg-") and len(meta.name) > 4
    assert meta.uid and meta.resource_version and meta.creation_timestamp is not None
    with pytest.raises(ApiException) as exists:
        core.create_namespaced_config_map(
            "alpha", client.V1ConfigMap(metadata=client.V1ObjectMeta(name=meta.name))
        )
    assert exists.value.status == 409
    with pytest.raises(ApiException) as invalid:
        core.create_namespaced_config_map(
            "alpha",
            client.V1ConfigMap(metadata=client.V1ObjectMeta(name="x", resource_version="7")),
        )
    assert invalid.value.status == 422


def test_stale_resource_version_is_a_conflict(api_client: client.ApiClient) -> None:
    core = client.CoreV1Api(api_client)
    make_ns(core, "alpha")
    first = core.create_namespaced_config_map(
        "alpha", client.V1ConfigMap(metadata=client.V1ObjectMeta(name="c"), data={"v": "1"})
    )
    first.data = {"v": "2"}
    second = core.replace_namespaced_config_map("c", "alpha", first)
    assert int(second.metadata.resource_version) > int(first.metadata.resource_version)
    first.data = {"v": "3"}  # still carries the first resourceVersion
    with pytest.raises(ApiException) as conflict:
        core.replace_namespaced_config_map("c", "alpha", first)
    assert conflict.value.status == 409
    assert core.read_namespaced_config_map("c", "alpha").data == {"v": "2"}


def test_label_and_field_selectors_on_list_and_watch(api_client: client.ApiClient) -> None:
    core = client.CoreV1Api(api_client)
    make_ns(core, "alpha")
    for name, tier in (("a", "web"), ("b", "db"), ("c", "web")):
        core.create_namespaced_config_map(
            "alpha",
            client.V1ConfigMap(metadata=client.V1ObjectMeta(name=name, labels={"tier": tier})),
        )

    def names(**kw: Any) -> list[str]:
        return [c.metadata.name for c in core.list_namespaced_config_map("alpha", **kw).items]

    assert names(label_selector="tier=web") == ["a", "c"]
    assert names(label_selector="tier!=web") == ["b"]
    assert names(label_selector="tier in (db,cache)") == ["b"]
    assert names(label_selector="!tier") == []
    assert names(field_selector="metadata.name=c") == ["c"]
    assert names(label_selector="tier=web", field_selector="metadata.name!=a") == ["c"]

    seen: list[str] = []

    def follow() -> None:
        w = watch.Watch()
        for event in w.stream(
            core.list_namespaced_config_map, "alpha", label_selector="tier=db", timeout_seconds=5
        ):
            seen.append(event["object"].metadata.name)
            if len(seen) == 2:
                w.stop()

    watcher = threading.Thread(target=follow, daemon=True)
    watcher.start()
    core.create_namespaced_config_map(
        "alpha", client.V1ConfigMap(metadata=client.V1ObjectMeta(name="d", labels={"tier": "web"}))
    )
    core.create_namespaced_config_map(
        "alpha", client.V1ConfigMap(metadata=client.V1ObjectMeta(name="e", labels={"tier": "db"}))
    )
    watcher.join(10)
    assert seen == ["b", "e"]


def test_custom_resource_definition_makes_its_kind_served_with_status(
    api_client: client.ApiClient,
) -> None:
    core = client.CoreV1Api(api_client)
    make_ns(core, "alpha")
    ext = client.ApiextensionsV1Api(api_client)
    custom = client.CustomObjectsApi(api_client)
    with pytest.raises(ApiException):
        custom.list_namespaced_custom_object("example.com", "v1", "alpha", "gadgets")
    ext.create_custom_resource_definition(
        {
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": "gadgets.example.com"},
            "spec": {
                "group": "example.com",
                "scope": "Namespaced",
                "names": {"kind": "Gadget", "plural": "gadgets", "singular": "gadget"},
                "versions": [
                    {
                        "name": "v1",
                        "served": True,
                        "storage": True,
                        "subresources": {"status": {}},
                        "schema": {"openAPIV3Schema": {"type": "object"}},
                    }
                ],
            },
        }
    )
    body = {"apiVersion": "example.com/v1", "kind": "Gadget", "metadata": {"name": "g"}}
    custom.create_namespaced_custom_object(
        "example.com", "v1", "alpha", "gadgets", dict(body, spec={"n": 1}, status={"x": 1})
    )
    custom.patch_namespaced_custom_object_status(
        "example.com", "v1", "alpha", "gadgets", "g", {"status": {"ready": True}, "spec": {"n": 9}}
    )
    custom.patch_namespaced_custom_object(
        "example.com", "v1", "alpha", "gadgets", "g", {"spec": {"n": 2}, "status": {"ready": False}}
    )
    got = custom.get_namespaced_custom_object("example.com", "v1", "alpha", "gadgets", "g")
    assert got["spec"] == {"n": 2}  # /status did not change the spec
    assert got["status"]["ready"] is True  # the object's own endpoint did not change status
    assert got["metadata"]["generation"] == 2


def test_file_provisioner_binds_claims_to_sparse_files(
    api_client: client.ApiClient, tmp_path: Path
) -> None:
    core = client.CoreV1Api(api_client)
    make_ns(core, "alpha")
    client.StorageV1Api(api_client).create_storage_class(
        client.V1StorageClass(
            metadata=client.V1ObjectMeta(name="fast"), provisioner="file.mover.test"
        )
    )
    core.create_namespaced_persistent_volume_claim(
        "alpha",
        client.V1PersistentVolumeClaim(
            metadata=client.V1ObjectMeta(name="data"),
            spec=client.V1PersistentVolumeClaimSpec(
                access_modes=["ReadWriteOnce"],
                storage_class_name="fast",
                resources=client.V1VolumeResourceRequirements(requests={"storage": "2Mi"}),
            ),
        ),
    )
    claim = core.read_namespaced_persistent_volume_claim("data", "alpha")
    assert claim.status.phase == "Bound"
    pv = core.read_persistent_volume(claim.spec.volume_name)
    path = Path(pv.spec.local.path)
    assert path.parent == tmp_path and path.stat().st_size == 2 << 20


def test_lists_come_in_pages(api_client: client.ApiClient) -> None:
    core = client.CoreV1Api(api_client)
    make_ns(core, "alpha")
    for i in range(5):
        core.create_namespaced_config_map(
            "alpha", client.V1ConfigMap(metadata=client.V1ObjectMeta(name=f"c{i}"))
        )
    first = core.list_namespaced_config_map("alpha", limit=2)
    assert [c.metadata.name for c in first.items] == ["c0", "c1"]
    second = core.list_namespaced_config_map("alpha", limit=2, _continue=first.metadata._continue)
    third = core.list_namespaced_config_map("alpha", limit=2, _continue=second.metadata._continue)
    assert [c.metadata.name for c in second.items + third.items] == ["c2", "c3", "c4"]
    assert third.metadata._continue is None
