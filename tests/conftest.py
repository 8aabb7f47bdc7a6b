from __future__ import annotations

import os

import pytest
from hypothesis import settings

# Short locally, longer in CI (CI=true): property tests find more with more examples.
settings.register_profile("dev", max_examples=40, deadline=None)
settings.register_profile("ci", max_examples=200, deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked `slow` run in CI (CI=true, as .ci/run sets) and when asked for (`-m slow`,
    or MOVER_SLOW_TESTS=1); a plain `python3 -m pytest` on a workstation leaves them out so
    that it stays within a few minutes on 2 cores. They are deselected, not skipped, and the
    summary line says how many."""
    if os.environ.get("CI") or os.environ.get("MOVER_SLOW_TESTS") or config.option.markexpr:
        return
    slow = [item for item in items if item.get_closest_marker("slow")]
    if slow:
        config.hook.pytest_deselected(items=slow)
        items[:] = [item for item in items if not item.get_closest_marker("slow")]
