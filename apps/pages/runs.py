"""Runs page: browse the run store, search and filter it, name/tag/annotate and delete runs, compare runs (2-6 of one
analysis overlaid, ``apps.compare``, beside the configuration fields that differ), open any run as its HTML report. Filters, search and the compared runs live in the URL
(``?analysis=&status=&group=&q=&compare=ID1,ID2``), so a copied link reopens the same view."""

from __future__ import annotations

import json
from typing import Any

import pandas as pd
import panel as pn

from apps import shell
from apps.compare import overlay
from apps.downloads import Downloads
from apps.views import (
    headline_metrics,
    metrics_frame,
    report_link,
    set_url,
    stored_figures,
    table,
    url_value,
    when,
)
from diag.errors import DiagError
from diag.labels import Label
from diag.registry import ANALYSES
from diag.report.sections import format_value
from diag.runs import RUN_STATUSES, RunInfo, RunStore

ALL = "(all)"
INTRO = (
    "Every run the workbench has computed, newest first, a sweep's runs grouped under it. Search names, tags, "
    "notes and ids, or filter by analysis, status or group; tick one run to name, tag, annotate, download or "
    "delete it, several (2-6 of one analysis) to overlay their curves and bars beside the configuration fields in "
    "which they differ; open any run as a self-contained HTML report."
)


def headline(info: RunInfo, limit: int = 3) -> str:
    """The first few numbers of a run's summary, for the overview table."""
    if info.status == "failed":
        return f"error: {info.summary.get('error', '?')}"[:120]
    if info.status in ("corrupt", "interrupted"):
        return info.note[:120]
    if info.status == "cancelled":
        return str(info.summary.get("cancelled", "cancelled"))[:120]
    metrics = [m for m in headline_metrics(info.analysis, info.summary)
               if not isinstance(m.value, str) or len(m.value) < 24]
    return "; ".join(f"{m.name}={format_value(m.value)}" for m in metrics[:limit])


def label_text(label: Label) -> str:
    """A run's name, #tags and note, one after the other (blank when unlabelled)."""
    return "\n".join(filter(None, (label.name, " ".join(f"#{t}" for t in label.tags), label.note)))


def runs_frame(infos: list[RunInfo]) -> pd.DataFrame:
    """One row per run, newest first, except that a sweep's runs sit together where its newest run would."""
    newest: dict[str, int] = {}
    for position, info in enumerate(infos):
        newest.setdefault(info.group_name or "", position)
    position = {info.run_id: n for n, info in enumerate(infos)}
    ordered = sorted(infos, key=lambda i: (newest[i.group_name] if i.group_name else position[i.run_id],
                                           position[i.run_id]))
    rows = [{
        "run": info.run_id, "label": label_text(info.label), "status": info.status, "group": info.group_name or "",
        "updated, UTC": when(info.updated), "headline": headline(info), "HTML": report_link(info.run_id, "report"),
    } for info in ordered]  # the run id starts with the analysis name, so no separate column
    return pd.DataFrame(rows, columns=["run", "label", "status", "group", "updated, UTC", "headline", "HTML"])


class LabelEditor(pn.viewable.Viewer):
    """Name, tags and note of one run, saved to the store's index; and its deletion, after a confirmation."""

    def __init__(self, store: RunStore, info: RunInfo, on_change: Any, **params: Any) -> None:
        super().__init__(**params)
        self.store, self.run_id, self.on_change = store, info.run_id, on_change
        self.name_input = pn.widgets.TextInput(name="Name", value=info.label.name, sizing_mode="stretch_width")
        self.tags_input = pn.widgets.TextInput(name="Tags (space- or comma-separated)",
                                               value=" ".join(info.label.tags),
                                         sizing_mode="stretch_width")
        self.note_input = pn.widgets.TextAreaInput(name="Note", value=info.label.note, height=80,
                                             sizing_mode="stretch_width")
        save = pn.widgets.Button(name="Save label", button_type="primary", width=130)
        delete = pn.widgets.Button(name="Delete run…", button_type="danger", button_style="outline", width=130)
        self.confirm = pn.widgets.Button(name=f"Delete {info.run_id} and its files", button_type="danger",
                                         visible=False)
        self.cancel = pn.widgets.Button(name="Cancel", visible=False, width=90)
        self.message = pn.pane.Alert("", visible=False, sizing_mode="stretch_width", css_classes=["label-message"])
        save.on_click(self._save)
        delete.on_click(lambda _: self._asking(True))
        self.cancel.on_click(lambda _: self._asking(False))
        self.confirm.on_click(self._delete)
        self._layout = pn.Card(self.name_input, self.tags_input, self.note_input, pn.Row(save, delete),
                               pn.Row(self.confirm, self.cancel), self.message, title="Name, tags, note",
                               sizing_mode="stretch_width", css_classes=["label-editor"])

    def __panel__(self) -> pn.Card:
        return self._layout

    def _asking(self, asking: bool) -> None:
        self.confirm.visible = self.cancel.visible = asking

    def _save(self, _: Any) -> None:
        tags = tuple(dict.fromkeys(t for t in self.tags_input.value.replace(",", " ").split() if t))
        try:
            old = self.store.info(self.run_id).label
            self.store.label(self.run_id, name=self.name_input.value, note=self.note_input.value, add_tags=tags,
                             remove_tags=tuple(t for t in old.tags if t not in tags))
        except DiagError as exc:
            self.message.param.update(object=str(exc), alert_type="danger", visible=True)
            return
        self.on_change(keep=[self.run_id])

    def _delete(self, _: Any) -> None:
        try:
            self.store.remove(self.run_id)
        except DiagError as exc:
            self.message.param.update(object=str(exc), alert_type="danger", visible=True)
            return
        self.on_change(keep=[])


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
    search = pn.widgets.TextInput(name="Search", placeholder="words in ids, names, tags, notes",
                                  sizing_mode="stretch_width", css_classes=["runs-search"])
    refresh = pn.widgets.Button(name="Refresh", button_type="default", sizing_mode="stretch_width")
    runs_table = table(runs_frame([]), selectable="checkbox", layout="fit_columns",
                       formatters={"HTML": {"type": "html"}, "headline": {"type": "textarea"},
                                   "label": {"type": "textarea"}},
                       widths={"run": 285, "label": 150, "status": 90, "group": 80, "updated, UTC": 150, "HTML": 80},
                       pagination="local", page_size=15, css_classes=["runs-table"])
    count = pn.pane.Markdown("", margin=(0, 10))
    detail = pn.Column(sizing_mode="stretch_width")
    # The link's filters and compared runs: applied once, on the first load.
    linked = {"analysis": url_value("analysis"), "status": url_value("status"), "q": url_value("q") or "",
              "group": url_value("group"), "compare": [i for i in (url_value("compare") or "").split(",") if i]}
    analysis.value = linked["analysis"] if linked["analysis"] in analysis.options else ALL
    status.value = linked["status"] if linked["status"] in status.options else ALL
    search.value = linked["q"]
    group.options = [ALL, *sorted({i.group_name for i in store.list() if i.group_name})]
    group.value = linked["group"] if linked["group"] in group.options else ALL

    shown: list[str] = []  # the runs the detail panel shows

    def load(*_: Any, keep: list[str] | None = None, rebuild: bool = True) -> None:
        """Reload the table; ``rebuild=False`` (a label saved) keeps the detail panel when it still shows the same
        run, so the editor the user is clicking in is not replaced under the cursor (a click on "Delete run…"
        right after "Save label" landed on an editor about to be discarded)."""
        everything = store.list()
        groups = sorted({i.group_name for i in everything if i.group_name})
        group.options = [ALL, *groups]
        infos = store.list(analysis=None if analysis.value == ALL else analysis.value,
                           status=None if status.value == ALL else status.value,
                           group=None if group.value == ALL else group.value, search=search.value or None)
        frame = runs_frame(infos)
        runs_table.groupby = ["group"] if (frame["group"] != "").any() else []
        runs_table.value = frame
        wanted, linked["compare"] = keep if keep is not None else linked["compare"], []
        runs_table.selection = [i for i, run_id in enumerate(frame["run"]) if any(run_id.startswith(w) for w in wanted)]
        count.object = (f"**{len(infos)}** of {len(everything)} runs shown. Tick one run to label, download or "
                        "delete it; several to compare them.")
        set_url(analysis=None if analysis.value == ALL else analysis.value,
                status=None if status.value == ALL else status.value,
                group=None if group.value == ALL else group.value, q=search.value)
        show_selection(rebuild=rebuild)

    def show_selection(*_: Any, rebuild: bool = False) -> None:
        ids = [runs_table.value["run"].iloc[i] for i in runs_table.selection if i < len(runs_table.value)]
        set_url(compare=",".join(ids))
        if ids == shown and not rebuild:
            return
        shown[:] = ids
        if not ids:
            detail[:] = [pn.pane.Markdown("_Tick one run to see its numbers and figures, or several to compare._")]
            return
        try:
            metrics, configs = comparison_frames(store, ids)
        except DiagError as exc:  # a corrupt run: one line naming the damaged file
            detail[:] = [pn.pane.Alert(str(exc), alert_type="danger")]
            return
        links = " · ".join(report_link(i, f"report {i}") for i in ids)
        numbers = [pn.pane.Markdown("**Headline numbers**"), table(metrics, css_classes=["compare-table"])]
        if len(ids) == 1:
            detail[:] = [pn.pane.Markdown(f"### Run `{ids[0]}`"), pn.pane.HTML(links),
                         LabelEditor(store, store.info(ids[0]), lambda keep: load(keep=keep, rebuild=False)),
                         Downloads(store, ids[0]), *numbers,
                         pn.pane.Markdown("**Configuration**"), table(configs), pn.pane.Markdown("**Figures**"),
                         stored_figures(store.get(ids[0]), width=520)]
            return
        differing = pn.Column(pn.pane.Markdown("**Configuration** (fields that differ)"),
                              table(configs, css_classes=["compare-config"]), width=440)
        detail[:] = [pn.pane.Markdown("### Comparison"), pn.pane.HTML(links),
                     pn.Row(overlay(store, ids), differing, sizing_mode="stretch_width"), *numbers]

    for widget in (analysis, status, group, search):
        widget.param.watch(load, "value")
    refresh.on_click(load)
    runs_table.param.watch(show_selection, "selection")
    load()
    sidebar = [pn.pane.Markdown("### Search and filter"), search, analysis, status, group, refresh]
    return shell.page("runs", "Runs", INTRO, [count, runs_table, detail], sidebar)
