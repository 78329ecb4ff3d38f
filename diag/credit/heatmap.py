"""Token heatmaps of stored per-token signals: the diverging colour scale (one definition for the report's
heatmap.html and the app's credit page) and the self-contained HTML heatmap a scored run writes.

Each token is coloured by its value on a scale centred at zero (red = negative, blue = positive), full colour at
the 99th percentile of |value|; hovering shows the value and log-probs.
"""

from __future__ import annotations

import html
from typing import Any

import numpy as np

SIGNALS = ("reward", "captum", "reference_surprisal")  # what a token can be coloured by


def token_signal(item: Any, signal: str) -> np.ndarray:
    """One value per response token of a stored item: r_t, captum's attribution (zeros when not computed) or the
    reference surprisal -log pi_ref."""
    if signal == "reward":
        return np.asarray(item.reward, dtype=float)
    if signal == "captum":
        return np.asarray(item.captum, dtype=float) if item.captum else np.zeros(len(item.tokens))
    if signal == "reference_surprisal":
        return -np.asarray(item.reference_logp, dtype=float)
    raise ValueError(f"unknown signal {signal!r}: choose one of {', '.join(SIGNALS)}")


def colour_scale(values: np.ndarray) -> float:
    """|value| that gets full colour: the 99th percentile of |values| (1 when they are all zero)."""
    return float(np.quantile(np.abs(values), 0.99)) or 1.0


def strength(value: float, scale: float) -> float:
    """How far toward full colour a value sits, in [0, 1]."""
    return min(abs(value) / scale, 1.0) if scale > 0 else 0.0


def diverging(value: float, scale: float, full: int = 255, light: int = 255) -> str:
    """CSS colour: red below zero, blue above, fading to ``rgb(light, light, full)`` at zero; the strong
    channel is ``full``."""
    fade = round(light * (1 - strength(value, scale)))
    return f"rgb({full},{fade},{fade})" if value < 0 else f"rgb({fade},{fade},{full})"


def heatmap_html(items: list[Any], beta: float) -> str:
    """Self-contained HTML: one line per response, tokens coloured by r_t, hover for values."""
    scale = colour_scale(np.concatenate([np.asarray(i.reward) for i in items]) if items else np.zeros(1))
    rows = []
    for item in items:
        spans = []
        for t, token in enumerate(item.tokens):
            r = item.reward[t]
            title = (f"r_t = {r:+.4f} | log pi = {item.policy_logp[t]:.3f} | log pi_ref = "
                     f"{item.reference_logp[t]:.3f}" + (" | in known span" if item.span and item.span[t] else ""))
            border = "border-bottom:2px solid #000;" if item.span and item.span[t] else ""
            spans.append(f'<span class="tok" style="background:{diverging(r, scale)};{border}" '
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


