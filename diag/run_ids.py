"""The one definition of a run id: ANALYSIS-<16 hex digits of the config hash>, with ANALYSIS lower-case.

A run is a pure function of (analysis, config), so its id is content-addressed: asking for the same config again
names the same run. Ids are names, never paths: every id a user gives is checked against ``RUN_ID``.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from diag.errors import DiagError

ANALYSIS_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*")
RUN_ID = re.compile(r"[a-z0-9][a-z0-9_-]*-[0-9a-f]{16}")


def config_hash(analysis: str, config: dict[str, Any]) -> str:
    """Stable hash of a config (sorted keys) so equal configs map to the same run."""
    canonical = json.dumps({"analysis": analysis, "config": config}, sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def run_id_for(analysis: str, config: dict[str, Any]) -> str:
    """The id the store gives the run of ``config``: every place that names a run before it exists uses this."""
    if not ANALYSIS_NAME.fullmatch(analysis):
        raise DiagError(f"analysis name {analysis!r} must be lower-case letters, digits, '-' or '_'")
    return f"{analysis}-{config_hash(analysis, config)}"


def is_run_id(text: Any) -> bool:
    return isinstance(text, str) and RUN_ID.fullmatch(text) is not None
