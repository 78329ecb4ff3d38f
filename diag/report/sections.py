"""The pieces a report section is made of, and how an analysis says how its results should be read.

Each analysis declares its reading guide (``Analysis.guide``, a ``Guide``): the question it answers, its
limitations stated plainly, and optional callables that pick headline metrics and baseline tables out of its
stored summary. A run of an analysis without a guide still gets a full section built from its stored summary
(``diag.report.render.guide_for``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Metric:
    """One headline number, with its interval when the run stored one."""

    name: str
    value: Any
    low: float | None = None
    high: float | None = None

    @property
    def has_interval(self) -> bool:
        return self.low is not None and self.high is not None


@dataclass(frozen=True)
class Table:
    """A small table (e.g. the method next to its baselines) rendered as HTML."""

    title: str
    columns: list[str]
    rows: list[list[Any]]


@dataclass(frozen=True)
class Interval:
    """A table cell holding an estimate and its interval as numbers; ``format_value`` writes it where it is shown,
    as ``value [low, high]`` (and ``(n=N)`` when ``n`` is given) with ``digits`` decimals."""

    value: float
    low: float
    high: float
    n: int | None = None
    digits: int = 3


@dataclass(frozen=True)
class Guide:
    """How to read one analysis: the question asked, its limitations, and which stored numbers matter most.

    ``captions`` maps a figure's file stem (``figures/STEM.png``) to the sentence printed under it.
    """

    question: str
    limitations: list[str] = field(default_factory=list)
    headline: Callable[[dict[str, Any]], list[Metric]] | None = None
    baselines: Callable[[dict[str, Any]], list[Table]] | None = None
    captions: Mapping[str, str] = field(default_factory=dict)


_INTERVAL_KEYS = (("low", "high"), ("lo", "hi"), ("ci_low", "ci_high"), ("lower", "upper"))
_VALUE_KEYS = ("value", "mean", "estimate", "point")
_CI_SUFFIXES = ("_ci", "_interval", "_ci95")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _pair(obj: Any) -> tuple[float, float] | None:
    if isinstance(obj, list | tuple) and len(obj) == 2 and all(_is_number(v) for v in obj):
        return float(obj[0]), float(obj[1])
    return None


def interval_metric(name: str, value: Any) -> Metric | None:
    """``{"value": v, "low": l, "high": h}`` (or ``mean``/``ci`` spellings) as a Metric; None if not one."""
    if not isinstance(value, dict):
        return None
    point = next((value[k] for k in _VALUE_KEYS if _is_number(value.get(k))), None)
    bounds = next(((value[lo], value[hi]) for lo, hi in _INTERVAL_KEYS
                   if _is_number(value.get(lo)) and _is_number(value.get(hi))), None)
    bounds = bounds or _pair(value.get("ci"))
    if point is None or bounds is None:
        return None
    return Metric(name, point, float(bounds[0]), float(bounds[1]))


def metrics_from_summary(summary: dict[str, Any], prefix: str = "") -> list[Metric]:
    """Flatten a summary into metrics, pairing ``x`` with ``x_ci`` or reading ``{value, low, high}``."""
    out: list[Metric] = []
    for key, value in summary.items():
        name = f"{prefix}{key}"
        base = re.sub(r"(_ci|_interval|_ci95)$", "", key)
        if base != key and base in summary:
            continue  # folded into its point estimate
        if isinstance(value, dict):
            metric = interval_metric(name, value)
            out.extend([metric] if metric else metrics_from_summary(value, prefix=f"{name}."))
            continue
        ci = next((_pair(summary[key + s]) for s in _CI_SUFFIXES if key + s in summary), None)
        if ci is not None and _is_number(value):
            out.append(Metric(name, value, *ci))
        elif _is_number(value) or isinstance(value, str | bool) or value is None:
            out.append(Metric(name, value))
        elif isinstance(value, list) and len(value) <= 8 and all(not isinstance(v, dict | list) for v in value):
            out.append(Metric(name, ", ".join(format_value(v) for v in value)))
        elif isinstance(value, list):
            out.append(Metric(name, f"list of {len(value)} (see the run's files)"))
    return out


def format_value(value: Any) -> str:
    """How a number appears in reports and the app: 4 significant digits for floats, a dash for missing."""
    if value is None:
        return "—"
    if isinstance(value, Interval):
        d = value.digits
        count = "" if value.n is None else f" (n={value.n})"
        return f"{value.value:.{d}f} [{value.low:.{d}f}, {value.high:.{d}f}]{count}"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    return str(value)
