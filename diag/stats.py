"""Small statistics shared by the analyses."""

from __future__ import annotations

import math


def wilson(p: float, n: int, z: float = 1.96) -> dict[str, float]:
    """95% Wilson score interval for a proportion ``p`` over ``n`` independent trials.

    Unlike a percentile bootstrap it stays informative at 0 and 1 (20/20 gives [0.84, 1.00], not [1.00, 1.00]).
    """
    if n < 1:
        raise ValueError(f"a proportion needs at least one trial, got n={n}")
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(max(p * (1 - p), 0.0) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return {"value": p, "low": max(0.0, centre - half), "high": min(1.0, centre + half)}
