"""Content-defined chunking: parameters, the native chunker and its kernels."""

from mover.chunking.native import available_kernels, is_zero, make_chunker, select_kernel
from mover.chunking.params import DEFAULT_PARAMS, ChunkerParams

__all__ = [
    "DEFAULT_PARAMS",
    "ChunkerParams",
    "available_kernels",
    "is_zero",
    "make_chunker",
    "select_kernel",
]
