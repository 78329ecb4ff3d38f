"""Runs page: browse the run store, filter it, compare runs side by side, open any run as its HTML report."""

from __future__ import annotations

import json
from typing import Any

import pandas as pd
import panel as pn

from apps import shell
from apps.views import headline_metrics, metrics_frame, report_link, stored_figures, table, when
from diag.errors import DiagError
from diag.registry import ANALYSES
from diag.report.sections import format_value
from diag.runs import RUN_STATUSES, RunInfo, RunStore

ALL = "(all)"
INTRO = (
    "Every run the workbench has computed, newest first. Filter by analysis, status or group; tick runs to "
    "compare their headline numbers and configurations side by side; open any run as a self-contained HTML report."
)


def headline(info: RunInfo, limit: int = 3) -> str:
    """The first few numbers of a run's summary, for the overview table."""
    if info.status == "failed":
        return f"error: {info.summary.get('error', '?')}"[:120]
    if info.status in ("corrupt", "interrupted"):
        return info.note[:120]
    metrics = [m for m in headline_metrics(info.analysis, info.summary)
               if not isinstance(m.value, str) or len(m.value) < 24]
    return "; ".join(f"{m.name}={format_value(m.value)}" for m in metrics[:limit])


def runs_frame(infos: list[RunInfo]) -> pd.DataFrame:
    rows = [{
        "run": info.run_id, "status": info.status, "group": info.group_name or "",
        "updated, UTC": when(info.updated), "headline": headline(info), "HTML": report_link(info.run_id, "report"),
    } for info in infos]  # the run id starts with the analysis name, so no separate column
    return pd.DataFrame(rows, columns=["run", "status", "group", "updated, UTC", "headline", "HTML"])


def comparison_frames(store: RunStore, run_ids: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Metrics (rows) x runs (columns), and the config fields in which the runs differ."""
    metric_cols: dict[str, dict[str, str]] = {}
    config_cols: dict[str, dict[str, Any]] = {}
    for run_id in run_ids:
        run = store.get(run_id)
        summary = run.summary if run.finished else {}
        frame = metrics_frame(summary, run.analysis)
        metric_cols[run_id] = {
            row["metric"]: row["value"] + (f" {row['95% interval']}" if row["95% interval"] else "")
            for row in frame.to_dict("records")
        }
        config_cols[run_id] = {k: json.dumps(v) if not isinstance(v, str) else v for k, v in run.config.items()}
    metrics = pd.DataFrame(metric_cols).fillna("")
    metrics.insert(0, "metric", metrics.index)
    configs = pd.DataFrame(config_cols).fillna("")
    differing = configs[configs.nunique(axis=1) > 1] if len(run_ids) > 1 else configs
    differing.insert(0, "config field", differing.index)
    return metrics.reset_index(drop=True), differing.reset_index(drop=True)


def page() -> Any:
    store = RunStore()
    analysis = pn.widgets.Select(name="Analysis", options=[ALL, *sorted(ANALYSES)], value=ALL,
                                 sizing_mode="stretch_width")
    status = pn.widgets.Select(name="Status", options=[ALL, *RUN_STATUSES], value=ALL,
                               sizing_mode="stretch_width")
    group = pn.widgets.Select(name="Group", options=[ALL], value=ALL, sizing_mode="stretch_width")
    refresh = pn.widgets.Button(name="Refresh", button_type="default", sizing_mode="stretch_width")
    runs_table = table(runs_frame([]), selectable="checkbox", layout="fit_columns",
                       formatters={"HTML": {"type": "html"}, "headline": {"type": "textarea"}},
                       widths={"run": 285, "status": 90, "group": 80, "updated, UTC": 150, "HTML": 80},
                       pagination="local", page_size=15, css_classes=["runs-table"])
    count = pn.pane.Markdown("", margin=(0, 10))
    detail = pn.Column(sizing_mode="stretch_width")

    def load(*_: Any) -> None:
        everything = store.list()
        groups = sorted({i.group_name for i in everything if i.group_name})
        group.options = [ALL, *groups]
        infos = store.list(analysis=None if analysis.value == ALL else analysis.value,
                           status=None if status.value == ALL else status.value,
                           group=None if group.value == ALL else group.value)
        runs_table.value = runs_frame(infos)
        runs_table.selection = []
        count.object = f"**{len(infos)}** of {len(everything)} runs shown. Tick runs to compare them."
        show_selection()

    def show_selection(*_: Any) -> None:
        ids = [runs_table.value["run"].iloc[i] for i in runs_table.selection if i < len(runs_table.value)]
        if not ids:
            detail[:] = [pn.pane.Markdown("_Tick one run to see its numbers and figures, or several to compare._")]
            return
        try:
            metrics, configs = comparison_frames(store, ids)
        except DiagError as exc:  # a corrupt run: one line naming the damaged file
            detail[:] = [pn.pane.Alert(str(exc), alert_type="danger")]
            return
        title = "Comparison" if len(ids) > 1 else f"Run `{ids[0]}`"
        links = " · ".join(report_link(i, f"report {i}") for i in ids)
        items: list[Any] = [pn.pane.Markdown(f"### {title}"), pn.pane.HTML(links),
                            pn.pane.Markdown("**Headline numbers**"), table(metrics, css_classes=["compare-table"]),
                            pn.pane.Markdown("**Configuration**" + (" (fields that differ)" if len(ids) > 1 else "")),
                            table(configs)]
        if len(ids) == 1:
            items += [pn.pane.Markdown("**Figures**"), stored_figures(store.get(ids[0]), width=520)]
        detail[:] = items

    for widget in (analysis, status, group):
        widget.param.watch(load, "value")
    refresh.on_click(load)
    runs_table.param.watch(show_selection, "selection")
    load()
    sidebar = [pn.pane.Markdown("### Filter"), analysis, status, group, refresh]
    return shell.page("runs", "Runs", INTRO, [count, runs_table, detail], sidebar)
