"""Credit page: which tokens carry a DPO model's preference? Token heatmaps of stored per-token rewards.

Pick held-out pairs and see the chosen and rejected answers side by side, each token coloured by the stored
implicit reward r_t = beta * (log pi - log pi_ref) or by a baseline signal; the known differing span is
underlined. Below, the localisation scores (top-1 hit rate, AUROC with bootstrap intervals) per method.
"""

from __future__ import annotations

import html
from typing import Any

import numpy as np
import pandas as pd
import panel as pn
from bokeh.models import ColumnDataSource, FactorRange, HoverTool, Whisker
from bokeh.plotting import figure

from apps import plots, shell
from apps.launch import Launcher
from apps.views import (
    PickedRunView,
    RunPicker,
    metrics_frame,
    report_link,
    set_url,
    stored_figures,
    table,
    url_ints,
)
from diag.credit import analysis as credit
from diag.credit import heatmap
from diag.report.sections import Interval, format_value
from diag.runs import RunStore

INTRO = (
    "**Does the per-token DPO implicit reward r_t = β·(log π − log π_ref) point at the tokens a preference is "
    "about?** (Rafailov et al. 2024, “From r to Q*”.) Held-out pairs differ in one known span; a good credit "
    "signal is most negative on the rejected answer's span. Baselines: chance, surprisal, captum's "
    "LayerIntegratedGradients."
)
SIGNALS = {
    "r_t (DPO implicit reward)": "reward",
    "captum LIG attribution": "captum",
    "reference surprisal −log π_ref": "reference_surprisal",
}
TOKENS_CSS = """
.pair { display: grid; grid-template-columns: 1fr 1fr; gap: 14px; margin-bottom: 14px; }
.side { border: 1px solid #d8dee6; border-radius: 6px; padding: 8px 10px; background: #fff; }
.side h4 { margin: 0 0 4px 0; font-size: 13px; color: #2f5d8a; }
.meta { color: #5a6470; font-size: 12px; margin-bottom: 4px; }
.prompt { color: #5a6470; font-size: 12px; white-space: pre-wrap; margin-bottom: 6px; }
.tok { font-family: monospace; font-size: 13px; white-space: pre-wrap; padding: 1px 0; line-height: 1.9; }
.span { border-bottom: 2px solid #000; }
.legend { font-size: 12px; color: #3d4852; margin: 4px 0 10px 0; }
.chip { display: inline-block; width: 60px; height: 10px; vertical-align: middle;
  background: linear-gradient(90deg, rgb(230,0,0), rgb(255,255,255), rgb(0,0,230)); }
"""


def colour(value: float, scale: float) -> str:
    """The heatmap's diverging colour (``diag.credit.heatmap``) in the page's softer palette; strong colours get
    white text so every token stays readable."""
    return (f"background:{heatmap.diverging(value, scale, full=230, light=235)};"
            f"color:{'#fff' if heatmap.strength(value, scale) > 0.55 else '#111'}")


def item_html(item: credit.Item, signal: str, scale: float) -> str:
    values = heatmap.token_signal(item, signal)
    spans = []
    for t, token in enumerate(item.tokens):
        in_span = bool(item.span and item.span[t])
        tip = (f"{values[t]:+.4f} | r_t {item.reward[t]:+.4f} | log π {item.policy_logp[t]:.3f} | "
               f"log π_ref {item.reference_logp[t]:.3f}" + (" | known span" if in_span else ""))
        spans.append(f'<span class="tok{" span" if in_span else ""}" style="{colour(values[t], scale)}" '
                     f'title="{html.escape(tip)}">{html.escape(token)}</span>')
    worst = int(np.argmin(item.reward)) if item.reward else 0
    where = " · in the span" if item.span and item.span[worst] else ""
    worst_token = html.escape(item.tokens[worst]) if item.tokens else ""
    return (f'<div class="side"><h4>{item.side} answer</h4>'
            f'<div class="meta">Σ r_t = {np.sum(item.reward):+.3f} · most negative r_t at token {worst} '
            f'(“{worst_token}”){where}</div><div>{"".join(spans)}</div></div>')


def pairs_html(items: list[credit.Item], pairs: list[int], signal: str) -> str:
    chosen = [i for i in items if i.pair in pairs]
    scale = heatmap.colour_scale(np.concatenate([heatmap.token_signal(i, signal) for i in chosen])
                                 if chosen else np.ones(1))
    blocks = [(f'<div class="legend"><span class="chip"></span> red = negative, blue = positive; full colour at '
              f'|value| = {scale:.4g} (99th percentile of the pairs shown); <span class="span">underlined</span> = '
              f'the known differing span; hover a token for its values.</div>')]
    for pair in pairs:
        sides = sorted((i for i in items if i.pair == pair), key=lambda i: i.side != "chosen")
        if not sides:
            continue
        blocks.append(f'<div class="prompt"><b>pair {pair}</b> · {html.escape(sides[0].kind)} · seed {sides[0].seed}'
                      f' — {html.escape(sides[0].prompt)}</div>'
                      f'<div class="pair">{"".join(item_html(i, signal, scale) for i in sides)}</div>')
    return "".join(blocks)


def scores_frame(summary: dict[str, Any]) -> pd.DataFrame:
    rows = []
    for side, scopes in summary.get("scores", {}).items():
        for scope, methods in scopes.items():
            for method, block in methods.items():
                rows.append({"side": side, "scope": scope.replace("_", " "), "method": method,
                             **{f"{m} [95% CI]": format_value(Interval(block[m]["value"], block[m]["low"],
                                                                         block[m]["high"]))
                                for m in ("top1", "auroc")}})
    return pd.DataFrame(rows)


def auroc_chart(summary: dict[str, Any]) -> figure:
    """AUROC per method with its bootstrap interval, rejected answers, both scopes."""
    block = summary.get("scores", {}).get("rejected", {})
    xs, values, lows, highs = [], [], [], []
    for scope, methods in block.items():
        for method, m in methods.items():
            xs.append((scope.replace("_", " "), method))
            values.append(m["auroc"]["value"])
            lows.append(m["auroc"]["low"])
            highs.append(m["auroc"]["high"])
    source = ColumnDataSource({"x": xs, "value": values, "low": lows, "high": highs,
                               "colour": [plots.PALETTE[0] if x[1] == "dpo_reward" else "#9aa7b4" for x in xs]})
    fig = figure(x_range=FactorRange(*xs), y_range=(0, 1.05), height=320, sizing_mode="stretch_width",
                 title="Rejected answers: AUROC of each signal for the known span (95% bootstrap CI)",
                 x_axis_label="scope / method", y_axis_label="AUROC (0.5 = chance)", tools="save")
    fig.vbar(x="x", top="value", width=0.75, color="colour", source=source)
    fig.add_layout(Whisker(base="x", lower="low", upper="high", source=source))
    fig.add_tools(HoverTool(tooltips=[("signal", "@x"), ("AUROC", "@value{0.000} [@low{0.000}, @high{0.000}]")]))
    fig.xaxis.major_label_orientation = 0.8
    fig.line([xs[0], xs[-1]] if xs else [], [0.5, 0.5] if xs else [], line_dash="dashed", color="#555")
    return fig


class PairView(pn.viewable.Viewer):
    """Choose pairs and a signal; renders the token heatmaps of the selected stored run.

    The pairs shown live in the URL as ``pair=N[,M...]``: a link opens on them (if the run has them).
    """

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self._linked = url_ints("pair")
        self.pairs = pn.widgets.MultiChoice(name="Pairs to show", options={}, value=[], sizing_mode="stretch_width",
                                            max_items=6)
        self.signal = pn.widgets.RadioButtonGroup(name="Colour tokens by", options=SIGNALS, value="reward",
                                                  button_type="default")
        self.heat = pn.pane.HTML("", sizing_mode="stretch_width", stylesheets=[TOKENS_CSS],
                                 css_classes=["token-heatmap"])
        self.items: list[credit.Item] = []
        self.pairs.param.watch(self._render, "value")
        self.pairs.param.watch(lambda e: set_url(pair=",".join(str(p) for p in e.new)), "value")
        self.signal.param.watch(self._render, "value")
        self._layout = pn.Column(pn.Row(self.pairs, pn.Column(pn.pane.Markdown("Colour tokens by", margin=(0, 5)),
                                                               self.signal)), self.heat, sizing_mode="stretch_width")

    def __panel__(self) -> pn.Column:
        return self._layout

    def set_items(self, items: list[credit.Item]) -> None:
        self.items = items
        options: dict[str, int] = {}
        for item in items:
            if item.pair not in options.values():
                options[f"pair {item.pair} · {item.kind or item.side} · seed {item.seed}"] = item.pair
        self.pairs.options = options
        linked, self._linked = [p for p in self._linked if p in options.values()], []
        self.pairs.value = linked or list(options.values())[:2]
        self._render()

    def _render(self, *_: Any) -> None:
        self.heat.object = pairs_html(self.items, list(self.pairs.value), self.signal.value)


def page() -> Any:
    store = RunStore()
    picker = RunPicker(credit.ANALYSIS.name, store, describe=lambda i: f"{i.summary.get('n_pairs', '?')} pairs")
    pair_view = PairView()

    def render(run_id: str) -> list[Any]:
        run = store.get(run_id)
        result = credit.Result.load(run)
        pair_view.set_items(result.items)
        summary = run.summary
        return [
            pn.pane.Markdown(f"### Headline numbers · {report_link(run.run_id)}  \nβ = {summary.get('beta')}, "
                             f"policy `{summary.get('policy')}`, reference: {summary.get('reference')}, "
                             f"{summary.get('n_pairs')} pairs."),
            table(metrics_frame(summary, credit.ANALYSIS.name), css_classes=["credit-metrics"]),
            pn.pane.Bokeh(auroc_chart(summary)),
            pn.pane.Markdown("### Localisation of the known span, every method"),
            table(scores_frame(summary), pagination="local", page_size=12),
            pn.pane.Markdown("### Stored figures (as in the report)"), stored_figures(run, width=520),
        ]

    shown = PickedRunView(picker, render, "No credit runs yet: launch one from the sidebar.",
                          on_empty=lambda: pair_view.set_items([]))
    launcher = Launcher(credit.ANALYSIS, store, shown.select, title="New credit run", button="Score pairs")
    main = [picker, pn.pane.Markdown("### Token heatmaps"), pair_view, shown.view]
    return shell.page("credit", "Credit", INTRO, main, [launcher])
