"""The index: chunk id -> (pack, offset, length), and its file encoding.

    "MVIX" u8 version | u32 npacks | npacks x pack_id[32] | u32 n | n x (id[32] u32 pack_no
    u32 offset u32 length u8 kind)

sealed with associated data "index". Index files are written after the packs they point to
and before any snapshot that needs them, so a crash leaves at worst unreferenced objects.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from mover.content.pack import PackEntry
from mover.crypto import Sealer
from mover.errors import IntegrityError

MAGIC = b"MVIX\x01"
_ENTRY = struct.Struct("<32sIIIB")


@dataclass(frozen=True)
class Location:
    pack_id: bytes
    offset: int
    length: int
    kind: int


class Index:
    """In memory: one dict entry per chunk. Its size grows with the repository's unique chunks
    (~150 bytes each), not with the size of the volume being backed up."""

    def __init__(self) -> None:
        self._map: dict[bytes, Location] = {}

    def __contains__(self, chunk_id: object) -> bool:
        return chunk_id in self._map

    def __len__(self) -> int:
        return len(self._map)

    def get(self, chunk_id: bytes) -> Location | None:
        return self._map.get(chunk_id)

    def add(self, chunk_id: bytes, location: Location) -> None:
        self._map.setdefault(chunk_id, location)

    def items(self) -> Iterator[tuple[bytes, Location]]:
        return iter(self._map.items())

    def packs(self) -> set[bytes]:
        return {loc.pack_id for loc in self._map.values()}


def encode(sealer: Sealer, entries: Iterable[tuple[bytes, PackEntry]]) -> bytes:
    """entries: (pack id, entry in that pack)."""
    pack_no: dict[bytes, int] = {}
    rows = bytearray()
    count = 0
    for pack_id, e in entries:
        number = pack_no.setdefault(pack_id, len(pack_no))
        rows += _ENTRY.pack(e.chunk_id, number, e.offset, e.length, e.kind)
        count += 1
    body = bytearray(MAGIC + struct.pack("<I", len(pack_no)))
    for pack_id in pack_no:
        body += pack_id
    body += struct.pack("<I", count) + rows
    return sealer.seal(bytes(body), b"index")


def decode(sealer: Sealer, sealed: bytes, what: str) -> Iterator[tuple[bytes, Location]]:
    body = sealer.open(sealed, b"index", what)
    if body[:5] != MAGIC:
        raise IntegrityError(f"{what} has an unknown format")
    (npacks,) = struct.unpack_from("<I", body, 5)
    pos = 9
    packs = [body[pos + 32 * i : pos + 32 * (i + 1)] for i in range(npacks)]
    pos += 32 * npacks
    (count,) = struct.unpack_from("<I", body, pos)
    pos += 4
    for i in range(count):
        chunk_id, number, offset, length, kind = _ENTRY.unpack_from(body, pos + i * _ENTRY.size)
        yield chunk_id, Location(packs[number], offset, length, kind)
