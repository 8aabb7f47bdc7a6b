"""The native chunker behind one constructor, with the kernel chosen by CPU or by request.

MOVER_CDC_KERNEL=scalar|avx512 asks for a kernel and fails loudly when this CPU cannot run
it: a benchmark or a test that asked for the vector kernel must never measure the scalar one.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import TYPE_CHECKING

from mover._native import load_cdc
from mover.chunking.params import DEFAULT_PARAMS, ChunkerParams
from mover.errors import NativeBuildError

if TYPE_CHECKING:
    from mover._native.cdc import Chunker

KERNEL_ENV = "MOVER_CDC_KERNEL"
_PREFERENCE = ("avx512", "scalar")


def available_kernels() -> list[str]:
    return list(load_cdc().available_kernels())


def select_kernel(requested: str | None = None) -> str:
    """The kernel to use: the one requested (argument, then env var) or the fastest here."""
    cdc = load_cdc()
    available = cdc.available_kernels()
    wanted = requested or os.environ.get(KERNEL_ENV) or "auto"
    if wanted == "auto":
        return next(k for k in _PREFERENCE if k in available)
    if wanted not in cdc.KERNELS:
        raise NativeBuildError(
            f"unknown chunker kernel {wanted!r} (from {KERNEL_ENV} or --kernel); "
            f"use one of: auto, {', '.join(cdc.KERNELS)}"
        )
    if wanted not in available:
        raise NativeBuildError(
            f"chunker kernel {wanted!r} is not supported by this CPU; "
            f"available here: {', '.join(available)}"
        )
    return str(wanted)


def make_chunker(params: ChunkerParams = DEFAULT_PARAMS, kernel: str | None = None) -> Chunker:
    """A streaming Chunker (see mover._native.cdc.Chunker) for params."""
    cdc = load_cdc()
    chunker: Chunker = cdc.Chunker(
        params.gear_bytes,
        params.mask_s,
        params.mask_l,
        params.min_size,
        params.avg_size,
        params.max_size,
        select_kernel(kernel),
    )
    return chunker


def is_zero(data: bytes | bytearray | memoryview) -> bool:
    return bool(_native_is_zero()(data))


@functools.cache
def _native_is_zero() -> Callable[[bytes | bytearray | memoryview], bool]:
    # Looked up once: is_zero runs for every chunk, and an import lookup costs ~3 us.
    function: Callable[[bytes | bytearray | memoryview], bool] = load_cdc().is_zero
    return function
