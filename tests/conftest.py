from __future__ import annotations

import os

from hypothesis import settings

# Short locally, longer in CI (CI=true): property tests find more with more examples.
settings.register_profile("dev", max_examples=40, deadline=None)
settings.register_profile("ci", max_examples=200, deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")
