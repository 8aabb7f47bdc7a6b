"""Keys, key wrapping and authenticated encryption.

A repository has one master key: 32 bytes for the AEAD (AES-256-GCM: `mover benchmark` measured
~16 GB/s on one core of the reference VM, which has VAES, against ~4.3 GB/s for
ChaCha20-Poly1305; every server CPU we target has AES instructions) and 32 bytes for keyed
BLAKE3 chunk ids. The master key is stored only wrapped, by a key derived from the password with
Argon2id (memory-hard). Nonces are random (96 bits): a repository of 10 TiB in 1 MiB chunks
encrypts ~2^23 objects, far below the ~2^32 where random nonces start to risk a collision.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

import blake3
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id

from mover.errors import IntegrityError, WrongPassword

NONCE = 12
TAG = 16
OVERHEAD = NONCE + TAG
WRONG_PASSWORD = (
    "wrong password: it opens none of this repository's keys "
    "(check MOVER_PASSWORD / MOVER_PASSWORD_FILE)"
)


_KDF_LOCK = threading.Lock()


@dataclass(frozen=True)
class KdfParams:
    """Argon2id cost; the defaults take ~0.1 s and 64 MiB on the reference VM."""

    memory_kib: int = 64 * 1024
    iterations: int = 3
    lanes: int = 4

    def derive(self, password: bytes, salt: bytes) -> bytes:
        # One derivation at a time in a process: two at once with lanes > 1 hang forever or
        # raise MemoryError (seen with cryptography 48 / OpenSSL 4.0.3: OpenSSL's Argon2 thread
        # pool), and the node agent opens repositories from several job threads.
        with _KDF_LOCK:
            return Argon2id(
                salt=salt,
                length=32,
                iterations=self.iterations,
                lanes=self.lanes,
                memory_cost=self.memory_kib,
            ).derive(password)


class Sealer:
    """AEAD with a fixed key. Associated data binds a ciphertext to where it belongs (an
    object's kind, a chunk's id), so a stored object cannot be swapped for another."""

    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)

    def seal(self, plaintext: bytes, aad: bytes) -> bytes:
        nonce = os.urandom(NONCE)
        return nonce + self._aead.encrypt(nonce, plaintext, aad)

    def seal_into(self, plaintext: bytes | bytearray | memoryview, aad: bytes) -> bytearray:
        """seal(), encrypting straight into the result: for chunks, where each copy of the
        data costs (perf: copies were 11% of a backup of new incompressible data)."""
        nonce = os.urandom(NONCE)
        sealed = bytearray(NONCE + len(plaintext) + TAG)
        sealed[:NONCE] = nonce
        self._aead.encrypt_into(nonce, plaintext, aad, memoryview(sealed)[NONCE:])
        return sealed

    def open(self, sealed: bytes | memoryview, aad: bytes, what: str) -> bytes:
        if len(sealed) < OVERHEAD:
            raise IntegrityError(f"{what} is truncated ({len(sealed)} bytes)")
        try:
            view = memoryview(sealed)  # slices of a view copy nothing
            return self._aead.decrypt(view[:NONCE], view[NONCE:], aad)
        except InvalidTag:
            raise IntegrityError(f"{what} failed authentication: damaged or altered") from None

    def open_into(
        self, sealed: bytes | memoryview, aad: bytes, what: str, out: bytearray | memoryview
    ) -> None:
        """open(), decrypting into `out` (exactly len(sealed) - OVERHEAD bytes): a restore reuses
        one buffer instead of allocating (and page-faulting) a new one per chunk. On an error,
        `out` holds garbage."""
        if len(sealed) < OVERHEAD:
            raise IntegrityError(f"{what} is truncated ({len(sealed)} bytes)")
        try:
            view = memoryview(sealed)
            self._aead.decrypt_into(view[:NONCE], view[NONCE:], aad, out)
        except InvalidTag:
            raise IntegrityError(f"{what} failed authentication: damaged or altered") from None


@dataclass(frozen=True)
class MasterKey:
    encryption: bytes
    chunk_id: bytes

    @classmethod
    def generate(cls) -> MasterKey:
        return cls(os.urandom(32), os.urandom(32))

    def to_bytes(self) -> bytes:
        return self.encryption + self.chunk_id

    @classmethod
    def from_bytes(cls, raw: bytes) -> MasterKey:
        return cls(raw[:32], raw[32:64])

    def sealer(self) -> Sealer:
        return Sealer(self.encryption)

    def chunk_id_of(self, data: bytes | memoryview) -> bytes:
        # blake3-py releases the GIL above 2 KiB, so worker threads hash in parallel.
        return blake3.blake3(data, key=self.chunk_id).digest()


def wrap(master: MasterKey, password: bytes, kdf: KdfParams, salt: bytes) -> bytes:
    return Sealer(kdf.derive(password, salt)).seal(master.to_bytes(), b"mover key v1")


def unwrap(wrapped: bytes, password: bytes, kdf: KdfParams, salt: bytes) -> MasterKey:
    try:
        raw = Sealer(kdf.derive(password, salt)).open(wrapped, b"mover key v1", "key")
    except IntegrityError:
        raise WrongPassword(WRONG_PASSWORD) from None
    return MasterKey.from_bytes(raw)
