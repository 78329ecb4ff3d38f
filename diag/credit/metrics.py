"""Localisation scores for one token-score vector against a known span, and bootstrap intervals over sequences."""

from __future__ import annotations

from typing import Any

import numpy as np


def top1_hit(scores: np.ndarray, target: np.ndarray) -> float:
    """1 if the highest-scoring token lies in the target span (ties split evenly among the tied tokens)."""
    best = scores == scores.max()
    return float(target[best].mean())


def auroc(scores: np.ndarray, target: np.ndarray) -> float:
    """P(score of a target token > score of another token), ties counting half (Mann-Whitney U)."""
    pos, neg = scores[target], scores[~target]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).mean()
    ties = (pos[:, None] == neg[None, :]).mean()
    return float(greater + 0.5 * ties)


def chance_top1(target: np.ndarray) -> float:
    """Expected top-1 hit of a random ranking: the span's share of the tokens."""
    return float(target.mean())


def bootstrap_mean(values: np.ndarray, seed: int = 0, n_boot: int = 1000, level: float = 0.95) -> dict[str, Any]:
    """Mean with a percentile bootstrap interval over the given per-sequence values (NaNs dropped)."""
    values = np.asarray(values, dtype=float)
    values = values[~np.isnan(values)]
    if len(values) == 0:
        return {"value": float("nan"), "low": float("nan"), "high": float("nan"), "n": 0}
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(n_boot, len(values)))].mean(axis=1)
    alpha = (1 - level) / 2
    return {"value": float(values.mean()), "low": float(np.quantile(means, alpha)),
            "high": float(np.quantile(means, 1 - alpha)), "n": len(values)}


NEAR_BOUND = 0.1  # a mean this close to 0 or 1 gets at least its Wilson interval


def hit_rate(hits: np.ndarray) -> dict[str, Any]:
    """Top-1 hit rate over sequences with a 95% Wilson interval (a proportion: the bootstrap of 20/20 is [1, 1]).

    Hits split among tied tokens are fractional; their sum counts as the successes.
    """
    from diag.stats import wilson

    hits = np.asarray(hits, dtype=float)
    if len(hits) == 0:
        return {"value": float("nan"), "low": float("nan"), "high": float("nan"), "n": 0, "interval": "wilson"}
    return {**wilson(float(hits.mean()), len(hits)), "n": len(hits), "interval": "wilson"}


def bounded_mean(values: np.ndarray, seed: int = 0, n_boot: int = 1000) -> dict[str, Any]:
    """Mean of a [0, 1] score (per-sequence AUROC) with a percentile bootstrap interval, widened to the Wilson
    interval over sequences when the mean is within NEAR_BOUND of 0 or 1, where the bootstrap collapses."""
    from diag.stats import wilson

    out = bootstrap_mean(values, seed, n_boot)
    out["interval"] = "bootstrap"
    if out["n"] and not NEAR_BOUND <= out["value"] <= 1 - NEAR_BOUND:
        bound = wilson(out["value"], out["n"])
        out.update(low=min(out["low"], bound["low"]), high=max(out["high"], bound["high"]),
                   interval="bootstrap widened to wilson")
    return out
