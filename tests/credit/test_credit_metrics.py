"""Localisation scores on hand-checkable cases."""

from __future__ import annotations

import numpy as np

from diag.credit.metrics import auroc, bootstrap_mean, chance_top1, top1_hit


def test_top1_and_auroc_on_known_rankings() -> None:
    target = np.array([False, True, True, False, False])
    assert top1_hit(np.array([0.1, 0.9, 0.2, 0.0, 0.3]), target) == 1.0
    assert top1_hit(np.array([0.1, 0.2, 0.2, 0.0, 0.9]), target) == 0.0
    assert top1_hit(np.array([1.0, 1.0, 0.0, 0.0, 0.0]), target) == 0.5  # a tie splits the hit
    assert auroc(np.array([0.0, 3.0, 2.0, 1.0, 0.5]), target) == 1.0
    assert auroc(np.array([5.0, 1.0, 2.0, 3.0, 4.0]), target) == 0.0
    assert auroc(np.zeros(5), target) == 0.5
    assert chance_top1(target) == 0.4


def test_bootstrap_interval_brackets_the_mean_and_shrinks_with_n() -> None:
    rng = np.random.default_rng(0)
    small = bootstrap_mean(rng.random(20) < 0.7, seed=0)
    large = bootstrap_mean(rng.random(2000) < 0.7, seed=0)
    assert small["low"] <= small["value"] <= small["high"]
    assert large["high"] - large["low"] < (small["high"] - small["low"]) / 4
    assert abs(large["value"] - 0.7) < 0.03
