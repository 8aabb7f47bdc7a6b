"""mover: a fast, deduplicating, encrypted data mover for Kubernetes volumes."""

from mover.errors import MoverError, NativeBuildError, UsageError

# The one place the version is written: pyproject.toml reads it (setuptools dynamic), the Helm
# chart's Chart.yaml repeats it (tests/deploy/test_version.py checks).
__version__ = "0.1.0"

__all__ = ["MoverError", "NativeBuildError", "UsageError", "__version__"]
