"""`mover ui` over HTTP: the real dashboard on uvicorn, against the emulator with the real
controller and node agent. Pages, JSON endpoints, a backup started from the dashboard, the
restore wizard's preview and restore, and who sees and does what (local: SelfSubjectAccess-
Reviews; in the cluster: TokenReview and SubjectAccessReviews, writes with the user's token)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import psutil
import requests

from mover_k8s import api
from mover_k8s.k8s.client import Kube
from mover_k8s.ui.access import ClusterAccess, LocalAccess

from .conftest import (
    SYSTEM,
    Env,
    app_manifests,
    backup_body,
    read_bytes,
    volume_path,
    wait_until,
)
from .ui_support import Client, HeldVolume, app_with_backup, serve

ROOT = Path(__file__).resolve().parents[2]


def wait_done(client: Client, kind: str, name: str) -> dict[str, object]:
    def ended() -> dict[str, object] | None:
        live: dict[str, object] = client.json(f"/api/progress/{kind}/{name}")
        return live if live["done"] else None

    result: dict[str, object] = wait_until(ended, 90, f"{kind} {name} to end")
    return result


def test_local_pages_backup_and_restore(env: Env, tmp_path: Path) -> None:
    with env.running():
        data = app_with_backup(env)
        with serve(LocalAccess(env.kube)) as served:
            # Without the run's secret: nothing but the sign-in page.
            stranger = served.client(sign_in=False)
            assert stranger.get("/").status_code == 401
            assert stranger.get("/api/applications").status_code == 401
            assert stranger.get(f"/?secret={served.dashboard.secret}x").status_code == 401
            # Only loopback names as Host (DNS rebinding).
            client = served.client()
            rebound = client.get("/", headers={"Host": f"evil.example:{served.url[-5:]}"})
            assert rebound.status_code == 421

            page = client.get("/")
            assert page.status_code == 200
            assert "shop" in page.text and "other" in page.text
            assert page.headers["Content-Security-Policy"].startswith("default-src 'self'")
            apps = {a["name"]: a for a in client.json("/api/applications")["applications"]}
            assert set(apps) == {"shop", "other"}  # not kube-system, not mover's own
            shop = apps["shop"]
            assert shop["lastBackup"] == "first"
            assert shop["volumes"] == 2 and shop["bytes"] == 2 * 3 * (1 << 20)
            assert [s["name"] for s in shop["schedules"]] == ["nightly"]
            assert shop["protection"] == "paused"
            assert apps["other"]["protection"] == "unscheduled"
            assert apps["other"]["lastBackup"] == ""

            detail = client.json("/api/applications/shop")
            assert [p["name"] for p in detail["points"]] == ["first"]
            point = detail["points"][0]
            assert point["phase"] == "Completed" and len(point["rootHash"]) == 64
            assert client.get("/apps/shop").status_code == 200

            backup = client.json("/api/backups/first")
            kinds = {k["kind"]: k["count"] for k in backup["capture"]["kinds"]}
            assert kinds["ConfigMap"] == 2 and kinds["Deployment"] == 1 and kinds["Widget"] == 1
            assert backup["capture"]["namespaces"] == ["shop"]
            assert backup["capture"]["storageClasses"] == ["fast"]
            page = client.get("/backups/first")
            assert backup["point"]["rootHash"] in page.text

            # Verify: a POST without the form's CSRF token is refused, changes nothing.
            forged = client.post("/backups/first/verify", {"csrf": "forged"})
            assert forged.status_code == 403
            other_site = client.post(
                "/backups/first/verify", headers={"Origin": "http://evil.example"}
            )
            assert other_site.status_code == 403
            verified = client.post("/backups/first/verify", {"readData": "on"})
            assert verified.status_code == 200
            assert 'id="verified" class="ok"' in verified.text, verified.text

            # A backup started from the dashboard runs (one volume's data held back: the data
            # path reads in large blocks, so a 3 MiB volume shows no bytes until it has them
            # all); its progress is shown while it runs, until it ends.
            held = HeldVolume(env, "shop", "data-b", data["data-b"])
            client.get("/apps/shop")
            started = client.post("/apps/shop/backup", {"repository": "default"})
            assert started.status_code == 200
            name = started.url.rsplit("/", 1)[1]
            assert name.startswith("ui-shop-")
            assert 'data-poll="/api/progress/backups/' + name in started.text

            def midway() -> dict[str, Any] | None:
                live: dict[str, Any] = client.json(f"/api/progress/backups/{name}")
                phases = {v["name"]: v["phase"] for v in live["volumes"]}
                return live if phases == {"data-a": "Completed", "data-b": "Running"} else None

            live_now = wait_until(midway, 90, "the backup to be seen running")
            assert not live_now["done"] and live_now["phase"] == "WaitingForVolumes"
            assert live_now["volumeCount"] == 2 and live_now["volumesDone"] == 1
            assert live_now["text"]["done"] == "3.0 MiB" and live_now["text"]["total"] == "6.0 MiB"
            assert live_now["text"]["percent"] == 50
            page = client.get(f"/backups/{name}")
            assert "1 of 2 volumes done" in page.text
            held.release()
            made = env.kube.get(api.BACKUP, SYSTEM, name)
            assert made["spec"]["includedNamespaces"] == ["shop"]
            assert made["metadata"]["labels"]["mover.dev/app"] == "shop"
            live = wait_done(client, "backups", name)
            assert live["phase"] == "Completed"
            assert live["volumeCount"] == 2 and live["volumesDone"] == 2
            progress = live["progress"]
            assert isinstance(progress, dict)
            assert progress["bytesDone"] == progress["bytesTotal"] == 2 * 3 * (1 << 20)
            running = client.json("/api/running")["running"]
            assert any(e["name"] == name and e["done"] for e in running)
            assert client.get("/running").status_code == 200

            # The wizard: the form, a preview that writes nothing, then the restore.
            form_page = client.get(f"/restore?backup={name}")
            assert 'name="ns:shop" value="shop"' in form_page.text
            fields = {
                "backup": name,
                "name": "back",
                "mode": "full",
                "existing": "skip",
                "ns:shop": "shop2",
                "sc:fast": "standard",
                "transforms": "- kind: ConfigMap\n  nameRegex: ^app-config$\n"
                "  patch:\n    - {op: add, path: /data/restored, value: 'yes'}\n",
            }
            preview = client.post("/restore/preview", fields)
            assert preview.status_code == 200
            assert 'id="preview-error"' not in preview.text, preview.text
            assert env.kube.find(api.NAMESPACE, None, "shop2") is None  # nothing written
            assert env.kube.find(api.RESTORE, SYSTEM, "back") is None
            assert "Deployment" in preview.text and "shop2/shop" in preview.text
            assert "managed by Deployment/shop" in preview.text  # the ReplicaSet: skipped
            assert "transformed by transforms[0]" in preview.text
            restored = client.post("/restore", fields)
            assert restored.status_code == 200 and restored.url.endswith("/restores/back")
            live = wait_done(client, "restores", "back")
            assert live["phase"] == "Completed", live
            assert client.get("/restores/back").status_code == 200
            config = env.kube.get(api.CONFIG_MAP, "shop2", "app-config")
            assert config["data"]["restored"] == "yes"
            claim = env.kube.get(api.PVC, "shop2", "data-a")
            assert claim["spec"]["storageClassName"] == "standard"
            assert read_bytes(volume_path(env.kube, "shop2", "data-a")) == data["data-a"]

            # Into the namespace it came from: the objects are there, the preview says so.
            same = client.post("/restore/preview", {**fields, "ns:shop": "shop"})
            assert "exist (kept as they are)" in same.text
            assert 'id="preview-objects"' in same.text
            bad = client.post("/restore/preview", {**fields, "transforms": "- kind: [unclosed"})
            assert 'id="preview-error"' in bad.text

            # Drift against git: the app's manifests with one change and one object less.
            git = tmp_path / "git"
            git.mkdir()
            for _rt, body in app_manifests("shop"):
                if body["kind"] == "ConfigMap" and body["metadata"]["name"] == "app-config":
                    body["data"]["greeting"] = "hi"
                if body["kind"] != "Widget":
                    name_ = body["metadata"]["name"]
                    (git / f"{body['kind']}-{name_}.yaml").write_text(json.dumps(body))
            drift = client.get(f"/backups/{name}/drift", params={"desired": str(git)})
            assert drift.status_code == 200
            assert 'id="drift-error"' not in drift.text, drift.text
            assert "only in the cluster" in drift.text and "Widget" in drift.text
            assert "data.greeting" in drift.text
            assert '<code>"hi"</code>' in drift.text
            relative = client.get(f"/backups/{name}/drift", params={"desired": "git"})
            assert "give the directory&#39;s absolute path" in relative.text

            repos = client.json("/api/repositories")
            (repo,) = repos["repositories"]
            assert repo["name"] == "default" and repo["snapshots"] >= 6
            (agent,) = repos["agents"]
            assert agent["node"] == "node-a" and agent["alive"]
            assert client.get("/repositories").status_code == 200


def test_who_sees_what(env: Env) -> None:
    """A user sees the apps where they may get backups.mover.dev, starts backups only where
    they may create them; in the cluster the token is checked first and writes are theirs."""
    cluster = env.served.cluster
    cluster.tokens.update(
        {
            "alice-token": {"username": "alice", "groups": ["shop-team"]},
            "bob-token": {"username": "bob", "groups": []},
            "admin-token": {"username": "admin", "groups": ["system:masters"]},
        }
    )
    cluster.grant("group:shop-team", ["get", "list"], ["backups.mover.dev"], ["shop"])
    cluster.grant("alice", ["create"], ["backups.mover.dev"], ["shop"])
    cluster.grant("group:system:masters", ["*"], ["*"], ["*"])
    with env.running():
        app_with_backup(env)
        env.kube.create(api.BACKUP, backup_body("of-other", includedNamespaces=["other"]))
        env.wait_phase(api.BACKUP, "of-other")

        # Local: the kubeconfig user's own rights, asked with SelfSubjectAccessReviews.
        alice_kube = env.kube.as_user("alice-token")
        try:
            with serve(LocalAccess(alice_kube)) as served:
                client = served.client()
                apps = client.json("/api/applications")["applications"]
                assert [a["name"] for a in apps] == ["shop"]
                assert "other" not in client.get("/").text
                assert client.get("/apps/other").status_code == 404
                assert client.get("/backups/of-other").status_code == 404
                assert client.get("/api/progress/backups/of-other").status_code == 404
                assert client.get("/backups/first").status_code == 200
        finally:
            alice_kube.close()

        with serve(ClusterAccess(env.kube)) as served:
            assert served.client().get("/").status_code == 401  # no token
            assert served.client("forged").get("/api/applications").status_code == 401
            bob = served.client("bob-token")
            assert bob.json("/api/applications")["applications"] == []
            alice = served.client("alice-token")
            assert [a["name"] for a in alice.json("/api/applications")["applications"]] == ["shop"]
            assert alice.get("/apps/other").status_code == 404
            page = alice.get("/apps/shop")
            assert 'id="backup-now"' in page.text
            refused = alice.post("/apps/other/backup", {"repository": "default"})
            assert refused.status_code == 403
            assert env.kube.list(api.BACKUP, SYSTEM, label_selector="mover.dev/app=other") == []
            # Repositories (their URLs) and agents: for who may list Repositories there.
            assert alice.get("/repositories").status_code == 403
            assert alice.get("/api/repositories").status_code == 403
            admin = served.client("admin-token")
            names = {a["name"] for a in admin.json("/api/applications")["applications"]}
            assert names == {"shop", "other"}
            assert admin.get("/repositories").status_code == 200

            # Signing in with a token sets an HttpOnly cookie; a wrong token does not.
            browser = served.client()
            browser.get("/signin")
            assert browser.post("/signin", {"token": "forged"}).status_code == 401
            signed = browser.post("/signin", {"token": "alice-token"})
            assert signed.status_code == 200 and "shop" in signed.text
            assert browser.http.cookies.get("mover_token") == "alice-token"


def test_user_token_kube_sends_the_users_token(env: Env) -> None:
    """Kube.as_user: the same API server, the user's bearer token instead of ours."""
    env.served.cluster.tokens["carol-token"] = {"username": "carol", "groups": []}
    env.served.cluster.grant("carol", ["get"], ["backups.mover.dev"], ["shop"])
    carol = Kube.at(env.served.url).as_user("carol-token")
    try:
        review = carol.request(
            "POST",
            "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
            body={
                "apiVersion": "authorization.k8s.io/v1",
                "kind": "SelfSubjectAccessReview",
                "spec": {
                    "resourceAttributes": {
                        "namespace": "shop",
                        "verb": "get",
                        "group": "mover.dev",
                        "resource": "backups",
                    }
                },
            },
        )
        assert review["status"]["allowed"] is True
    finally:
        carol.close()


def test_the_command_listens_on_loopback_with_a_secret(env: Env, tmp_path: Path) -> None:
    """`mover ui` (the verb the `mover.commands` entry point names) with a kubeconfig: it binds
    127.0.0.1 only and prints the URL with this run's secret, which the pages need."""
    entry = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]
    assert entry["mover.commands"]["ui"] == "mover_k8s.ui.command:ui"
    kubeconfig = env.served.kubeconfig(tmp_path / "kubeconfig")
    code = "from mover_k8s.ui.command import ui; ui()"
    process = subprocess.Popen(
        [sys.executable, "-c", code, "--kubeconfig", str(kubeconfig), "--port", "0"],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        line = process.stderr.readline()
        found = re.match(r"mover ui: (http://127\.0\.0\.1:(\d+)/)\?secret=(\S+)$", line.strip())
        assert found, line
        url, port, secret = found.group(1), int(found.group(2)), found.group(3)
        listening = [
            c.laddr
            for c in psutil.Process(process.pid).net_connections("tcp")
            if c.status == psutil.CONN_LISTEN
        ]
        assert [(a.ip, a.port) for a in listening] == [("127.0.0.1", port)]
        http = requests.Session()
        assert http.get(url, timeout=30).status_code == 401
        page = http.get(f"{url}?secret={secret}", timeout=30)
        assert page.status_code == 200 and "Applications" in page.text
    finally:
        process.terminate()
        process.wait(30)
        if process.stderr is not None:
            process.stderr.close()
