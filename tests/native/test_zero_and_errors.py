"""The zero test, parameter validation, kernel requests and the import policy."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mover.chunking import ChunkerParams, is_zero, make_chunker, select_kernel
from mover.errors import NativeBuildError, UsageError


@pytest.mark.parametrize("size", [0, 1, 15, 16, 17, 63, 64, 65, 4095, 4096, 4097, 1 << 20])
def test_is_zero_finds_any_single_non_zero_byte(size: int) -> None:
    buf = bytearray(size)
    assert is_zero(buf)
    for pos in {0, size // 2, size - 1} if size else set():
        buf[pos] = 1
        assert not is_zero(buf)
        assert not is_zero(memoryview(buf)[pos:])
        assert is_zero(memoryview(buf)[:pos])
        buf[pos] = 0


def test_is_zero_every_position_of_a_small_buffer() -> None:
    for pos in range(200):
        buf = bytearray(200)
        buf[pos] = 0x80
        assert not is_zero(buf)


@pytest.mark.parametrize(
    ("sizes", "message"),
    [
        ((32, 256, 1024), "below 64 bytes"),
        ((64, 300, 1024), "power of two"),
        ((64, 128, 1024), "power of two"),
        ((512, 256, 1024), "min <= avg <= max"),
        ((64, 256, 128), "min <= avg <= max"),
        ((64, 256, 1 << 31), "exceeds"),
    ],
)
def test_bad_chunker_parameters_are_usage_errors(sizes: tuple[int, int, int], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        ChunkerParams(*sizes)


def test_unknown_kernel_request_fails_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOVER_CDC_KERNEL", "neon9000")
    with pytest.raises(NativeBuildError, match="unknown chunker kernel 'neon9000'"):
        select_kernel()
    monkeypatch.setenv("MOVER_CDC_KERNEL", "scalar")
    assert select_kernel() == "scalar"
    assert make_chunker(ChunkerParams(64, 256, 1024)).kernel == "scalar"


def test_non_contiguous_buffer_is_refused() -> None:
    chunker = make_chunker(ChunkerParams(64, 256, 1024))
    with pytest.raises(BufferError, match="contiguous"):
        chunker.feed(memoryview(bytes(100))[::2])


def test_missing_native_module_gives_one_clear_line() -> None:
    code = (
        "import sys; sys.modules['mover._native.cdc'] = None\n"
        "from mover.chunking import make_chunker\n"
        "make_chunker()\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode != 0
    assert "native core is not built" in proc.stderr
    assert "pip install" in proc.stderr
