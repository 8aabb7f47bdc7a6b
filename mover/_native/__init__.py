"""Import policy for the compiled core.

There is no pure-Python fallback in the data path: a slow fallback reaching production unnoticed
is worse than failing at start-up. Importing the data path without the compiled module raises
NativeBuildError with one line saying how to build it.
"""

from __future__ import annotations

from types import ModuleType

from mover.errors import NativeBuildError


def load_cdc() -> ModuleType:
    try:
        from mover._native import cdc
    except ImportError as exc:
        raise NativeBuildError(
            f"mover's native core is not built ({exc}); "
            "build it with `pip install .` or `pip install -e .` (needs a C compiler)"
        ) from None
    return cdc
