"""pass@k against exact enumeration of k-subsets, HumanEval's estimator, and the k > n error."""

from __future__ import annotations

import itertools
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from diag.errors import DiagError
from diag.tir.metrics import bootstrap_mean_ci, four_way_split, pass_at_k, pass_at_k_curve


def humaneval_pass_at_k(n: int, c: int, k: int) -> float:
    """Verbatim from openai/human-eval (human_eval/evaluation.py, estimate_pass_at_k.estimator)."""
    if n - c < k:
        return 1.0
    return 1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1))


def enumerated_pass_at_k(outcomes: list[bool], k: int) -> Fraction:
    """Fraction of all k-subsets of the n samples that contain at least one correct sample."""
    subsets = list(itertools.combinations(outcomes, k))
    return Fraction(sum(any(s) for s in subsets), len(subsets))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.booleans(), min_size=1, max_size=12), st.data())
def test_matches_exact_enumeration_of_subsets(outcomes, data):
    n, c = len(outcomes), sum(outcomes)
    curve = pass_at_k_curve(np.array([n]), np.array([c]), n)[0]
    for k in range(1, n + 1):
        assert curve[k - 1] == pytest.approx(float(enumerated_pass_at_k(outcomes, k)), abs=1e-12)
    k = data.draw(st.integers(1, n))
    assert pass_at_k(n, c, k) == pytest.approx(float(enumerated_pass_at_k(outcomes, k)), abs=1e-12)


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 2000).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n), st.integers(1, n))))
def test_matches_humaneval_estimator(nck):
    n, c, k = nck
    assert pass_at_k(n, c, k) == pytest.approx(humaneval_pass_at_k(n, c, k), rel=1e-9, abs=1e-12)


def test_k_greater_than_n_is_an_error_not_one():
    assert humaneval_pass_at_k(5, 0, 6) == 1.0  # HumanEval's helper claims certain success with no correct sample
    with pytest.raises(DiagError, match="pass@6 needs at least 6 samples"):
        pass_at_k(5, 0, 6)
    with pytest.raises(DiagError, match="only 3"):
        pass_at_k_curve(np.array([10, 3]), np.array([1, 1]), 4)


def test_large_n_is_stable_and_monotone():
    n = np.array([10_000, 10_000, 10_000])
    c = np.array([0, 1, 9_999])
    curve = pass_at_k_curve(n, c, 10_000)
    assert np.all(np.isfinite(curve)) and np.all(np.diff(curve, axis=1) >= -1e-15)
    assert curve[0, -1] == 0.0 and curve[1, -1] == 1.0 and curve[1, 0] == pytest.approx(1e-4)
    assert curve[2, 1] == 1.0  # any 2 samples contain a correct one when only one is wrong


def test_bootstrap_interval_covers_mean_and_shrinks_with_more_problems():
    rng = np.random.default_rng(0)
    small = rng.random(20)
    mean, low, high = bootstrap_mean_ci(small, n_boot=2000, seed=1)
    assert low[0] < mean[0] < high[0]
    big = rng.random(2000)
    _, low_b, high_b = bootstrap_mean_ci(big, n_boot=2000, seed=1)
    # Interval width ~ 2 * 1.96 * sd / sqrt(P): sd of U(0,1) is 0.289 -> width ~0.025 at P = 2000.
    assert high_b[0] - low_b[0] == pytest.approx(2 * 1.96 * 0.2887 / np.sqrt(2000), rel=0.2)


def test_four_way_split_sums_to_one_and_is_exact_at_indicators():
    tool = np.array([[1.0], [0.0], [1.0], [0.0]])
    text = np.array([[0.0], [1.0], [1.0], [0.0]])
    split = four_way_split(tool, text)
    assert {k: float(v[0]) for k, v in split.items()} == {
        "expansion": 0.25, "shrinkage": 0.25, "preserved": 0.25, "jointly_unsolved": 0.25}
    rng = np.random.default_rng(0)
    split = four_way_split(rng.random((50, 8)), rng.random((50, 8)))
    assert np.allclose(sum(split.values()), 1.0)


def test_unequal_n_split_at_n_equals_the_support_sets_and_n_is_reported_per_mode():
    """Tool n = 6, text n = 3: k = n is each mode at its own n, so the split and the support sets agree."""
    from diag.tir.analysis import Result
    from diag.tir.rollouts import Rollout

    correct = {("p0", "tool"): {5}, ("p0", "text"): set(), ("p1", "tool"): set(), ("p1", "text"): {0},
               ("p2", "tool"): {0, 1}, ("p2", "text"): {2}, ("p3", "tool"): set(), ("p3", "text"): set()}
    rollouts = [Rollout(pid, mode, s, "", s in hits) for (pid, mode), hits in correct.items()
                for s in range(6 if mode == "tool" else 3)]
    result = Result([{"problem_id": p, "family": "f", "level": 1} for p in ("p0", "p1", "p2", "p3")], rollouts,
                    {"n_bootstrap": 50})
    summary = result.summary()
    assert summary["n_per_mode"] == {"tool": {"min": 6, "max": 6}, "text": {"min": 3, "max": 3}}
    assert summary["k_max"] == 3 and "pass@6" not in summary
    sets = result.support_sets()
    assert sets == {"expansion": ["p0"], "shrinkage": ["p1"], "preserved": ["p2"], "jointly_unsolved": ["p3"]}
    assert summary["split_at_n"] == {name: len(ids) / 4 for name, ids in sets.items()}
    # At the common k = 3 the tool-only problem p0 (1 correct of 6) is solved with probability 1 - C(5,3)/C(6,3)
    # = 0.5: the split by k is an expectation there, which is why k = n is defined per mode.
    assert result.pass_curves()["tool"][0, 2] == pytest.approx(0.5)
    assert four_way_split(*result.pass_curves().values())["expansion"][2] == pytest.approx(0.5 / 4)
