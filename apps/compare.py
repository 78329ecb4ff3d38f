"""The Runs page's overlay of 2-6 runs of one analysis: each comparable quantity ``diag.compare`` reads from the
stored runs as one Bokeh figure, one line (or one set of bars) per run, legend by run name, intervals where
stored. This module only draws: what is comparable, and its numbers, come from ``diag.compare``."""

from __future__ import annotations

from typing import Any

import panel as pn

from diag.compare import Chart, compare, legend_names
from diag.errors import DiagError
from diag.runs import RunStore

# Colour-blind-safe (Okabe-Ito), one per run: the same run has the same colour in every chart.
RUN_COLOURS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9")
CHART_NAME, LEGEND_NAME = "compare-chart", "compare-legend"  # the browser test finds the figures by these


def chart_figure(chart: Chart, names: dict[str, str], colours: dict[str, str]) -> Any:
    """One quantity of every run that stored it: lines over x, or bars dodged per category."""
    from bokeh.models import ColumnDataSource, FactorRange, Legend, LegendItem, Whisker
    from bokeh.plotting import figure
    from bokeh.transform import dodge

    q = chart.quantity
    options = {"height": 260, "width": 560, "title": q.title, "toolbar_location": None, "name": CHART_NAME}
    items = []
    if q.kind == "line":
        fig = figure(**options, x_axis_label=q.x_label, y_axis_label=q.y_label)
        if all(isinstance(x, int) for s in chart.series.values() for x in s.x):
            fig.xaxis.ticker.min_interval = 1  # k, steps and layers are whole numbers
        for run_id, series in chart.series.items():
            source = ColumnDataSource({"x": list(series.x), "y": list(series.y),
                                       "low": list(series.low or series.y), "high": list(series.high or series.y)})
            renderer = fig.line("x", "y", source=source, color=colours[run_id], line_width=2)
            if series.low is not None:
                fig.varea("x", "low", "high", source=source, fill_color=colours[run_id], fill_alpha=0.12,
                          level="underlay")  # the stored interval, drawn under the lines and not in the legend
            items.append(LegendItem(label=names[run_id], renderers=[renderer]))
    else:
        categories = list(dict.fromkeys(x for s in chart.series.values() for x in s.x))
        fig = figure(**options, x_range=FactorRange(*categories), y_axis_label=q.y_label)
        fig.xaxis.major_label_orientation = 0.5 if sum(len(str(c)) for c in categories) > 60 else 0
        width = 0.8 / len(chart.series)
        for i, (run_id, series) in enumerate(chart.series.items()):
            offset = -0.4 + width * (i + 0.5)
            source = ColumnDataSource({"x": list(series.x), "y": list(series.y),
                                       "low": list(series.low or series.y), "high": list(series.high or series.y)})
            renderer = fig.vbar(x=dodge("x", offset, range=fig.x_range), top="y", width=width * 0.9, source=source,
                                color=colours[run_id])
            if series.low is not None:
                fig.add_layout(Whisker(base=dodge("x", offset, range=fig.x_range), lower="low", upper="high",
                                       source=source, line_color="#333333"))
            items.append(LegendItem(label=names[run_id], renderers=[renderer]))
    fig.add_layout(Legend(items=items, name=LEGEND_NAME, label_text_font_size="11px", location="top_left"),
                   "below")
    return fig


def overlay(store: RunStore, run_ids: list[str]) -> pn.viewable.Viewable:
    """Every chart the runs share, or one line saying why these runs cannot be overlaid."""
    try:
        charts = compare(store, run_ids)
        names = legend_names(store, run_ids)
    except DiagError as exc:
        return pn.pane.Alert(f"No overlay: {exc}.", alert_type="info", css_classes=["compare-overlay-none"])
    if not charts:
        return pn.pane.Alert("These runs stored no curves or bars to overlay.", alert_type="info",
                             css_classes=["compare-overlay-none"])
    colours = {run_id: RUN_COLOURS[i % len(RUN_COLOURS)] for i, run_id in enumerate(names)}
    return pn.FlexBox(*(pn.pane.Bokeh(chart_figure(chart, names, colours), margin=(0, 10, 10, 0))
                        for chart in charts), css_classes=["compare-overlay"], sizing_mode="stretch_width")
