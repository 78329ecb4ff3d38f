"""Per-token rewards of a scored run summed up: mean r_t by response position and by token type, per side, and
the figures a run stores (cumulative r_t along the response aligned at the first differing token, and the means).
"""

from __future__ import annotations

import re
from collections import defaultdict
from typing import Any

import numpy as np

from diag.report.figures import integer_ticks


def token_type(token: str, in_span: bool) -> str:
    """Coarse type for aggregates: the known span first, then digits, words, punctuation, special tokens."""
    if in_span:
        return "span"
    text = token.strip()
    if text.startswith("<|") or not text:
        return "special/space"
    if re.fullmatch(r"\d+", text):
        return "digit"
    if re.fullmatch(r"\w+", text):
        return "word"
    return "punctuation"


def aggregates(items: list[Any]) -> dict[str, Any]:
    """Mean r_t by token position (per side) and by token type (per side), with counts."""
    by_position: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    by_type: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for item in items:
        for t, r in enumerate(item.reward):
            by_position[item.side][t].append(r)
            by_type[item.side][token_type(item.tokens[t], bool(item.span and item.span[t]))].append(r)
    return {
        "by_position": {side: [{"position": t, "mean": float(np.mean(v)), "n": len(v)} for t, v in sorted(d.items())]
                        for side, d in by_position.items()},
        "by_type": {side: {k: {"mean": float(np.mean(v)), "n": len(v)} for k, v in sorted(d.items())}
                    for side, d in by_type.items()},
    }


def figures(items: list[Any]) -> dict[str, Any]:
    """Matplotlib figures: cumulative reward along the response, per-position and per-type means."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = {}
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    colours = {"chosen": "tab:blue", "rejected": "tab:red", "response": "tab:gray"}
    curves: dict[str, list[np.ndarray]] = defaultdict(list)
    for item in items:
        offset = np.arange(len(item.reward)) - item.first_diff  # align pairs at their first differing token
        cumulative = np.cumsum(item.reward)
        ax.plot(offset, cumulative, color=colours[item.side], alpha=0.15, lw=0.8)
        curves[item.side].append(np.interp(np.arange(-15, 16), offset, cumulative))
    for side, rows in curves.items():
        ax.plot(np.arange(-15, 16), np.mean(rows, axis=0), color=colours[side], lw=2.5, label=f"{side} (mean)")
    ax.axvline(0, color="k", lw=0.8, ls=":")
    ax.set_xlabel("token index relative to the first differing token")
    integer_ticks(ax.xaxis)
    ax.set_ylabel("cumulative r_t")
    ax.legend()
    out["cumulative_reward"] = fig

    summary = aggregates(items)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.4))
    for side, rows in summary["by_position"].items():
        left.plot([r["position"] for r in rows], [r["mean"] for r in rows], color=colours[side], label=side)
    left.axhline(0, color="k", lw=0.6)
    left.set_xlabel("response token position")
    integer_ticks(left.xaxis)
    left.set_ylabel("mean r_t")
    left.legend()
    types = sorted({k for d in summary["by_type"].values() for k in d})
    width = 0.8 / max(1, len(summary["by_type"]))
    for j, (side, d) in enumerate(summary["by_type"].items()):
        right.bar(np.arange(len(types)) + j * width, [d.get(k, {"mean": 0.0})["mean"] for k in types], width,
                  color=colours[side], label=side)
    right.set_xticks(np.arange(len(types)) + 0.4 - width / 2, types, rotation=20)
    right.axhline(0, color="k", lw=0.6)
    right.set_ylabel("mean r_t")
    right.legend()
    out["reward_by_position_and_type"] = fig
    return out
