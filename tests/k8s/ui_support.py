"""`mover ui` served for tests: the real application (mover_k8s.ui.web) on a real uvicorn on
loopback, in a thread, against the emulator; an HTTP client that keeps cookies and fills the
CSRF field as a browser's form would."""

from __future__ import annotations

import os
import re
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import requests
import uvicorn

from mover_k8s import api
from mover_k8s.ui.access import Access
from mover_k8s.ui.web import Dashboard, build

from .conftest import (
    SYSTEM,
    Env,
    backup_body,
    deploy_app,
    volume_path,
    wait_until,
    write_app_data,
)

CSRF_FIELD = re.compile(r'name="csrf" value="([^"]+)"')
SCHEDULE = {
    "apiVersion": api.API_VERSION,
    "kind": "Schedule",
    "metadata": {"name": "nightly", "namespace": SYSTEM},
    "spec": {
        "schedule": "0 2 * * *",
        "template": {"repository": "default", "includedNamespaces": ["shop"]},
        "paused": True,
    },
}


def app_with_backup(env: Env) -> dict[str, bytes]:
    """The app `shop` (two volumes) and a Completed Backup `first` of it; a Schedule covering
    it (paused, so that the controller makes no Backup of its own meanwhile)."""
    deploy_app(env.kube, "shop")
    data = write_app_data(env.kube, "shop")
    env.kube.create(api.NAMESPACE, {"metadata": {"name": "other"}})
    env.kube.create(api.SCHEDULE, SCHEDULE)
    env.kube.create(api.BACKUP, backup_body("first", includedNamespaces=["shop"]))
    assert env.wait_phase(api.BACKUP, "first")["status"]["phase"] == "Completed"
    return data


@dataclass
class Served:
    url: str
    dashboard: Dashboard

    def client(self, token: str | None = None, sign_in: bool = True) -> Client:
        client = Client(self.url, token)
        if sign_in and self.dashboard.local:
            client.get(f"/?secret={self.dashboard.secret}")
        return client


class Client:
    """requests, with the dashboard's address, a bearer token (in-cluster mode) and the CSRF
    token of the last page read."""

    def __init__(self, url: str, token: str | None = None) -> None:
        self.url = url
        self.http = requests.Session()
        if token:
            self.http.headers["Authorization"] = f"Bearer {token}"
        self.csrf = ""

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        response = self.http.get(self.url + path, timeout=60, **kwargs)
        found = CSRF_FIELD.search(response.text)
        if found:
            self.csrf = found.group(1)
        return response

    def json(self, path: str) -> Any:
        response = self.get(path)
        assert response.status_code == 200, response.text
        return response.json()

    def post(self, path: str, data: dict[str, str] | None = None, **kwargs: Any) -> Any:
        fields = {"csrf": self.csrf, **(data or {})}
        response = self.http.post(self.url + path, data=fields, timeout=120, **kwargs)
        found = CSRF_FIELD.search(response.text)
        if found:
            self.csrf = found.group(1)
        return response


class HeldVolume:
    """An app's volume whose data is held back: its file becomes a FIFO, into which `first`
    bytes of `data` are written at once and the rest after `release()`, so a backup of it is
    seen running (tests/k8s/test_agent.py's Feeder, on a claim's volume)."""

    def __init__(self, env: Env, namespace: str, pvc: str, data: bytes, first: int = 0) -> None:
        path = volume_path(env.kube, namespace, pvc)
        path.unlink()
        os.mkfifo(path)
        self.data, self.first, self.path = data, first, path
        self.go = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        with open(self.path, "wb") as f:  # blocks until the agent opens it
            f.write(self.data[: self.first])
            f.flush()
            self.go.wait(120)
            f.write(self.data[self.first :])

    def release(self) -> None:
        self.go.set()
        self.thread.join(60)
        assert not self.thread.is_alive()


@contextmanager
def serve(access: Access, namespace: str = SYSTEM) -> Iterator[Served]:
    dashboard = Dashboard(access, namespace)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(build(dashboard), log_level="warning", access_log=False, lifespan="off")
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started, 30, "the dashboard to start")
        yield Served(f"http://127.0.0.1:{port}", dashboard)
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()
