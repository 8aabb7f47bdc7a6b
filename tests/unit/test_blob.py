"""Blobs: what encode() seals, decode() opens and verifies, whatever the input's type and
whether it compresses; and seal_into() is seal() in another shape, not another format."""

from __future__ import annotations

import os

import pytest

from mover.content import blob
from mover.crypto import NONCE, TAG, MasterKey, Sealer
from mover.errors import IntegrityError

KEY = MasterKey.generate()
RAW_SIZE = NONCE + 1 + TAG  # a raw blob: nonce, flag byte, the data, tag


@pytest.mark.parametrize(
    ("data", "compresses"),
    [
        (b"", False),
        (b"x", False),
        (os.urandom(300_000), False),
        (b"text " * 60_000, True),
        (bytes(70_000), True),
    ],
    ids=["empty", "one", "random", "text", "zeros"],
)
@pytest.mark.parametrize("as_view", [False, True])
@pytest.mark.parametrize("level", [0, 3])
def test_encode_then_decode_gives_the_data(
    data: bytes, compresses: bool, as_view: bool, level: int
) -> None:
    """A chunk comes as bytes or as a view of a read buffer; both seal the same way."""
    sealer = KEY.sealer()
    chunk_id = KEY.chunk_id_of(data)
    source = memoryview(bytearray(data)) if as_view else data
    sealed = blob.encode(sealer, chunk_id, source, level)
    assert blob.decode(KEY, sealer, chunk_id, bytes(sealed)) == data
    if level > 0 and compresses:
        assert len(sealed) < len(data) // 2
    else:
        assert len(sealed) == RAW_SIZE + len(data)


def test_a_blob_is_bound_to_its_id() -> None:
    sealer = KEY.sealer()
    data = os.urandom(5000)
    sealed = blob.encode(sealer, KEY.chunk_id_of(data), data, 3)
    with pytest.raises(IntegrityError):
        blob.decode(KEY, sealer, KEY.chunk_id_of(b"other"), bytes(sealed))


def test_seal_into_opens_like_seal() -> None:
    sealer = Sealer(os.urandom(32))
    for plain in (b"", b"a", os.urandom(100_000)):
        into = sealer.seal_into(memoryview(plain), b"aad")
        assert isinstance(into, bytearray) and len(into) == NONCE + len(plain) + TAG
        assert sealer.open(bytes(into), b"aad", "test") == plain
        assert sealer.open(sealer.seal(plain, b"aad"), b"aad", "test") == plain
        with pytest.raises(IntegrityError):
            sealer.open(bytes(into), b"other aad", "test")


@pytest.mark.parametrize(
    "data",
    [b"x", os.urandom(300_000), b"text " * 60_000, bytes(70_000)],
    ids=["one", "random", "text", "zeros"],
)
def test_decode_into_is_decode_into_a_buffer(data: bytes) -> None:
    """Raw and compressed blobs decode into a buffer as decode() gives them; into a buffer of
    another length than the chunk's (the tree lies, or the blob does), never."""
    sealer = KEY.sealer()
    chunk_id = KEY.chunk_id_of(data)
    sealed = memoryview(bytes(blob.encode(sealer, chunk_id, data, 3)))
    out = bytearray(len(data) + 2)  # a recycled buffer: larger, with old bytes
    out[:] = b"\xaa" * len(out)
    blob.decode_into(KEY, sealer, chunk_id, sealed, memoryview(out)[1 : 1 + len(data)])
    assert out[1 : 1 + len(data)] == data and out[0] == out[-1] == 0xAA
    for wrong in (len(data) - 1, len(data) + 1):
        with pytest.raises(IntegrityError, match="bytes long its tree says"):
            blob.decode_into(KEY, sealer, chunk_id, sealed, memoryview(bytearray(wrong)))
    with pytest.raises(IntegrityError, match="authentication"):  # the id is bound in
        blob.decode_into(KEY, sealer, KEY.chunk_id_of(b"other"), sealed, memoryview(out))
    other = KEY.chunk_id_of(b"other")  # sealed under another id: opens, fails the hash
    liar = memoryview(bytes(blob.encode(sealer, other, data, 3)))
    with pytest.raises(IntegrityError, match="does not match its id"):
        blob.decode_into(KEY, sealer, other, liar, memoryview(bytearray(len(data))))
    with pytest.raises(IntegrityError, match="authentication"):
        damaged = bytearray(sealed)
        damaged[len(damaged) // 2] ^= 1
        blob.decode_into(
            KEY, sealer, chunk_id, memoryview(damaged), memoryview(bytearray(len(data)))
        )
