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
