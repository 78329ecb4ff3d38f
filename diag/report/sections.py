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

# The budget-too-small rule, used by the report and the app alike: an interval wider than this share of the
# metric's possible range (``Metric.bounds``) says little more than "somewhere in the range", however its point
# estimate reads.
UNREADABLE_SHARE = 0.5
BUDGET_BADGE = "budget too small to read"
BUDGET_RULE = (f"{BUDGET_BADGE}: the 95% interval spans more than {UNREADABLE_SHARE:.0%} of the metric's "
               "possible range, so the number cannot be read at this budget")
UNIT = (0.0, 1.0)  # bounds of a share, probability, pass@k, AUROC, Lambda


@dataclass(frozen=True)
class Metric:
    """One headline number, with its interval when the run stored one and its possible range when it has one."""

    name: str
    value: Any
    low: float | None = None
    high: float | None = None
    bounds: tuple[float, float] | None = None  # e.g. ``UNIT``; None for an unbounded metric (never badged)

    @property
    def has_interval(self) -> bool:
        return self.low is not None and self.high is not None

    @property
    def unreadable(self) -> bool:
        """The budget-too-small rule (``BUDGET_RULE``), for a bounded metric with an interval."""
        if not self.has_interval or self.bounds is None:
            return False
        return too_small_to_read(self.low, self.high, self.bounds)  # type: ignore[arg-type]


def too_small_to_read(low: float, high: float, bounds: tuple[float, float]) -> bool:
    """Whether the interval ``[low, high]`` spans more than ``UNREADABLE_SHARE`` of the range ``bounds``."""
    return (high - low) > UNREADABLE_SHARE * (bounds[1] - bounds[0])


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

    ``captions`` maps a figure's file stem (``figures/STEM.png``) to the sentence printed under it;
    ``figure_metrics`` says which metrics (with intervals and bounds) each figure draws, so a figure whose
    intervals are too wide to read carries the same badge as its numbers.
    """

    question: str
    limitations: list[str] = field(default_factory=list)
    headline: Callable[[dict[str, Any]], list[Metric]] | None = None
    baselines: Callable[[dict[str, Any]], list[Table]] | None = None
    captions: Mapping[str, str] = field(default_factory=dict)
    figure_metrics: Callable[[dict[str, Any]], dict[str, list[Metric]]] | None = None


@dataclass(frozen=True)
class Reading:
    """What a front end shows of one stored summary, read through its guide (the report and the app use this).

    ``unread`` explains a summary the guide could not read (stored by an older version): then ``headline`` is
    every stored value and there are no baselines. ``figure_badges`` maps a figure stem to the metrics that make
    it too small to read.
    """

    headline: list[Metric]
    baselines: list[Table]
    unread: str | None
    figure_badges: dict[str, list[str]]

    @property
    def unreadable(self) -> list[Metric]:
        return [m for m in self.headline if m.unreadable]


def read_summary(guide: Guide, summary: dict[str, Any]) -> Reading:
    """The guide's headline metrics, baseline tables and figure badges for ``summary``; a summary the guide
    cannot read falls back to every stored value, and says so."""
    every = metrics_from_summary(summary)
    if not summary:
        return Reading(every, [], None, {})
    try:
        headline = guide.headline(summary) if guide.headline else every
        baselines = guide.baselines(summary) if guide.baselines else []
        drawn = guide.figure_metrics(summary) if guide.figure_metrics else {}
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        note = (f"The analysis's reading guide could not read this run's summary ({type(exc).__name__}: {exc}); "
                "every stored value is listed instead and no baseline table is shown.")
        return Reading(every, [], note, {})
    badges = {stem: [m.name for m in metrics if m.unreadable] for stem, metrics in drawn.items()}
    return Reading(headline, baselines, None, {stem: names for stem, names in badges.items() if names})


_ACRONYMS = {"iia": "IIA", "cdas": "CDAS", "das": "DAS", "dii": "DII", "jsd": "JSD", "kl": "KL", "ci": "CI",
             "auroc": "AUROC", "rmse": "RMSE", "tf32": "TF32", "dpo": "DPO", "diffmean": "DiffMean",
             "lm": "LM", "mlp": "MLP", "l2": "L2", "ig": "IG"}


def readable(name: str) -> str:
    """A stored key as a label (``control_iia_random_basis`` -> ``control IIA random basis``, ``a.b`` -> ``a ·
    b``); a name that is already prose (it has a space) is returned unchanged. Front ends label with this; the
    raw keys stay where a reader looks them up (the report's list of every stored value, ``--json``)."""
    if " " in name or not re.fullmatch(r"[\w.@/-]+", name):
        return name
    parts = [" ".join(_ACRONYMS.get(w.lower(), w) for w in part.split("_") if w) for part in name.split(".")]
    return " · ".join(parts)


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
            out.extend([metric] if metric else metrics_from_summary(_with_intervals(summary, key), prefix=f"{name}."))
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


def _with_intervals(summary: dict[str, Any], key: str) -> dict[str, Any]:
    """``summary[key]`` with each entry that a sibling ``KEY_ci``/``KEY_interval`` dict bounds as
    ``{value, low, high}`` (e.g. ``lambda: {blur: 0.3}`` beside ``lambda_interval: {blur: [0.2, 0.4]}``)."""
    bounds = next((summary[key + s] for s in _CI_SUFFIXES if isinstance(summary.get(key + s), dict)), {})
    return {sub: {"value": v, "low": pair[0], "high": pair[1]}
            if _is_number(v) and (pair := _pair(bounds.get(sub))) else v for sub, v in summary[key].items()}


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
