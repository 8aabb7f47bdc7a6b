"""Import policy for the compiled core.

There is no pure-Python fallback in the data path: a slow fallback reaching production unnoticed
is worse than failing at start-up. Importing the data path without the compiled module raises
NativeBuildError with one line saying how to build it.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from mover.errors import NativeBuildError


def _load(name: str) -> ModuleType:
    try:
        return importlib.import_module(f"mover._native.{name}")
    except ImportError as exc:
        raise NativeBuildError(
            f"mover's native core is not built ({exc}); "
            "build it with `pip install .` or `pip install -e .` (needs a C compiler)"
        ) from None


def load_cdc() -> ModuleType:
    """The FastCDC chunker."""
    return _load("cdc")


def load_index_run() -> ModuleType:
    """Sorted index runs (mover.content.index)."""
    return _load("index_run")
