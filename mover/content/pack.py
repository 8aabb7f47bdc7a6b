"""Packs: many sealed blobs in one object, with a sealed header listing them at the end.

    blob_0 | blob_1 | ... | sealed(header) | u32 len(sealed header)
    header = "MVPK" u8 version | u32 count | count x (id[32] u32 offset u32 length u8 kind)

The header lets maintenance rebuild the index from the packs alone. A pack's name is the plain
BLAKE3 of its bytes, which are all ciphertext: it reveals nothing about content and lets
`check --read-data` verify a pack without decrypting it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import blake3

from mover.crypto import Sealer
from mover.errors import IntegrityError

MAGIC = b"MVPK\x01"
_ENTRY = struct.Struct("<32sIIB")
KIND_DATA = 0
KIND_TREE = 1


@dataclass(frozen=True)
class PackEntry:
    chunk_id: bytes
    offset: int
    length: int
    kind: int


def pack_name(pack_id: bytes) -> str:
    h = pack_id.hex()
    return f"data/{h[:2]}/{h}"


class PackBuilder:
    """Collects sealed blobs; the one copy into the pack's bytes happens in finish(), which
    the backup runs on its upload thread, off the pipeline's in-order path."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.entries: list[PackEntry] = []
        self.size = 0

    def add(self, chunk_id: bytes, sealed: bytes, kind: int) -> None:
        self.entries.append(PackEntry(chunk_id, self.size, len(sealed), kind))
        self.parts.append(sealed)
        self.size += len(sealed)

    def __len__(self) -> int:
        return self.size

    def finish(self, sealer: Sealer) -> tuple[bytes, bytes]:
        """(pack id, pack bytes)."""
        header = bytearray(MAGIC + struct.pack("<I", len(self.entries)))
        for e in self.entries:
            header += _ENTRY.pack(e.chunk_id, e.offset, e.length, e.kind)
        sealed = sealer.seal(bytes(header), b"pack header")
        data = b"".join([*self.parts, sealed, struct.pack("<I", len(sealed))])
        return blake3.blake3(data).digest(), data


def read_header(sealer: Sealer, data: bytes, what: str) -> list[PackEntry]:
    if len(data) < 4:
        raise IntegrityError(f"{what} is truncated")
    (hlen,) = struct.unpack("<I", data[-4:])
    if hlen + 4 > len(data):
        raise IntegrityError(f"{what} is truncated")
    header = sealer.open(data[-4 - hlen : -4], b"pack header", f"{what} header")
    if header[:5] != MAGIC:
        raise IntegrityError(f"{what} header has an unknown format")
    (count,) = struct.unpack_from("<I", header, 5)
    return [PackEntry(*_ENTRY.unpack_from(header, 9 + i * _ENTRY.size)) for i in range(count)]
