"""Key files: list them, add one for another password, remove one.

Every key file wraps the same master key (docs/format.md), so adding or removing one changes
who can open the repository, never its data. A password change is an add, then the removal of
the key the old password opened: at no moment is there no key that opens the repository."""

from __future__ import annotations

import json
from dataclasses import dataclass

from mover.crypto import KdfParams
from mover.errors import ObjectNotFound, UsageError
from mover.objects.repository import Repository, find_key, resolve_prefix, write_key


@dataclass(frozen=True)
class KeyInfo:
    id: str  # the file's name under keys/ (BLAKE3 of its bytes)
    created: str  # UTC, ISO 8601; "" for keys written before mover recorded it
    hostname: str
    memory_kib: int
    current: bool  # opened with the password this command was given

    def as_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


def list_keys(repo: Repository, password: bytes) -> list[KeyInfo]:
    current = find_key(repo.backend, password)[0]
    found = []
    for name in sorted(repo.backend.list("keys/")):
        try:
            doc = json.loads(repo.backend.read(name))
            memory = int(doc.get("memory_kib", 0))
        except (ObjectNotFound, ValueError, TypeError, AttributeError):
            doc, memory = {}, 0  # damaged: listed with what is known, its name
        found.append(
            KeyInfo(
                name.removeprefix("keys/"),
                str(doc.get("created", "")),
                str(doc.get("hostname", "")),
                memory,
                name == current,
            )
        )
    return found


def add_key(repo: Repository, new_password: bytes, kdf: KdfParams | None = None) -> str:
    """A new key file for `new_password`; returns its id."""
    return write_key(repo.backend, repo.master, new_password, kdf or KdfParams()).removeprefix(
        "keys/"
    )


def resolve_key(repo: Repository, ref: str) -> str:
    """The full id of the key file `ref` (an id or unique prefix of at least 4 hex digits)."""
    ids = [name.removeprefix("keys/") for name in repo.backend.list("keys/")]
    return resolve_prefix(ref, ids, "key", "mover key list")


def remove_key(repo: Repository, key_id: str, password: bytes) -> None:
    """Removes a key file; never the one `password` opens (restic's rule: that would lock out
    the caller, and the last key would leave no way in)."""
    current = find_key(repo.backend, password)[0].removeprefix("keys/")
    if key_id == current:
        raise UsageError(
            f"key {key_id[:8]} is the one this password opens; remove it with another "
            "password, or change the password with `mover key passwd`"
        )
    repo.backend.delete(f"keys/{key_id}")


def change_password(
    repo: Repository, old_password: bytes, new_password: bytes, kdf: KdfParams | None = None
) -> tuple[str, str]:
    """(new key id, removed key id): the new key is written before the old one goes."""
    old = find_key(repo.backend, old_password)[0].removeprefix("keys/")
    new = add_key(repo, new_password, kdf)
    if new != old:
        repo.backend.delete(f"keys/{old}")
    return new, old
