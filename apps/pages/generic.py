"""The page of a registered analysis that has no page of its own: its stored runs and a form generated from its
Config, so an analysis added elsewhere (``diag.registry.register``) appears in the app without page code."""

from __future__ import annotations

from typing import Any

import panel as pn

from apps import shell
from apps.launch import Launcher
from apps.views import (
    PickedRunView,
    RunPicker,
    config_frame,
    metrics_frame,
    report_link,
    stored_figures,
    table,
)
from diag.registry import get
from diag.runs import RunStore


def result_view(store: RunStore, analysis: str, run_id: str) -> list[Any]:
    """What the run stored: its headline numbers (as the report picks them), configuration and figures."""
    run = store.get(run_id)
    return [
        pn.pane.Markdown(f"### Run `{run.run_id}` · {report_link(run_id)}"),
        pn.Row(pn.Column(pn.pane.Markdown("**Summary**"), table(metrics_frame(run.summary, analysis))),
               pn.Column(pn.pane.Markdown("**Configuration**"), table(config_frame(run.config))),
               sizing_mode="stretch_width"),
        stored_figures(run),
    ]


def page(name: str) -> Any:
    analysis = get(name)
    store = RunStore()
    picker = RunPicker(analysis.name, store)
    shown = PickedRunView(picker, lambda run_id: result_view(store, analysis.name, run_id),
                          f"No {analysis.name} runs yet: launch one from the sidebar.")
    launcher = Launcher(analysis, store, shown.select, title=f"New {analysis.name} run")
    return shell.page(shell.slug_of(analysis.name), analysis.name, f"**{analysis.description}**",
                      [picker, shown.view], [launcher])
