"""Unbiased pass@k, bootstrap intervals over problems, empirical support sets and the four-way split.

pass@k from n samples with c correct is 1 - C(n-c, k) / C(n, k) (Chen et al. 2021). We compute the ratio as
prod_{j<k} (n-c-j)/(n-j): every factor lies in [0, 1], so the running product never overflows, reaches exactly
0 once k > n-c, and one cumulative product gives every k at once (HumanEval's own helper computes the same
product as prod_{i=n-c+1..n} (1 - k/i) one k at a time). Asking for k > n is an error: HumanEval's helper
returns 1.0 there, which silently reports success nobody measured.
"""

from __future__ import annotations

import numpy as np

from diag.errors import DiagError


def pass_at_k_curve(n: np.ndarray, c: np.ndarray, k_max: int) -> np.ndarray:
    """pass@k for k = 1..k_max of every problem: shape [problems, k_max]; k_max may not exceed any n."""
    n, c = np.asarray(n, dtype=np.int64), np.asarray(c, dtype=np.int64)
    if n.shape != c.shape or n.ndim != 1:
        raise DiagError(f"n and c must be 1-D arrays of equal length, got shapes {n.shape} and {c.shape}")
    if k_max < 1:
        raise DiagError(f"k must be >= 1, got {k_max}")
    if len(n) and (np.any(c < 0) or np.any(c > n)):
        raise DiagError("every problem needs 0 <= c <= n")
    if len(n) and k_max > int(n.min()):
        raise DiagError(f"pass@{k_max} needs at least {k_max} samples per problem, but a problem has only "
                        f"{int(n.min())}")
    j = np.arange(k_max)
    ratio = np.clip((n[:, None] - c[:, None] - j) / (n[:, None] - j), 0.0, 1.0)
    return 1.0 - np.cumprod(ratio, axis=1)


def pass_at_k(n: int, c: int, k: int) -> float:
    """pass@k of one problem."""
    return float(pass_at_k_curve(np.array([n]), np.array([c]), k)[0, k - 1])


def bootstrap_mean_ci(per_problem: np.ndarray, n_boot: int = 1000, seed: int = 0, level: float = 0.95,
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean over problems of each column, with a percentile bootstrap interval resampling problems."""
    values = np.asarray(per_problem, dtype=np.float64)
    if values.ndim == 1:
        values = values[:, None]
    n_problems = values.shape[0]
    if n_problems == 0:
        raise DiagError("no problems to average")
    rng = np.random.default_rng(seed)
    # Resampling with replacement = multinomial counts per problem; one matrix product gives every replicate.
    weights = rng.multinomial(n_problems, np.full(n_problems, 1.0 / n_problems), size=n_boot) / n_problems
    replicates = weights @ values
    alpha = (1.0 - level) / 2
    low, high = np.quantile(replicates, [alpha, 1.0 - alpha], axis=0)
    return values.mean(axis=0), low, high


def four_way_split(tool: np.ndarray, text: np.ndarray) -> dict[str, np.ndarray]:
    """Expected fraction of problems in each cell at every k, from per-problem pass@k of both modes.

    With independent draws of k samples per mode a problem is solved by tool only with probability
    p_tool (1 - p_text). Evaluated at each mode's own n (pass@n is 1 exactly when one of the n samples is
    correct) the probabilities are 0/1 and the split equals the empirical support sets; at a common k below
    some problem's n it is an expectation, not those sets.
    """
    return {
        "expansion": (tool * (1 - text)).mean(axis=0),
        "shrinkage": (text * (1 - tool)).mean(axis=0),
        "preserved": (tool * text).mean(axis=0),
        "jointly_unsolved": ((1 - tool) * (1 - text)).mean(axis=0),
    }
