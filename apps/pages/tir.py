"""TIR page: which problems does a Python tool make solvable? pass@k curves, support sets, rollout drill-down.

pass@k curves with their bootstrap bands and the per-problem counts come from the run's stored arrays; the
support sets from its stored table; the drill-down shows each stored rollout of one problem with the code the
model wrote and what the sandboxed interpreter answered.
"""

from __future__ import annotations

import html
import re
from typing import Any

import numpy as np
import pandas as pd
import panel as pn

from apps import plots, shell
from apps.launch import Launcher
from apps.views import (
    PickedRunView,
    RunPicker,
    budget_alert,
    metrics_frame,
    report_link,
    set_url,
    stored_figures,
    table,
    url_value,
)
from diag.run_dir import Run
from diag.runs import RunStore
from diag.tir import analysis as tir

INTRO = (
    "**Which problems does a Python tool make solvable?** (“Understanding Tool-Integrated Reasoning”, 2025.) "
    "The same model samples n answers per problem with a sandboxed interpreter (tool) and without (text); "
    "unbiased pass@k with 95% bootstrap bands over problems, the empirical support sets (expansion = solved only "
    "with the tool, shrinkage = only without), and every rollout with its code and tool output."
)
ROLLOUT_CSS = """
.rollout { border: 1px solid #d8dee6; border-radius: 6px; padding: 6px 10px; margin: 0 0 8px 0; background: #fff; }
.rollout.ok { border-left: 5px solid #2e8b57; } .rollout.bad { border-left: 5px solid #c0392b; }
.head { font-size: 12px; color: #3d4852; margin-bottom: 4px; }
.text { white-space: pre-wrap; font-size: 13px; }
pre { margin: 4px 0; padding: 6px 8px; border-radius: 4px; font-size: 12px; white-space: pre-wrap; }
pre.code { background: #f3f6fa; border: 1px solid #d8dee6; }
pre.out { background: #fdf6e3; border: 1px solid #eadfbf; }
.label { font-size: 11px; color: #5a6470; text-transform: uppercase; letter-spacing: 0.04em; }
"""
_SEGMENTS = re.compile(r"<code>(.*?)(?:</code>|$)|<interpreter>(.*?)(?:</interpreter>|$)", re.DOTALL)


def response_html(response: str) -> str:
    """The response with the model's code and the interpreter's output set apart from the prose."""
    parts, last = [], 0
    for match in _SEGMENTS.finditer(response):
        if match.start() > last:
            parts.append(f'<div class="text">{html.escape(response[last:match.start()].strip())}</div>')
        code, output = match.group(1), match.group(2)
        if code is not None:
            parts.append(f'<div class="label">code</div><pre class="code">{html.escape(code.strip())}</pre>')
        else:
            parts.append(f'<div class="label">tool output</div><pre class="out">{html.escape(output.strip())}</pre>')
        last = match.end()
    if last < len(response):
        parts.append(f'<div class="text">{html.escape(response[last:].strip())}</div>')
    return "".join(parts)


def rollouts_html(result: tir.Result, problem_id: str, mode: str) -> str:
    cards = []
    for r in sorted(result.rollouts_of(problem_id), key=lambda r: r.sample):
        if r.mode != mode:
            continue
        statuses = ", ".join(r.exec_statuses) or "no tool call"
        head = (f"sample {r.sample} · {'correct' if r.correct else 'wrong'} · answer {r.answer} · "
                f"{r.generated_tokens} tokens · {r.tool_calls} tool call(s): {statuses} · finish: {r.finish}")
        cards.append(f'<div class="rollout {"ok" if r.correct else "bad"}"><div class="head">{html.escape(head)}'
                     f'</div>{response_html(r.response)}</div>')
    return "".join(cards) or "<p>No rollouts of this mode.</p>"


def curves_figure(run: Run) -> Any:
    arrays = run.read_arrays("metrics")
    k = np.arange(1, len(arrays["pass_tool_mean"]) + 1)
    series = {f"{mode} (95% band)": (arrays[f"pass_{mode}_mean"], arrays[f"pass_{mode}_low"],
                                     arrays[f"pass_{mode}_high"]) for mode in ("tool", "text")}
    fig = plots.lines_with_bands(k, series, title="Unbiased pass@k, mean over problems", x_label="k (samples)",
                                 y_label="pass@k", log_x=len(k) > 8, height=340)
    fig.y_range.start, fig.y_range.end = -0.02, 1.02  # a mode that never (or always) passes stays visible
    return fig


def problems_frame(run: Run, result: tir.Result) -> pd.DataFrame:
    arrays = run.read_arrays("metrics")
    sets = run.read_json("support_sets.json")
    membership = {pid: name.replace("_", " ") for name, ids in sets.items() for pid in ids}
    rows = []
    for i, p in enumerate(result.problems):
        rows.append({"problem": p["problem_id"], "family": p.get("family", ""), "level": p.get("level", ""),
                     "tool solved": f"{arrays['c_tool'][i]}/{arrays['n_tool'][i]}",
                     "text solved": f"{arrays['c_text'][i]}/{arrays['n_text'][i]}",
                     "support set": membership.get(p["problem_id"], ""), "question": p.get("question", "")})
    return pd.DataFrame(rows)


def split_frame(summary: dict[str, Any]) -> pd.DataFrame:
    """Each support set as a count and a share of the problems at k = n, and its expected share at k = 1."""
    at_1 = summary.get("split_at_k1", {})
    return pd.DataFrame([{"support set": name.replace("_", " "), "count": tir.set_count(summary, name),
                          "share": f"{tir.split_at_n(summary)[name]:.1%}",
                          "share, k=1": f"{at_1.get(name, 0):.1%}"} for name in tir.SUPPORT_SETS])


class DrillDown(pn.viewable.Viewer):
    """Problem table -> one problem's rollouts, tool mode and text mode side by side.

    The problem shown lives in the URL as ``problem=ID``: a link opens on it (if the run has it).
    """

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self._linked = url_value("problem")
        self.table = table(pd.DataFrame(), selectable=1, pagination="local", page_size=10, layout="fit_columns",
                           formatters={"question": {"type": "textarea"}}, css_classes=["problems-table"],
                           widths={"problem": 160, "family": 120, "level": 75, "tool solved": 115,
                                   "text solved": 115, "support set": 140})
        self.title = pn.pane.Markdown("", sizing_mode="stretch_width")
        self.tool = pn.pane.HTML("", stylesheets=[ROLLOUT_CSS], sizing_mode="stretch_width",
                                 css_classes=["rollouts-tool"])
        self.text = pn.pane.HTML("", stylesheets=[ROLLOUT_CSS], sizing_mode="stretch_width")
        self.result: tir.Result | None = None
        self.table.param.watch(self._show, "selection")
        self._layout = pn.Column(
            self.table, self.title,
            pn.Row(pn.Column(pn.pane.Markdown("**With the tool**"), self.tool, sizing_mode="stretch_width"),
                   pn.Column(pn.pane.Markdown("**Text only**"), self.text, sizing_mode="stretch_width"),
                   sizing_mode="stretch_width"),
            sizing_mode="stretch_width")

    def __panel__(self) -> pn.Column:
        return self._layout

    def set_run(self, run: Run, result: tir.Result) -> None:
        self.result = result
        frame = problems_frame(run, result)
        self.table.value = frame
        # Open on the linked problem, else the most telling one: solved with the tool and not without, else the first.
        linked = frame.index[frame["problem"] == self._linked].tolist() if len(frame) else []
        expansion = frame.index[frame["support set"] == "expansion"].tolist() if len(frame) else []
        self._linked = None
        first = (linked or expansion or [0])[0]
        self.table.page = first // self.table.page_size + 1
        self.table.selection = [first] if len(frame) else []
        self._show()

    def _show(self, *_: Any) -> None:
        if self.result is None or not self.table.selection:
            return
        row = self.table.value.iloc[self.table.selection[0]]
        pid = row["problem"]
        set_url(problem=pid)
        answer = next((p.get("answer") for p in self.result.problems if p["problem_id"] == pid), None)
        self.title.object = (f"### Problem `{pid}` ({row['support set']})\n{row['question']}  \n"
                             f"Expected answer: **{answer}** · tool solved {row['tool solved']}, "
                             f"text solved {row['text solved']}")
        self.tool.object = rollouts_html(self.result, pid, "tool")
        self.text.object = rollouts_html(self.result, pid, "text")


def page() -> Any:
    store = RunStore()
    picker = RunPicker(tir.ANALYSIS.name, store, describe=lambda i: f"{i.summary.get('problems', '?')} problems, "
                       f"n={tir.n_label(i.summary)}")
    drill = DrillDown()

    def render(run_id: str) -> list[Any]:
        run = store.get(run_id)
        result = tir.Result.load(run)
        summary = run.summary
        items: list[Any] = [*budget_alert(tir.ANALYSIS, summary)]
        if summary.get("warning"):
            items.append(pn.pane.Alert(summary["warning"], alert_type="warning"))
        items += [
            pn.pane.Markdown(f"Source: {summary['source'].get('kind', '?')} "
                             f"`{summary['source'].get('model') or summary['source'].get('file', '')}` · "
                             f"{summary['problems']} problems × samples per mode: {tir.n_label(summary)}"
                             f" · sandbox: {summary['source'].get('isolation', 'n/a')} · "
                             f"{report_link(run.run_id)}"),
            pn.Row(pn.pane.Bokeh(curves_figure(run), sizing_mode="stretch_width"),
                   pn.Column(pn.pane.Markdown(f"**Support sets** of the {summary['problems']} problems: count and "
                                              "share at k = n (all samples), expected share at k = 1"),
                             table(split_frame(summary), css_classes=["split-table"]), width=440),
                   sizing_mode="stretch_width"),
            pn.pane.Markdown("### Headline numbers"), table(metrics_frame(summary, tir.ANALYSIS.name)),
            pn.pane.Markdown("### Problems: pick one to read its rollouts"), drill,
            pn.pane.Markdown("### Stored figures (as in the report)"), stored_figures(run, width=520),
        ]
        drill.set_run(run, result)
        return items

    shown = PickedRunView(picker, render, "No TIR runs yet: launch one from the sidebar.")
    launcher = Launcher(tir.ANALYSIS, store, shown.select, title="New TIR run", button="Sample rollouts")
    return shell.page("tir", "TIR", INTRO, [picker, shown.view], [launcher])
