"""The Restore report's external names: each name recorded in the captured objects (a load
balancer's hostname, an ExternalName target, Ingress hosts, external-dns names) paired with the
restored object's current one, refreshed while pending (mover_k8s.external, the Restore
reconciler), and shown by `mover app describe --restore`."""

from __future__ import annotations

from pathlib import Path

from mover_k8s import api
from mover_k8s.external import pair
from mover_k8s.k8s.client import Kube, Obj
from mover_k8s.k8s.types import ResourceType

from .conftest import SYSTEM, Env, backup_body, restore_body, wait_until
from .test_cli import as_json, mover

INGRESS = ResourceType(
    "networking.k8s.io", "v1", "ingresses", "Ingress", True, frozenset(), frozenset({"status"})
)
OLD_LB = "a1b2.elb.eu-west-1.amazonaws.com"
NEW_LB = "c3d4.elb.eu-central-1.amazonaws.com"

# -- pairing, on values ---------------------------------------------------------------------


def test_pair_same_changed_pending() -> None:
    host = "loadBalancerHostname"
    assert pair([(host, "a")], [(host, "a")]) == [(host, "a", "a", "same")]
    assert pair([(host, "a")], []) == [(host, "a", "", "pending")]
    assert pair([(host, "a")], [(host, "b")]) == [(host, "a", "b", "changed")]
    # A hostname that comes back as an IP (another cloud) is a change, not a pending name.
    assert pair([(host, "a")], [("loadBalancerIP", "203.0.113.9")]) == [
        (host, "a", "203.0.113.9", "changed")
    ]
    # Two hosts recorded, one kept and one gone; a new one shows with nothing recorded.
    hosts = [("ingressHost", "x"), ("ingressHost", "y")]
    assert pair(hosts, [("ingressHost", "x")]) == [
        ("ingressHost", "x", "x", "same"),
        ("ingressHost", "y", "", "changed"),
    ]
    assert pair(hosts[:1], [("ingressHost", "x"), ("ingressHost", "z")]) == [
        ("ingressHost", "x", "x", "same"),
        ("ingressHost", "", "z", "changed"),
    ]


# -- through the controller, against the emulator ---------------------------------------------


def external_app(kube: Kube, ns: str) -> None:
    """A LoadBalancer Service (its cloud hostname set as a cloud controller would), an
    ExternalName Service, and an Ingress with a host and an external-dns name."""
    kube.create(api.NAMESPACE, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    kube.create(
        api.SERVICE,
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "public", "namespace": ns},
            "spec": {"type": "LoadBalancer", "ports": [{"port": 443}]},
        },
    )
    kube.patch_status(
        api.SERVICE, ns, "public", {"loadBalancer": {"ingress": [{"hostname": OLD_LB}]}}
    )
    kube.create(
        api.SERVICE,
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "db", "namespace": ns},
            "spec": {"type": "ExternalName", "externalName": "db.corp.example"},
        },
    )
    kube.create(
        INGRESS,
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "Ingress",
            "metadata": {
                "name": "web",
                "namespace": ns,
                "annotations": {"external-dns.alpha.kubernetes.io/hostname": "shop.example.com"},
            },
            "spec": {"rules": [{"host": "www.shop.example"}]},
        },
    )


def names(restore: Obj) -> set[tuple[str, str, str, str, str, str, str]]:
    return {
        (e["kind"], e["namespace"], e["name"], e["what"], e["recorded"], e["current"], e["state"])
        for e in restore["status"]["report"].get("external") or []
    }


def report_of(env: Env, name: str) -> Obj:
    report: Obj = env.kube.get(api.RESTORE, SYSTEM, name)["status"]["report"]
    return report


def test_restore_pairs_external_names(env: Env, tmp_path: Path) -> None:
    external_app(env.kube, "shop")
    with env.running(agent=False):
        env.kube.create(
            api.BACKUP, backup_body("b", includedNamespaces=["shop"], snapshotVolumes=False)
        )
        assert env.wait_phase(api.BACKUP, "b")["status"]["phase"] == "Completed"
        env.kube.create(
            api.RESTORE, restore_body("moved", backup="b", namespaceMapping={"shop": "new"})
        )
        restored = env.wait_phase(api.RESTORE, "moved")
        assert restored["status"]["phase"] == "Completed", restored["status"]
        # The new Service has no load balancer yet: pending; the rest came back as it was.
        unchanged = {
            ("Service", "new", "db", "externalName", "db.corp.example", "db.corp.example", "same"),
            ("Ingress", "new", "web", "ingressHost", "www.shop.example", "www.shop.example",
             "same"),
            ("Ingress", "new", "web", "externalDNS:hostname", "shop.example.com",
             "shop.example.com", "same"),
        }  # fmt: skip
        lb = ("Service", "new", "public", "loadBalancerHostname", OLD_LB)
        assert names(restored) == {(*lb, "", "pending"), *unchanged}
        assert restored["status"]["report"]["externalPhase"] == "Waiting"
        pending = as_json(mover(env, tmp_path, "app", "describe", "moved", "--restore", "--json"))
        assert {(e["name"], e["state"]) for e in pending["status"]["report"]["external"]} >= {
            ("public", "pending")
        }

        # The cloud controller provisions the new load balancer.
        env.kube.patch_status(
            api.SERVICE, "new", "public", {"loadBalancer": {"ingress": [{"hostname": NEW_LB}]}}
        )
        wait_until(
            lambda: report_of(env, "moved").get("externalPhase") == "Settled",
            what="the new load balancer's hostname in the report",
        )
    restored = env.kube.get(api.RESTORE, SYSTEM, "moved")
    assert names(restored) == {(*lb, NEW_LB, "changed"), *unchanged}
    assert restored["status"]["phase"] == "Completed"

    shown = as_json(mover(env, tmp_path, "app", "describe", "moved", "--restore", "--json"))
    assert shown["status"]["report"]["external"] == restored["status"]["report"]["external"]
    table = mover(env, tmp_path, "app", "describe", "moved", "--restore")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert "  created: Service new/public" in lines
    at = next(i for i, line in enumerate(lines) if line.startswith("External names"))
    assert "Settled" in lines[at]
    lines = lines[at + 1 :]
    assert lines[0].split() == ["KIND", "OBJECT", "WHAT", "RECORDED", "CURRENT", "STATE"]
    row = next(line for line in lines if "new/public" in line)
    assert row.split() == ["Service", "new/public", "loadBalancerHostname", OLD_LB, NEW_LB,
                           "changed"]  # fmt: skip
    row = next(line for line in lines if "new/db" in line)
    assert row.split()[-1] == "same"


def test_pending_names_are_left_pending_after_external_wait(env: Env, tmp_path: Path) -> None:
    external_app(env.kube, "shop")
    with env.running(agent=False):
        env.kube.create(
            api.BACKUP, backup_body("b", includedNamespaces=["shop"], snapshotVolumes=False)
        )
        assert env.wait_phase(api.BACKUP, "b")["status"]["phase"] == "Completed"
        made = mover(
            env, tmp_path, "app", "restore", "late", "--from-backup", "b",
            "--namespace-mapping", "shop=late", "--external-wait", "0s",
        )  # fmt: skip
        assert made.returncode == 0, made.stderr
        assert env.wait_phase(api.RESTORE, "late")["status"]["phase"] == "Completed"
        report = wait_until(
            lambda: (r := report_of(env, "late")).get("externalPhase") == "TimedOut" and r,
            what="the external names to time out",
        )
        env.kube.create(
            api.RESTORE,
            restore_body("bad", backup="b", namespaceMapping={"shop": "bad"}, externalWait="soon"),
        )
        bad = env.wait_phase(api.RESTORE, "bad")
    assert "spec.externalWait" in report["externalMessage"]
    assert "1 external name(s) still pending" in report["externalMessage"]
    lb = [e for e in report["external"] if e["name"] == "public"]
    assert [(e["recorded"], e["current"], e["state"]) for e in lb] == [(OLD_LB, "", "pending")]
    # A wait that is not a duration fails the Restore before anything is made.
    assert bad["status"]["phase"] == "Failed"
    assert bad["status"]["conditions"][0]["reason"] == "InvalidExternalWait"
    assert env.kube.find(api.NAMESPACE, None, "bad") is None
