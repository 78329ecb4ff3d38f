"""The registered analyses: one declared ``Analysis`` value each (``diag.contract``), listed by name.

Declarations live in torch-free modules (their heavy parts are references imported on first use), so listing
them costs no torch. Analyses outside this package register through ``register`` (in-process) or an entry point
in the ``diag.analyses`` group (``name = "package.module:ANALYSIS"``), which the CLI, the app, the report, the
audit and sweeps all read.
"""

from __future__ import annotations

import logging
from importlib.metadata import entry_points

from diag.boundary.config import BOUNDARY, EPISODES
from diag.capture import ANALYSIS as CAPTURE
from diag.cdas.config import BY_LAYER, PLANTED_CHECK, STEER, TOY, TRAIN
from diag.contract import Analysis
from diag.credit.config import SCORE, TABULAR
from diag.credit.config import TRAIN as CREDIT_TRAIN
from diag.errors import DiagError
from diag.tir.config import TIR

ENTRY_POINTS = "diag.analyses"
log = logging.getLogger("diag.registry")
# Names of runs stored before every name was spelled with "-": such runs are read as the renamed analysis.
RENAMED = {"boundary_episodes": "boundary-episodes", "credit_tabular": "credit-tabular", "credit_train": "credit-train"}

ANALYSES: dict[str, Analysis] = {}


def register(analysis: Analysis) -> Analysis:
    """Make an analysis known to every front end; its name and CLI command must be new. Returns it."""
    if not isinstance(analysis, Analysis):
        raise DiagError(f"register expects an Analysis, got {type(analysis).__name__}")
    taken = {a.command: a.name for a in ANALYSES.values()}
    if analysis.name in ANALYSES or analysis.name in RENAMED:
        raise DiagError(f"analysis {analysis.name!r} is already registered")
    if analysis.command in taken:
        raise DiagError(f"command 'diag {' '.join(analysis.command)}' already runs {taken[analysis.command]}")
    ANALYSES[analysis.name] = analysis
    return analysis


def find(name: str) -> Analysis | None:
    """The analysis of this name (or of the name its runs were once stored under), None if there is none."""
    return ANALYSES.get(RENAMED.get(name, name))


def get(name: str) -> Analysis:
    """``find``, or one line naming the choices."""
    analysis = find(name)
    if analysis is None:
        raise DiagError(f"unknown analysis {name!r}: choose one of {', '.join(sorted(ANALYSES))}")
    return analysis


def _load_entry_points() -> None:
    """Register the installed plugins' analyses; a broken one is named in one warning line and left out."""
    for point in entry_points(group=ENTRY_POINTS):
        try:
            analysis = point.load()
            if getattr(analysis, "name", None) != point.name:
                raise DiagError(f"it declares {getattr(analysis, 'name', analysis)!r}, not {point.name!r}")
            register(analysis)
        except Exception as exc:  # noqa: BLE001 -- one broken plugin must not take every diag command down
            log.warning("analysis plugin %s (%s) left out: %s", point.name, point.value, exc)


for _analysis in (CAPTURE, TOY, PLANTED_CHECK, TRAIN, STEER, BY_LAYER, BOUNDARY, EPISODES, SCORE, CREDIT_TRAIN, TABULAR, TIR):
    register(_analysis)
_load_entry_points()
