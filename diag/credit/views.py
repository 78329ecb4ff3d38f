"""Views of per-token rewards: an HTML heatmap, per-position and per-token-type aggregates, cumulative curves.

They read stored items only (front ends never recompute). The heatmap colours each token by r_t on a
diverging scale centred at zero (red = negative, blue = positive); hovering shows the value and log-probs.
"""

from __future__ import annotations

import html
import re
from collections import defaultdict
from typing import Any

import numpy as np


def _colour(value: float, scale: float) -> str:
    strength = min(abs(value) / scale, 1.0) if scale > 0 else 0.0
    fade = round(255 * (1 - strength))
    return f"rgb(255,{fade},{fade})" if value < 0 else f"rgb({fade},{fade},255)"


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


def heatmap_html(items: list[Any], beta: float) -> str:
    """Self-contained HTML: one line per response, tokens coloured by r_t, hover for values."""
    rewards = np.concatenate([np.asarray(i.reward) for i in items]) if items else np.zeros(1)
    scale = float(np.quantile(np.abs(rewards), 0.99)) or 1.0
    rows = []
    for item in items:
        spans = []
        for t, token in enumerate(item.tokens):
            r = item.reward[t]
            title = (f"r_t = {r:+.4f} | log pi = {item.policy_logp[t]:.3f} | log pi_ref = "
                     f"{item.reference_logp[t]:.3f}" + (" | in known span" if item.span and item.span[t] else ""))
            border = "border-bottom:2px solid #000;" if item.span and item.span[t] else ""
            spans.append(f'<span class="tok" style="background:{_colour(r, scale)};{border}" '
                         f'title="{html.escape(title)}">{html.escape(token)}</span>')
        total = float(np.sum(item.reward))
        rows.append(f'<div class="row"><div class="meta">pair {item.pair} · {item.side} · {html.escape(item.kind)} · '
                    f'sum r = {total:+.3f}</div><div class="prompt">{html.escape(item.prompt)}</div>'
                    f'<div class="resp">{"".join(spans)}</div></div>')
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>per-token implicit reward</title><style>
body{{font-family:sans-serif;margin:1em}} .row{{margin:0.8em 0;padding:0.4em;border-bottom:1px solid #ddd}}
.meta{{color:#555;font-size:0.85em}} .prompt{{color:#777;font-size:0.85em;white-space:pre-wrap}}
.tok{{font-family:monospace;white-space:pre;padding:1px 0}}</style></head><body>
<h2>Per-token implicit reward r_t = beta * (log pi - log pi_ref), beta = {beta}</h2>
<p>Red: r_t &lt; 0, blue: r_t &gt; 0; full colour at |r_t| = {scale:.4f} (99th percentile). Underlined: the known
differing span. Hover a token for its values.</p>
{"".join(rows)}</body></html>"""


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
    ax.set_ylabel("cumulative r_t")
    ax.legend()
    out["cumulative_reward"] = fig

    summary = aggregates(items)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.4))
    for side, rows in summary["by_position"].items():
        left.plot([r["position"] for r in rows], [r["mean"] for r in rows], color=colours[side], label=side)
    left.axhline(0, color="k", lw=0.6)
    left.set_xlabel("response token position")
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
