"""Analysis names -> modules exposing ``Config``, ``run`` and ``Result`` (imported lazily: torch is slow)."""

from __future__ import annotations

import importlib
from types import ModuleType

from diag.errors import DiagError

ANALYSES: dict[str, str] = {
    "capture": "diag.capture",
    "cdas-toy": "diag.cdas.toy", "cdas-train": "diag.cdas.train", "cdas-steer": "diag.cdas.steer",
    "cdas-steer-sweep": "diag.cdas.sweep",
    "cdas-planted": "diag.cdas.planted_check",
    "boundary": "diag.boundary.analysis",
    "boundary_episodes": "diag.boundary.episodes",
    "credit": "diag.credit.analysis", "credit_tabular": "diag.credit.tabular",
    "tir": "diag.tir.analysis",
}


def analysis_module(name: str) -> ModuleType:
    if name not in ANALYSES:
        raise DiagError(f"unknown analysis {name!r}: choose one of {', '.join(sorted(ANALYSES))}")
    return importlib.import_module(ANALYSES[name])
