"""mover: a fast, deduplicating, encrypted data mover for Kubernetes volumes."""

from mover.errors import MoverError, NativeBuildError, UsageError

__version__ = "0.1.0"

__all__ = ["MoverError", "NativeBuildError", "UsageError", "__version__"]
