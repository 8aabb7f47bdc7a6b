"""A stored blob: a chunk or tree node, compressed when it pays, then sealed to its id."""

from __future__ import annotations

import threading

import zstandard

from mover.crypto import OVERHEAD, MasterKey, Sealer
from mover.errors import IntegrityError

RAW = 0
ZSTD = 1
# Store raw unless zstd saves at least this share: decompressing costs time on every restore.
MIN_SAVING = 0.03

_local = threading.local()


def _compressor(level: int) -> zstandard.ZstdCompressor:
    # ZstdCompressor objects are not thread-safe; one per thread and level.
    cache = getattr(_local, "compressors", None)
    if cache is None:
        cache = _local.compressors = {}
    if level not in cache:
        cache[level] = zstandard.ZstdCompressor(level=level)
    return cache[level]  # type: ignore[no-any-return]


def _decompressor() -> zstandard.ZstdDecompressor:
    # Made once per thread: making one per chunk cost ~2% of a restore (perf).
    found: zstandard.ZstdDecompressor | None = getattr(_local, "decompressor", None)
    if found is None:
        found = _local.decompressor = zstandard.ZstdDecompressor()
    return found


def aad(chunk_id: bytes) -> bytes:
    return b"blob" + chunk_id


def encode(
    sealer: Sealer, chunk_id: bytes, data: bytes | memoryview, level: int
) -> bytes | bytearray:
    payload: bytes | memoryview = data
    flag = RAW
    if level > 0:
        packed = _compressor(level).compress(data)
        if len(packed) <= len(data) * (1 - MIN_SAVING):
            payload, flag = packed, ZSTD
    plain = _thread_buffer("plain", 1 + len(payload))
    plain[0] = flag
    plain[1:] = payload
    return sealer.seal_into(plain, aad(chunk_id))


def _thread_buffer(name: str, size: int) -> memoryview:
    """A per-thread buffer `name` of at least `size` bytes (a view of exactly `size`), reused
    chunk after chunk: a new one each time would be a fresh allocation and page faults per
    chunk. "plain": encode's flag and payload; "opened": decode_into's opened blob."""
    buffer: bytearray | None = getattr(_local, name, None)
    if buffer is None or len(buffer) < size:
        buffer = bytearray(max(size, 1 << 20))
        setattr(_local, name, buffer)
    return memoryview(buffer)[:size]


def decode(master: MasterKey, sealer: Sealer, chunk_id: bytes, sealed: bytes) -> bytes:
    """Plaintext of a blob, verified: authenticated, and its keyed hash equal to its id."""
    what = f"chunk {chunk_id.hex()[:16]}"
    plain = sealer.open(sealed, aad(chunk_id), what)
    flag = plain[0]
    if flag == ZSTD:
        try:
            body = _decompressor().decompress(memoryview(plain)[1:])
        except zstandard.ZstdError as exc:
            raise IntegrityError(f"{what} does not decompress: {exc}") from None
    elif flag == RAW:
        body = plain[1:]
    else:
        raise IntegrityError(f"{what} has unknown encoding {flag}")
    if master.chunk_id_of(body) != chunk_id:
        raise IntegrityError(f"{what} does not match its id: damaged or altered")
    return body


def decode_into(
    master: MasterKey, sealer: Sealer, chunk_id: bytes, sealed: memoryview, out: memoryview
) -> None:
    """decode() into `out`, which must be exactly the chunk's length (the tree says it): the
    AEAD opens into a per-thread buffer and zstd decompresses straight into `out`, so a restore
    allocates nothing per chunk (fresh buffers page-faulted: ~8% of a restore's CPU, perf).
    Raises IntegrityError as decode() does; then `out` holds garbage, never to be written."""
    what = f"chunk {chunk_id.hex()[:16]}"
    size = len(sealed) - OVERHEAD
    if size < 1:
        raise IntegrityError(f"{what} is truncated ({len(sealed)} bytes)")
    plain = _thread_buffer("opened", size)
    sealer.open_into(sealed, aad(chunk_id), what, plain)
    flag = plain[0]
    if flag == ZSTD:
        try:
            # Given the whole frame and room for all of it, zstd decodes in one pass (no
            # window buffer, no extra copy).
            reader = _decompressor().stream_reader(plain[1:], read_across_frames=False)
            got = reader.readinto(out)
            if got == len(out) and reader.read(1):
                got += 1  # longer than the tree says
        except zstandard.ZstdError as exc:
            raise IntegrityError(f"{what} does not decompress: {exc}") from None
    elif flag == RAW:
        got = size - 1
        if got == len(out):
            out[:] = plain[1:]
    else:
        raise IntegrityError(f"{what} has unknown encoding {flag}")
    if got != len(out):
        raise IntegrityError(f"{what} is not the {len(out)} bytes long its tree says")
    if master.chunk_id_of(out) != chunk_id:
        raise IntegrityError(f"{what} does not match its id: damaged or altered")
