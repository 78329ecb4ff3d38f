"""Pieces every page uses to show stored runs: a run picker, metric and config tables, stored figures, and the
page's state in its URL (``url_value``/``set_url``), so a copied link reopens the same view."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import urllib.parse
from collections.abc import Callable
from typing import Any

import pandas as pd
import panel as pn

from apps.downloads import Downloads
from apps.shell import FIGURE_ROUTE
from diag.errors import DiagError
from diag.report.render import guide_for
from diag.report.sections import (
    BUDGET_BADGE,
    BUDGET_RULE,
    Metric,
    format_value,
    metrics_from_summary,
    read_summary,
    readable,
)
from diag.run_dir import Run
from diag.runs import RunInfo, RunStore


def _location() -> Any:
    """This server session's URL (Panel's ``Location``), or None outside one (a page built in a unit test)."""
    doc = pn.state.curdoc
    return pn.state.location if doc is not None and doc.session_context is not None else None


def url_value(key: str) -> str | None:
    """The text of query parameter ``key`` in the URL this session was opened with (raw: ids stay strings)."""
    location = _location()
    values = urllib.parse.parse_qs((location.search or "")[1:]).get(key) if location is not None else None
    return values[-1] if values else None


def url_ints(key: str) -> list[int]:
    """A comma-separated list of integers in the URL (``pair=3,5``); anything else reads as none."""
    text = url_value(key) or ""
    parts = [part.strip() for part in text.split(",") if part.strip()]
    return [int(part) for part in parts] if all(part.isdigit() for part in parts) else []


def set_url(**values: Any) -> None:
    """Write page state into the URL's query (None or "" removes a key): the address bar is always a deep link.

    While the page is being built the browser has not yet sent its own URL (it does on connecting, replacing
    the server's), so state set then is written once the page has loaded.
    """
    location = _location()
    if location is None:
        return
    if not pn.state.loaded:
        pn.state.onload(lambda: _write_query(location, values))
    else:
        _write_query(location, values)


def _write_query(location: Any, values: dict[str, Any]) -> None:
    query = dict(urllib.parse.parse_qsl((location.search or "")[1:]))
    for key, value in values.items():
        if value is None or value == "":
            query.pop(key, None)
        else:
            query[key] = str(value)
    search = "?" + urllib.parse.urlencode(query, safe=",") if query else ""
    if search != (location.search or ""):
        location.search = search


def when(timestamp: float) -> str:
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).strftime("%Y-%m-%d %H:%M")


TABLE_CSS = """
.tabulator, .tabulator .tabulator-header, .tabulator .tabulator-row, .tabulator .tabulator-cell { font-size: 13px; }
.tabulator .tabulator-cell { white-space: normal; }
"""


def table(frame: pd.DataFrame, **kwargs: Any) -> pn.widgets.Tabulator:
    """A read-only table that fits its container, with sensible defaults for research tables."""
    options = {"disabled": True, "show_index": False, "layout": "fit_data_stretch", "sizing_mode": "stretch_width",
               "theme": "simple", "stylesheets": [TABLE_CSS], **kwargs}
    return pn.widgets.Tabulator(frame, **options)


def headline_metrics(analysis: str, summary: dict[str, Any]) -> list[Metric]:
    """The numbers the analysis' GUIDE calls its headline (as in the report), else every number in the summary,
    named with readable labels."""
    return [dataclasses.replace(m, name=readable(m.name)) for m in read_summary(guide_for(analysis), summary).headline]


def metrics_frame(summary: dict[str, Any], analysis: str | None = None) -> pd.DataFrame:
    """A summary's headline numbers as rows: readable metric name, value, and its interval where the run stored
    one, marked when the budget is too small to read it (``diag.report.sections.BUDGET_RULE``)."""
    rows = []
    metrics = headline_metrics(analysis, summary) if analysis else metrics_from_summary(summary)
    for metric in metrics:
        interval = f"[{format_value(metric.low)}, {format_value(metric.high)}]" if metric.has_interval else ""
        interval += f" ⚠ {BUDGET_BADGE}" if metric.unreadable else ""
        rows.append({"metric": readable(metric.name), "value": format_value(metric.value), "95% interval": interval})
    return pd.DataFrame(rows, columns=["metric", "value", "95% interval"])


BADGE_CSS = """
.budget-badge { display: inline-block; padding: 1px 9px; border-radius: 10px; font-size: 12px; color: #fff;
                background: #b26a00; font-weight: 600; }
"""


def budget_badge(too_wide: list[str]) -> pn.pane.HTML:
    """The visible "budget too small to read" badge, naming the metrics whose intervals are too wide."""
    names = ", ".join(readable(name) for name in too_wide)
    return pn.pane.HTML(f'<span class="budget-badge" title="{BUDGET_RULE}">⚠ {BUDGET_BADGE}</span> '
                        f'<small>intervals too wide: {names}</small>', stylesheets=[BADGE_CSS],
                        css_classes=["budget"], sizing_mode="stretch_width", margin=(0, 5))


def budget_alert(analysis: str, summary: dict[str, Any]) -> list[pn.pane.HTML]:
    """A badge above a run's view when any of its headline metrics is too wide to read (none: nothing)."""
    unreadable = read_summary(guide_for(analysis), summary).unreadable
    return [budget_badge([m.name for m in unreadable])] if unreadable else []


def config_frame(config: dict[str, Any]) -> pd.DataFrame:
    rows = [{"field": k, "value": v if isinstance(v, str) else json.dumps(v)} for k, v in config.items()]
    return pd.DataFrame(rows, columns=["field", "value"])


def figure_image(run_id: str, stem: str, width: int) -> pn.pane.HTML:
    """A saved figure linked from the server (``FIGURE_ROUTE``), not inlined: the browser fetches it after the
    page's content has rendered."""
    return pn.pane.HTML(f'<img src="./{FIGURE_ROUTE}/{run_id}/{stem}.png" alt="{stem}" width="{width}" '
                        'style="max-width: 100%; height: auto">', width=width, margin=0)


def stored_figures(run: Run, width: int = 640) -> pn.FlexBox:
    """The PNG figures the run saved, captioned by file name (the same figures the HTML report inlines), each
    with the budget badge where the report has it."""
    badges = read_summary(guide_for(run.analysis), run.summary).figure_badges if run.finished else {}
    cards = [
        pn.Column(pn.pane.Markdown(f"**{path.stem.replace('_', ' ')}**", margin=(0, 5)),
                  *([budget_badge(badges[path.stem])] if path.stem in badges else []),
                  figure_image(run.run_id, path.stem, width), margin=(0, 10, 10, 0))
        for path in run.figure_paths()
    ]
    if not cards:
        return pn.FlexBox(pn.pane.Markdown("_This run saved no figures._"))
    return pn.FlexBox(*cards)


def report_link(run_id: str, label: str = "open as HTML report") -> str:
    return f'<a href="./report/{run_id}" target="_blank">{label}</a>'


class RunPicker(pn.viewable.Viewer):
    """Choose one finished run of an analysis (newest first); ``value`` is the run id or None.

    Corrupt runs are listed too, marked, so choosing one shows the store's one-line refusal naming the file.
    The choice lives in the URL as ``url_key`` (an id or unique prefix); a link to a run this store lacks opens
    the newest and says so (``link_problem``).
    """

    def __init__(self, analysis: str, store: RunStore, describe: Any = None, url_key: str = "run",
                 **params: Any) -> None:
        super().__init__(**params)
        self.analysis = analysis
        self.store = store
        self._describe = describe or (lambda info: "")
        self.select = pn.widgets.Select(name=f"Stored {analysis} runs", options={}, sizing_mode="stretch_width")
        self.link_problem: str | None = None
        self.refresh(select=self._linked(url_value(url_key)))
        self.select.param.watch(lambda event: set_url(**{url_key: event.new}), "value")
        set_url(**{url_key: self.select.value})

    def _linked(self, text: str | None) -> str | None:
        if text is None:
            return None
        ids = list(self.select.options.values())
        matches = [run_id for run_id in ids if run_id == text] or [run_id for run_id in ids if run_id.startswith(text)]
        if len(matches) == 1:
            return matches[0]
        self.link_problem = (f"The link names run `{text}`, which is not {'one' if not matches else 'exactly one'} "
                             f"of the stored {self.analysis} runs: showing the newest instead.")
        return None

    def __panel__(self) -> pn.widgets.Select:
        return self.select

    def _label(self, info: RunInfo) -> str:
        extra = "CORRUPT" if info.status == "corrupt" else self._describe(info)
        name = f" · {info.label.name}" if info.label.name else ""
        return (f"{when(info.updated)} · {info.run_id[len(self.analysis) + 1:][:8]}{name}"
                + (f" · {extra}" if extra else ""))

    def refresh(self, select: str | None = None) -> None:
        infos = [i for i in self.store.list(analysis=self.analysis) if i.status in ("finished", "corrupt")]
        options = {self._label(info): info.run_id for info in infos}
        self.select.options = options
        if select is not None and select in options.values():
            self.select.value = select
        elif self.select.value not in options.values():
            self.select.value = next(iter(options.values()), None)

    @property
    def value(self) -> str | None:
        return self.select.value


class PickedRunView:
    """Keeps ``view`` showing the run chosen in ``picker`` (pages lay both out): ``render(run_id)`` builds the view;
    with no run it is one info line, and a run that fails to load (``DiagError``) is one danger alert."""

    def __init__(self, picker: RunPicker, render: Callable[[str], list[Any]], empty: str,
                 on_empty: Callable[[], None] | None = None) -> None:
        self.picker = picker
        self._render, self._empty, self._on_empty = render, empty, on_empty
        self.view = pn.Column(sizing_mode="stretch_width")
        picker.select.param.watch(self.show, "value")
        self.show()

    def show(self, *_: Any) -> None:
        problem, self.picker.link_problem = self.picker.link_problem, None  # said once, above the first view
        notice = [pn.pane.Alert(problem, alert_type="warning", css_classes=["link-problem"])] if problem else []
        if self.picker.value is None:
            self.view[:] = [*notice, pn.pane.Alert(self._empty, alert_type="info")]
            if self._on_empty is not None:
                self._on_empty()
            return
        try:
            self.view[:] = [*notice, *self._render(self.picker.value), Downloads(self.picker.store, self.picker.value)]
        except DiagError as exc:
            self.view[:] = [*notice, pn.pane.Alert(str(exc), alert_type="danger")]

    def select(self, run_id: str) -> None:
        """Show a run that just finished (a Launcher's ``on_done``)."""
        self.picker.refresh(select=run_id)
        self.show()
