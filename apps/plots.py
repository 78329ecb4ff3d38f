"""Bokeh figures drawn in the browser from stored arrays: labelled axes, hover values, no server-side rendering."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from bokeh.models import ColorBar, ColumnDataSource, HoverTool, LinearColorMapper
from bokeh.palettes import RdBu11, Viridis256
from bokeh.plotting import figure

PALETTE = ["#2f5d8a", "#d1495b", "#66a182", "#edae49", "#8d6a9f", "#00798c"]


def heatmap(values: np.ndarray, x_labels: Sequence[str], y_labels: Sequence[str], *, title: str, x_label: str,
            y_label: str, value_label: str, diverging: bool = False, height: int = 320) -> figure:
    """A labelled heatmap of ``values[y, x]``; diverging colours centre on zero."""
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
    else:
        mapper = LinearColorMapper(palette=Viridis256, low=float(finite.min()) if finite.size else 0,
                                   high=float(finite.max()) if finite.size else 1)
    fig = figure(title=title, x_range=xs, y_range=list(reversed(ys)), height=height, sizing_mode="stretch_width",
                 tools="save,reset", toolbar_location="right", x_axis_label=x_label, y_axis_label=y_label)
    fig.rect("x", "y", 1, 1, source=source, fill_color={"field": "value", "transform": mapper}, line_color=None)
    fig.add_tools(HoverTool(tooltips=[(x_label, "@x"), (y_label, "@y"), (value_label, "@value{0.0000}")]))
    fig.add_layout(ColorBar(color_mapper=mapper, title=value_label), "right")
    fig.xaxis.major_label_orientation = 0.9
    fig.grid.visible = False
    return fig


def lines_with_bands(x: np.ndarray, series: dict[str, tuple[np.ndarray, np.ndarray | None, np.ndarray | None]], *,
                     title: str, x_label: str, y_label: str, log_x: bool = False, height: int = 340) -> figure:
    """One line per series with an optional shaded (low, high) band; legend click hides a series."""
    fig = figure(title=title, height=height, sizing_mode="stretch_width", x_axis_type="log" if log_x else "linear",
                 x_axis_label=x_label, y_axis_label=y_label, tools="pan,wheel_zoom,box_zoom,reset,save")
    for (name, (y, low, high)), colour in zip(series.items(), PALETTE * 4, strict=False):
        if low is not None and high is not None:
            fig.varea(x=x, y1=low, y2=high, fill_color=colour, fill_alpha=0.18, legend_label=name)
        fig.line(x, y, line_color=colour, line_width=2, legend_label=name)
        fig.scatter(x, y, color=colour, size=5, legend_label=name)
    fig.add_tools(HoverTool(tooltips=[(x_label, "@x"), (y_label, "@y{0.000}")]))
    fig.legend.click_policy = "hide"
    fig.add_layout(fig.legend[0], "right")  # beside the plot, never over the data
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
