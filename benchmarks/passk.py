"""Unbiased pass@k for every k = 1..256 of 10,000 problems with n = 256 samples, vectorised.

Baseline: HumanEval's estimator (one ``np.prod`` per problem and k), timed on a slice of the problems in the
same run and scaled linearly to the full grid (it is a plain loop, so its cost is linear). Acceptance: the
vectorised version finishes the whole grid in under 1 s.

Usage: python benchmarks/passk.py [--problems 10000] [--n 256] [--baseline-problems 200]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from diag.tir.metrics import pass_at_k_curve


def humaneval(n: int, c: int, k: int) -> float:
    if n - c < k:
        return 1.0
    return 1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--problems", type=int, default=10_000)
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--baseline-problems", type=int, default=200)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    n = np.full(args.problems, args.n)
    c = rng.binomial(args.n, rng.beta(0.3, 1.0, args.problems))
    pass_at_k_curve(n[:10], c[:10], args.n)  # warm-up
    times = []
    for _ in range(5):
        start = time.perf_counter()
        curve = pass_at_k_curve(n, c, args.n)
        times.append(time.perf_counter() - start)
    fast = min(times)
    m = args.baseline_problems
    start = time.perf_counter()
    reference = np.array([[humaneval(args.n, int(c[i]), k) for k in range(1, args.n + 1)] for i in range(m)])
    slow = (time.perf_counter() - start) * args.problems / m
    err = float(np.abs(reference - curve[:m]).max())
    print(f"vectorised pass@k, {args.problems} x n={args.n}, all k: {fast * 1000:.1f} ms (best of 5; target < 1 s)")
    print(f"HumanEval estimator loop: {slow:.1f} s (extrapolated from {m} problems)")
    print(f"ratio HumanEval/vectorised: {slow / fast:.0f}x; max abs difference on the slice: {err:.2e}")


if __name__ == "__main__":
    main()
