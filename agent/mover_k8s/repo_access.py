"""The mover repository a Repository object names: its URL, password and S3 credentials from
Secrets, opened through mover's own storage stack.

Opening costs a key derivation (Argon2id, ~0.1 s and 64 MiB by default), and a Repository keeps
the index it loaded, which goes stale as other writers (one agent per node) add packs. So the
unwrapped key is cached per (URL, password, options), and every `open` returns a fresh
Repository with a fresh index on a fresh backend: cheap, and current.
"""

from __future__ import annotations

import base64
import hashlib
import threading

from mover import api as mover_api
from mover.api import Repository, RepositoryKey, StorageOptions
from mover.errors import MoverError
from mover_k8s.api import REPOSITORY, SECRET
from mover_k8s.errors import SpecError
from mover_k8s.k8s.client import Kube, Obj


def _secret_value(kube: Kube, namespace: str, ref: Obj, key: str, what: str) -> str:
    name = ref.get("name") or ""
    secret = kube.find(SECRET, namespace, name)
    if secret is None:
        raise SpecError(
            "SecretNotFound", f"{what}: Secret {namespace}/{name} does not exist; create it"
        )
    data = secret.get("data") or {}
    if key in data:
        return base64.b64decode(data[key]).decode()
    string_data = secret.get("stringData") or {}
    if key in string_data:
        return str(string_data[key])
    raise SpecError("SecretKeyNotFound", f"{what}: Secret {namespace}/{name} has no key {key!r}")


class Repositories:
    def __init__(self, kube: Kube) -> None:
        self.kube = kube
        self._opened: dict[tuple[str, str, StorageOptions], RepositoryKey] = {}
        self._lock = threading.Lock()

    def get(self, namespace: str, name: str) -> Obj:
        obj = self.kube.find(REPOSITORY, namespace, name)
        if obj is None:
            raise SpecError(
                "RepositoryNotFound",
                f"Repository {namespace}/{name} does not exist; create it or name another",
            )
        return obj

    def open(self, namespace: str, name: str) -> Repository:
        obj = self.get(namespace, name)
        spec = obj.get("spec") or {}
        url = str(spec.get("url") or "")
        if not url:
            raise SpecError("InvalidRepository", f"Repository {namespace}/{name} has no spec.url")
        what = f"Repository {namespace}/{name}"
        password_ref = spec.get("passwordSecretRef") or {}
        password = _secret_value(
            self.kube, namespace, password_ref, password_ref.get("key") or "password", what
        )
        access_key = secret_key = None
        credentials = spec.get("credentialsSecretRef")
        if credentials:
            access_key = _secret_value(
                self.kube,
                namespace,
                credentials,
                credentials.get("accessKeyIdKey") or "AWS_ACCESS_KEY_ID",
                what,
            )
            secret_key = _secret_value(
                self.kube,
                namespace,
                credentials,
                credentials.get("secretAccessKeyKey") or "AWS_SECRET_ACCESS_KEY",
                what,
            )
        s3 = spec.get("s3") or {}
        options = StorageOptions(
            s3_endpoint=s3.get("endpoint") or None,
            s3_region=s3.get("region") or None,
            s3_path_style=bool(s3.get("pathStyle")),
            s3_access_key=access_key,
            s3_secret_key=secret_key,
        )
        digest = hashlib.blake2b(password.encode(), digest_size=16).hexdigest()
        key = (url, digest, options)
        with self._lock:
            opened = self._opened.get(key)
        try:
            if opened is not None:
                return mover_api.reopen_repository(url, opened, storage=options)
            repo = mover_api.open_repository(url, password.encode(), storage=options)
        except MoverError as exc:
            raise SpecError("RepositoryUnavailable", f"{what}: {exc}") from None
        with self._lock:
            self._opened[key] = mover_api.repository_key(repo)
        return repo
