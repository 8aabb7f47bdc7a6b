"""Restore fidelity, rule by rule (restore_plan, pure functions): a headless Service stays
headless; a captured clusterIP comes back only on its own cluster and only where it is free;
nodePorts are dropped unless kept on purpose; a mapped namespace named inside the data (a
Service DNS name) is reported, and rewritten only when asked; GitOps tracking metadata and Helm's
release Secrets come back as captured. tests/k8s/test_restore_fidelity_e2e.py runs the same
rules through the controller."""

from __future__ import annotations

import base64
import json

import pytest

from mover_k8s.restore_plan import (
    REPORT_LIMIT,
    Filters,
    Options,
    cluster_ips_of,
    fidelity_report,
    make_plan,
    namespace_references,
    service_addresses,
    strip,
)

from .conftest import Obj


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def unb64(text: str) -> str:
    return base64.b64decode(text).decode()


def service(name: str, namespace: str = "shop", **spec: object) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace, "uid": f"uid-{name}"},
        "spec": spec,
    }


HEADLESS = {"clusterIP": "None", "clusterIPs": ["None"], "ports": [{"name": "pg", "port": 5432}]}
NODE_PORT = {
    "type": "NodePort",
    "clusterIP": "10.96.0.40",
    "clusterIPs": ["10.96.0.40"],
    "ports": [
        {"name": "http", "port": 80, "nodePort": 30080},
        {"name": "metrics", "port": 9090, "nodePort": 30090},
    ],
}


def prepared(obj: Obj, options: Options, namespaces: dict[str, str] | None = None) -> Obj:
    """The one object as a restore would create it."""
    plan = make_plan([obj], [], "full", Filters(), namespaces or {}, {}, options)
    assert [s.skip for s in plan.steps] == [None]
    return plan.steps[0].prepared


def dropped_of(obj: Obj, options: Options, namespaces: dict[str, str] | None = None) -> list[Obj]:
    plan = make_plan([obj], [], "full", Filters(), namespaces or {}, {}, options)
    return fidelity_report(plan).get("dropped") or []


# -- Services: headless, cluster IPs -----------------------------------------------------------


@pytest.mark.parametrize("same_cluster", [True, False], ids=["same-cluster", "other-cluster"])
def test_a_headless_service_stays_headless(same_cluster: bool) -> None:
    headless = service("postgres", **HEADLESS)
    assert strip(headless)["spec"] == HEADLESS
    options = Options(same_cluster=same_cluster, cluster_ips={"10.96.0.1": "default/kubernetes"})
    restored = prepared(headless, options, {"shop": "shop2"})
    assert restored["spec"] == HEADLESS
    assert dropped_of(headless, options) == []
    # Only `clusterIP` set (clusterIPs defaulted by the API server): still headless.
    assert strip(service("p", clusterIP="None"))["spec"] == {"clusterIP": "None"}


def test_strip_drops_an_assigned_cluster_ip_and_health_check_port() -> None:
    lb = service("lb", clusterIP="10.96.0.9", healthCheckNodePort=31000, type="LoadBalancer")
    assert strip(lb)["spec"] == {"type": "LoadBalancer"}


def test_a_cluster_ip_comes_back_on_its_own_cluster_when_it_is_free() -> None:
    web = service("web", **NODE_PORT)
    options = Options(same_cluster=True, cluster_ips={"10.96.0.1": "default/kubernetes"})
    spec = prepared(web, options, {"shop": "shop2"})["spec"]
    assert spec["clusterIP"] == "10.96.0.40" and spec["clusterIPs"] == ["10.96.0.40"]
    # Dual stack: both, in their order.
    dual = service("dual", clusterIP="10.96.0.41", clusterIPs=["10.96.0.41", "fd00::41"])
    assert prepared(dual, options)["spec"]["clusterIPs"] == ["10.96.0.41", "fd00::41"]


def test_a_cluster_ip_another_service_uses_is_dropped_and_reported() -> None:
    web = service("web", **NODE_PORT)
    options = Options(
        same_cluster=True, preserve_node_ports=True, cluster_ips={"10.96.0.40": "shop/web"}
    )
    restored = prepared(web, options, {"shop": "shop2"})
    assert "clusterIP" not in restored["spec"] and "clusterIPs" not in restored["spec"]
    assert dropped_of(web, options, {"shop": "shop2"}) == [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "namespace": "shop2",
            "name": "web",
            "path": "spec.clusterIP",
            "value": "10.96.0.40",
            "reason": "used by Service shop/web in this cluster; the cluster assigns a new one",
        }
    ]
    # One of a dual-stack pair taken: neither is kept (they are one allocation), it is named.
    dual = service("dual", clusterIP="10.96.0.41", clusterIPs=["10.96.0.41", "fd00::41"])
    taken = Options(same_cluster=True, cluster_ips={"fd00::41": "other/x"})
    assert "clusterIPs" not in prepared(dual, taken)["spec"]
    assert [(d["path"], d["value"]) for d in dropped_of(dual, taken)] == [
        ("spec.clusterIPs[1]", "fd00::41")
    ]


def test_a_service_that_exists_here_keeps_its_own_address() -> None:
    web = service("web", **NODE_PORT)
    options = Options(
        same_cluster=True, preserve_node_ports=True, cluster_ips={"10.96.0.77": "shop/web"}
    )
    assert "clusterIP" not in prepared(web, options)["spec"]
    assert dropped_of(web, options) == []


def test_on_another_cluster_a_cluster_ip_is_dropped_without_a_word() -> None:
    web = service("web", **NODE_PORT)
    options = Options(same_cluster=False, preserve_node_ports=True)
    assert "clusterIP" not in prepared(web, options)["spec"]
    assert dropped_of(web, options) == []


def test_cluster_ips_of_the_services_here() -> None:
    services = [
        service("web", **NODE_PORT),
        service("postgres", **HEADLESS),
        service("dual", namespace="b", clusterIP="10.0.0.2", clusterIPs=["10.0.0.2", "fd00::2"]),
    ]
    assert cluster_ips_of(services) == {
        "10.96.0.40": "shop/web",
        "10.0.0.2": "b/dual",
        "fd00::2": "b/dual",
    }


# -- Services: node ports ----------------------------------------------------------------------


def test_node_ports_are_dropped_by_default_and_reported() -> None:
    lb = service("lb", **dict(NODE_PORT, type="LoadBalancer", healthCheckNodePort=31000))
    options = Options()
    spec = prepared(lb, options)["spec"]
    assert spec["ports"] == [{"name": "http", "port": 80}, {"name": "metrics", "port": 9090}]
    assert "healthCheckNodePort" not in spec
    assert [(d["path"], d["value"]) for d in dropped_of(lb, options)] == [
        ("spec.ports[name=http].nodePort", "30080"),
        ("spec.ports[name=metrics].nodePort", "30090"),
        ("spec.healthCheckNodePort", "31000"),
    ]
    assert all("preserveNodePorts" in d["reason"] for d in dropped_of(lb, options))
    # Unnamed ports are named by their index.
    single = service("one", type="NodePort", ports=[{"port": 80, "nodePort": 30001}])
    assert [d["path"] for d in dropped_of(single, options)] == ["spec.ports[0].nodePort"]


def test_node_ports_are_kept_when_asked() -> None:
    lb = service("lb", **dict(NODE_PORT, type="LoadBalancer", healthCheckNodePort=31000))
    options = Options.of({"preserveNodePorts": True})
    spec = prepared(lb, options)["spec"]
    assert [p["nodePort"] for p in spec["ports"]] == [30080, 30090]
    assert spec["healthCheckNodePort"] == 31000
    assert dropped_of(lb, options) == []
    assert lb["spec"]["ports"][0]["nodePort"] == 30080  # the captured object is untouched


def test_options_read_the_restore_spec() -> None:
    assert Options.of({}) == Options()
    spec = {"preserveNodePorts": True, "rewriteNamespaceReferences": True}
    options = Options.of(spec, True, {"10.0.0.1": "a/b"})
    assert options.preserve_node_ports and options.rewrite_namespace_references
    assert options.same_cluster and options.cluster_ips == {"10.0.0.1": "a/b"}


def test_only_services_are_touched() -> None:
    config = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "spec": {}}
    assert service_addresses(config, dict(config), Options()) == []


# -- namespace references ----------------------------------------------------------------------

MATCHING = [
    "postgres-0.postgres.shop.svc.cluster.local",
    "postgres.shop.svc",
    "postgres.shop.svc.cluster.local.",
    "postgres://app@postgres.shop.svc:5432/orders",
    "http://api.shop.svc.cluster.local/v1",
    "_pg._tcp.postgres.shop.svc.cluster.local",
    "hosts=a.shop.svc,b.shop.svc",
]
NOT_MATCHING = [
    "shop",
    "the shop is open",
    "postgres.shop",  # no .svc: could be anything
    "shop.svc",  # no Service name
    "postgres.myshop.svc",
    "postgres.shop-2.svc",
    "postgres.shop.svcx",
    "postgres.shop.service.consul",
    "www.shop.example.com",
]


@pytest.mark.parametrize("text", MATCHING)
def test_service_dns_names_of_a_mapped_namespace_are_found(text: str) -> None:
    config = {"kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"k": text}}
    same, found = namespace_references(config, {"shop": "shop2"}, rewrite=False)
    assert same is config
    assert [(f["path"], f["from"], f["to"], f["rewritten"]) for f in found] == [
        ("data.k", "shop", "shop2", False)
    ]
    assert found[0]["occurrences"] == text.count(".shop.svc")
    rewritten, _ = namespace_references(config, {"shop": "shop2"}, rewrite=True)
    assert rewritten["data"]["k"] == text.replace(".shop.svc", ".shop2.svc")


@pytest.mark.parametrize("text", NOT_MATCHING)
def test_other_words_are_not_namespace_references(text: str) -> None:
    config = {"kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"k": text}}
    result, found = namespace_references(config, {"shop": "shop2"}, rewrite=True)
    assert found == [] and result["data"]["k"] == text


def test_references_anywhere_in_an_object_are_found_by_path() -> None:
    sts = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {
            "name": "postgres",
            "namespace": "shop2",
            "annotations": {"example.com/upstream": "api.shop.svc:8080"},
        },
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": "postgres",
                            "args": ["--primary", "postgres-0.postgres.shop.svc.cluster.local"],
                            "env": [
                                {"name": "PLAIN", "value": "shop"},
                                {"name": "PRIMARY", "value": "postgres-0.postgres.shop.svc"},
                            ],
                        }
                    ]
                }
            }
        },
    }
    rewritten, found = namespace_references(sts, {"shop": "shop2"}, rewrite=True)
    container = "spec.template.spec.containers[name=postgres]"
    assert [f["path"] for f in found] == [
        'metadata.annotations["example.com/upstream"]',
        f"{container}.args[1]",
        f"{container}.env[name=PRIMARY].value",
    ]
    assert all(f["rewritten"] for f in found)
    env = rewritten["spec"]["template"]["spec"]["containers"][0]["env"]
    assert env == [
        {"name": "PLAIN", "value": "shop"},
        {"name": "PRIMARY", "value": "postgres-0.postgres.shop2.svc"},
    ]
    assert rewritten["metadata"]["annotations"]["example.com/upstream"] == "api.shop2.svc:8080"
    assert rewritten["metadata"]["namespace"] == "shop2"
    assert sts["spec"]["template"]["spec"]["containers"][0]["env"][1]["value"].endswith(
        "shop.svc"
    )  # the input is not changed


def test_secret_data_is_read_decoded_and_never_reported() -> None:
    url = "postgres://app:hunter2@postgres.shop.svc:5432/orders"
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "db", "namespace": "shop2"},
        "type": "Opaque",
        "data": {
            "url": b64(url),
            "password": b64("hunter2"),
            "binary": base64.b64encode(b"\xff\xfe.shop.svc\x00").decode(),
            "not-base64": "%%%",
        },
    }
    found_only, found = namespace_references(secret, {"shop": "shop2"}, rewrite=False)
    assert found_only is secret
    assert [(f["path"], f["from"]) for f in found] == [("data.url", "shop")]
    shown = json.dumps(found)
    assert "hunter2" not in shown and "postgres://" not in shown and b64(url) not in shown
    rewritten, _ = namespace_references(secret, {"shop": "shop2"}, rewrite=True)
    assert unb64(rewritten["data"]["url"]) == url.replace("shop.svc", "shop2.svc")
    for key in ("password", "binary", "not-base64"):
        assert rewritten["data"][key] == secret["data"][key]


def test_config_map_binary_data_is_read_decoded() -> None:
    config = {
        "kind": "ConfigMap",
        "metadata": {"name": "c"},
        "binaryData": {"hosts": b64("a.shop.svc b.shop.svc")},
    }
    rewritten, found = namespace_references(config, {"shop": "new"}, rewrite=True)
    assert [(f["path"], f["occurrences"]) for f in found] == [("binaryData.hosts", 2)]
    assert unb64(rewritten["binaryData"]["hosts"]) == "a.new.svc b.new.svc"


def test_several_mapped_namespaces_are_rewritten_at_once() -> None:
    config = {"kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"k": "x.a.svc y.b.svc"}}
    rewritten, found = namespace_references(config, {"a": "b", "b": "c"}, rewrite=True)
    assert rewritten["data"]["k"] == "x.b.svc y.c.svc"  # not x.c.svc: one pass
    assert [(f["from"], f["to"]) for f in found] == [("a", "b"), ("b", "c")]


def test_no_mapping_no_references() -> None:
    config = {"kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"k": "x.shop.svc"}}
    assert namespace_references(config, {}, rewrite=True) == (config, [])
    assert namespace_references(config, {"shop": "shop"}, rewrite=True) == (config, [])


def test_the_plan_reports_references_of_the_objects_it_makes_bounded() -> None:
    config: Obj = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "many", "namespace": "shop", "uid": "u1"},
        "data": {f"k{i:03}": f"s{i}.shop.svc" for i in range(REPORT_LIMIT + 50)},
    }
    root_ca: Obj = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "kube-root-ca.crt", "namespace": "shop", "uid": "u2"},
        "data": {"note": "x.shop.svc"},  # skipped: not made, not reported
    }
    for rewrite in (False, True):
        options = Options(rewrite_namespace_references=rewrite)
        plan = make_plan([config, root_ca], [], "full", Filters(), {"shop": "s2"}, {}, options)
        report = fidelity_report(plan)
        assert report["namespaceReferenceCount"] == REPORT_LIMIT + 50
        assert len(report["namespaceReferences"]) == REPORT_LIMIT
        assert report["namespaceReferences"][0] == {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "namespace": "s2",
            "name": "many",
            "path": "data.k000",
            "from": "shop",
            "to": "s2",
            "occurrences": 1,
            "rewritten": rewrite,
        }
        (many,) = [s for s in plan.steps if s.original is config]
        made = many.prepared["data"]["k000"]
        assert made == ("s0.s2.svc" if rewrite else "s0.shop.svc")
    # Without a namespace mapping, or in data-only mode, nothing to report.
    assert fidelity_report(make_plan([config], [], "full", Filters(), {}, {})) == {}
    assert fidelity_report(make_plan([config], [], "data-only", Filters(), {"shop": "x"}, {})) == {}


# -- GitOps tracking metadata ------------------------------------------------------------------

GITOPS_LABELS = {
    "app.kubernetes.io/instance": "shop",
    "app.kubernetes.io/managed-by": "Helm",
    "argocd.argoproj.io/instance": "shop",
    "kustomize.toolkit.fluxcd.io/name": "shop",
    "kustomize.toolkit.fluxcd.io/namespace": "flux-system",
    "helm.toolkit.fluxcd.io/name": "shop",
    "helm.toolkit.fluxcd.io/namespace": "flux-system",
}
GITOPS_ANNOTATIONS = {
    "argocd.argoproj.io/tracking-id": "shop:apps/StatefulSet:shop/postgres",
    "argocd.argoproj.io/sync-wave": "1",
    "argocd.argoproj.io/compare-options": "IgnoreExtraneous",
    "meta.helm.sh/release-name": "shop",
    "meta.helm.sh/release-namespace": "shop",
    "kustomize.toolkit.fluxcd.io/checksum": "0123abcd",
    "helm.toolkit.fluxcd.io/driftDetection": "enabled",
}


def helm_release_secret(namespace: str = "shop") -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "helm.sh/release.v1",
        "metadata": {
            "name": "sh.helm.release.v1.shop.v1",
            "namespace": namespace,
            "uid": "uid-release",
            "labels": {"name": "shop", "owner": "helm", "status": "deployed", "version": "1"},
        },
        # Helm stores the release gzipped and base64-encoded once more inside the data.
        "data": {"release": b64("H4sIAAAAAAAC/6quVkrLz1eyUkpKLFKqBQQAAP//r+ErORAAAAA=")},
    }


def test_gitops_tracking_metadata_and_helm_releases_are_restored_as_captured() -> None:
    sts: Obj = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {
            "name": "postgres",
            "namespace": "shop",
            "uid": "uid-sts",
            "labels": dict(GITOPS_LABELS, app="postgres"),
            "annotations": dict(GITOPS_ANNOTATIONS),
        },
        "spec": {"serviceName": "postgres"},
    }
    web = service("web", **NODE_PORT)
    web["metadata"].update(labels=dict(GITOPS_LABELS), annotations=dict(GITOPS_ANNOTATIONS))
    release = helm_release_secret()
    for namespaces in ({}, {"shop": "shop2"}):
        options = Options(rewrite_namespace_references=True)
        plan = make_plan([sts, web, release], [], "full", Filters(), namespaces, {}, options)
        steps = {s.original["metadata"]["name"]: s for s in plan.steps}
        assert all(s.skip is None for s in steps.values())
        for name in ("postgres", "web"):
            meta = steps[name].prepared["metadata"]
            for key, value in GITOPS_LABELS.items():
                assert meta["labels"][key] == value, (name, key)
            for key, value in GITOPS_ANNOTATIONS.items():
                assert meta["annotations"][key] == value, (name, key)
        made = steps["sh.helm.release.v1.shop.v1"].prepared
        assert made["type"] == "helm.sh/release.v1"
        assert made["data"] == release["data"]
        assert made["metadata"]["labels"] == release["metadata"]["labels"]
        assert made["metadata"]["namespace"] == namespaces.get("shop", "shop")
