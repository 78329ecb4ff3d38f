"""Bokeh figures drawn in the browser from stored arrays: labelled axes, hover values, no server-side rendering."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from bokeh.models import (
    AdaptiveTicker,
    Axis,
    ColorBar,
    ColorMapper,
    ColumnDataSource,
    HoverTool,
    LinearColorMapper,
    LogColorMapper,
    LogTicker,
)
from bokeh.palettes import RdBu11, Viridis256
from bokeh.plotting import figure

PALETTE = ["#2f5d8a", "#d1495b", "#66a182", "#edae49", "#8d6a9f", "#00798c"]


def integer_axis(axes: Sequence[Axis], log: bool = False) -> None:
    """Ticks at whole numbers only, for axes that count things (k, agent steps, layers): never "k 1.5".

    Bokeh's tickers step by mantissa x 10^n; with ``min_interval=1`` every step, hence every tick, is a whole
    number. A log axis ticks at powers of 2 and falls back to the same integer steps over short ranges.
    """
    ticker = LogTicker(base=2, mantissas=[1, 2, 5], min_interval=1) if log else AdaptiveTicker(min_interval=1)
    for axis in axes:
        axis.ticker = ticker
        axis.minor_tick_line_color = None  # minor ticks would sit between whole numbers


def colour_bar(fig: figure, mapper: ColorMapper, title: str) -> None:
    """A titled colour bar beside the plot: every colour-coded figure says what its colours mean."""
    fig.add_layout(ColorBar(color_mapper=mapper, title=title, width=10), "right")


def heatmap(values: np.ndarray, x_labels: Sequence[str], y_labels: Sequence[str], *, title: str, x_label: str,
            y_label: str, value_label: str, diverging: bool = False, log: bool = False,
            height: int = 320) -> figure:
    """A labelled heatmap of ``values[y, x]``; diverging colours centre on zero; ``log`` colours positive values
    on a log scale (activation norms span orders of magnitude: the first token's would saturate a linear one)."""
    values = np.asarray(values, dtype=float)
    xs = [f"{i}:{t}" for i, t in enumerate(x_labels)]
    ys = [str(t) for t in y_labels]
    grid_x, grid_y = np.meshgrid(np.arange(len(xs)), np.arange(len(ys)))
    source = ColumnDataSource({
        "x": [xs[i] for i in grid_x.ravel()], "y": [ys[j] for j in grid_y.ravel()],
        "value": values.ravel(),
    })
    finite = values[np.isfinite(values)]
    if diverging:
        bound = float(np.abs(finite).max()) if finite.size else 1.0
        mapper = LinearColorMapper(palette=list(reversed(RdBu11)), low=-bound, high=bound)
    elif log:
        positive = finite[finite > 0]
        mapper = LogColorMapper(palette=Viridis256, low=float(positive.min()) if positive.size else 1e-3,
                                high=float(positive.max()) if positive.size else 1.0)
    else:
        mapper = LinearColorMapper(palette=Viridis256, low=float(finite.min()) if finite.size else 0,
                                   high=float(finite.max()) if finite.size else 1)
    fig = figure(title=title, x_range=xs, y_range=list(reversed(ys)), height=height, sizing_mode="stretch_width",
                 tools="save,reset", toolbar_location="right", x_axis_label=x_label, y_axis_label=y_label)
    fig.rect("x", "y", 1, 1, source=source, fill_color={"field": "value", "transform": mapper}, line_color=None)
    fig.add_tools(HoverTool(tooltips=[(x_label, "@x"), (y_label, "@y"), (value_label, "@value{0.0000}")]))
    colour_bar(fig, mapper, value_label + (" (log scale)" if log else ""))
    fig.xaxis.major_label_orientation = 0.9
    fig.grid.visible = False
    return fig


def lines_with_bands(x: np.ndarray, series: dict[str, tuple[np.ndarray, np.ndarray | None, np.ndarray | None]], *,
                     title: str, x_label: str, y_label: str, log_x: bool = False, height: int = 340) -> figure:
    """One line per series with an optional shaded (low, high) band; legend click hides a series.

    An integer ``x`` (k, steps, layers) gets integer ticks.
    """
    fig = figure(title=title, height=height, sizing_mode="stretch_width", x_axis_type="log" if log_x else "linear",
                 x_axis_label=x_label, y_axis_label=y_label, tools="pan,wheel_zoom,box_zoom,reset,save")
    for (name, (y, low, high)), colour in zip(series.items(), PALETTE * 4, strict=False):
        # one source per series, shared by its glyphs (a source per glyph triples the document's models)
        banded = low is not None and high is not None
        source = ColumnDataSource({"x": x, "y": y, **({"low": low, "high": high} if banded else {})})
        if banded:
            fig.varea(x="x", y1="low", y2="high", source=source, fill_color=colour, fill_alpha=0.18,
                      legend_label=name)
        fig.line("x", "y", source=source, line_color=colour, line_width=2, legend_label=name)
        fig.scatter("x", "y", source=source, color=colour, size=5, legend_label=name)
    fig.add_tools(HoverTool(tooltips=[(x_label, "@x"), (y_label, "@y{0.000}")]))
    fig.legend.click_policy = "hide"
    fig.add_layout(fig.legend[0], "right")  # beside the plot, never over the data
    if np.issubdtype(np.asarray(x).dtype, np.integer):
        integer_axis(fig.xaxis, log=log_x)
    return fig


def bars(labels: Sequence[str], values: Sequence[float], *, title: str, x_label: str, y_label: str,
         colours: Sequence[str] | None = None, height: int = 300) -> figure:
    labels = [str(label) for label in labels]
    source = ColumnDataSource({"label": labels, "value": list(values),
                               "colour": list(colours) if colours else [PALETTE[0]] * len(labels)})
    fig = figure(title=title, x_range=labels, height=height, sizing_mode="stretch_width", tools="save",
                 x_axis_label=x_label, y_axis_label=y_label)
    fig.vbar(x="label", top="value", width=0.7, source=source, color="colour")
    fig.add_tools(HoverTool(tooltips=[(x_label, "@label"), (y_label, "@value{0.0000}")]))
    fig.xaxis.major_label_orientation = 0.6 if max((len(s) for s in labels), default=0) > 6 else 0
    return fig
