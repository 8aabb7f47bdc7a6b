"""How commands speak: it lives in mover.console (the commands other packages add to `mover`
use it too), offered by mover.api; re-exported here for the verbs."""

from __future__ import annotations

from mover.api import emit_json, emit_table, error_line, human_rate, status

__all__ = ["emit_json", "emit_table", "error_line", "human_rate", "status"]
