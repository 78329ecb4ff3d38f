"""From measured jobs to curves, the fluency frontier and the verdict, with bootstrap intervals over prompts.

Curves: per concept, method, direction and alpha, the mean over held-out prompts of each measure (gain, fluency
cost, relevance, judge scores), with a 95% percentile bootstrap interval; resamples draw prompts, the same draw
for every method and alpha of a concept and direction (paired).

Frontier at a fluency budget tau: the best mean gain among a method's alphas whose mean fluency cost is <= tau,
the unsteered model (gain 0, cost 0) included, so a method that breaks fluency at every alpha scores 0, not
its broken gain. The statistic is recomputed inside every resample, so its interval includes the choice of
alpha. Comparing methods at one tau (matched fluency cost) instead of at one alpha is the point: the same alpha
is a different edit for different directions.

Verdict per concept and direction: CDAS *wins* over DiffMean when its frontier interval lies entirely above
DiffMean's, *loses* when entirely below, else *ties*; a tie whose intervals are wider than ``resolution`` is
flagged "budget too small" (the study could not have told a difference of that size), and a verdict where CDAS's
or DiffMean's largest alpha is still within the fluency budget is flagged "grid-limited" (its frontier may lie
beyond the alphas tried). A representation method *elicits* a concept when the lower end of its elicit frontier
interval is > 0.
"""

from __future__ import annotations

from typing import Any

import numpy as np

MEASURES = ("gain", "cost", "relevance_sim", "score", "concept_score")
CONFIDENCE = 0.95


def interval(samples: np.ndarray, point: float) -> dict[str, float]:
    """{value, low, high}: the point estimate and the percentile bootstrap interval of its resamples."""
    tail = (1 - CONFIDENCE) / 2 * 100
    low, high = np.percentile(samples, [tail, 100 - tail])
    return {"value": float(point), "low": float(low), "high": float(high)}


def _grid(jobs: list[dict[str, Any]], concept: str, direction: str) -> dict[tuple[str, float], dict[str, np.ndarray]]:
    """(method, alpha) -> measure -> values ordered by prompt index."""
    out: dict[tuple[str, float], dict[str, np.ndarray]] = {}
    cells: dict[tuple[str, float], list[dict[str, Any]]] = {}
    for j in jobs:
        if j["concept"] == concept and j["direction"] == direction:
            cells.setdefault((j["method"], j["alpha"]), []).append(j)
    for key, rows in cells.items():
        rows.sort(key=lambda r: r["index"])
        out[key] = {m: np.array([r[m] for r in rows], dtype=float) for m in MEASURES}
    return out


def frontier_value(costs: np.ndarray, gains: np.ndarray, budget: float) -> np.ndarray:
    """Best gain among alphas with cost <= budget, 0 (the unsteered model) included; [alphas, ...] -> [...]."""
    feasible = np.where(costs <= budget, gains, -np.inf)
    return np.maximum(feasible.max(axis=0), 0.0)


def summarise(jobs: list[dict[str, Any]], concepts: tuple[str, ...], methods: tuple[str, ...], budget: float,
              boot: int, seed: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(curve points, frontier rows) for every concept, direction and method."""
    points, frontier = [], []
    rng = np.random.default_rng(seed)
    for concept in concepts:
        for direction in ("elicit", "suppress"):
            grid = _grid(jobs, concept, direction)
            n = len(next(iter(grid.values()))["gain"])
            draws = rng.integers(0, n, size=(boot, n))
            for (method, alpha), values in grid.items():
                points.append({"concept": concept, "method": method, "direction": direction, "alpha": alpha, "n": n,
                               **{m: interval(v[draws].mean(1), v.mean()) for m, v in values.items()}})
            for method in methods:
                keys = sorted(k for k in grid if k[0] == method)
                costs = np.stack([grid[k]["cost"] for k in keys])  # [alphas, prompts]
                gains = np.stack([grid[k]["gain"] for k in keys])
                point = frontier_value(costs.mean(1), gains.mean(1), budget)
                samples = frontier_value(costs[:, draws].mean(2), gains[:, draws].mean(2), budget)
                within = [k[1] for k, c in zip(keys, costs.mean(1), strict=True) if c <= budget]
                frontier.append({"concept": concept, "method": method, "direction": direction, "budget": budget,
                                 "gain": interval(samples, float(point)), "alphas_within_budget": within,
                                 "grid_limited": len(keys) > 1 and within[-1:] == [keys[-1][1]]})
    return points, frontier


def verdict(cdas: dict[str, float], diffmean: dict[str, float], resolution: float) -> dict[str, Any]:
    """CDAS against DiffMean from their frontier intervals (see the module docstring)."""
    if cdas["low"] > diffmean["high"]:
        outcome = "wins"
    elif cdas["high"] < diffmean["low"]:
        outcome = "loses"
    else:
        outcome = "ties"
    widest = max(cdas["high"] - cdas["low"], diffmean["high"] - diffmean["low"])
    return {"outcome": outcome, "budget_too_small": outcome == "ties" and widest > resolution,
            "cdas": cdas, "diffmean": diffmean}


def verdicts(frontier: list[dict[str, Any]], resolution: float) -> list[dict[str, Any]]:
    """Per concept and direction: CDAS vs DiffMean, and whether any representation method elicits/suppresses."""
    by_key = {(f["concept"], f["method"], f["direction"]): f for f in frontier}
    out = []
    for concept, direction in dict.fromkeys((f["concept"], f["direction"]) for f in frontier):
        methods = [m for m in ("diffmean", "das", "cdas") if (concept, m, direction) in by_key]
        moved = [m for m in methods if by_key[(concept, m, direction)]["gain"]["low"] > 0]
        row: dict[str, Any] = {"concept": concept, "direction": direction, "methods_that_move": moved}
        if {"cdas", "diffmean"} <= set(methods):
            row |= verdict(by_key[(concept, "cdas", direction)]["gain"], by_key[(concept, "diffmean", direction)]["gain"],
                           resolution)
            pair = [by_key[(concept, m, direction)] for m in ("cdas", "diffmean")]
            row["none_within_budget"] = not any(f["alphas_within_budget"] for f in pair)
            row["grid_limited"] = any(f.get("grid_limited", False) for f in pair)
        out.append(row)
    return out
