"""CDAS page: train (or load) rank-1 steering directions and steer a chat LM with an alpha slider.

Training and the held-out evaluation are ``cdas-steer`` runs. A stored run gives, per concept and method, a
unit direction v, the mean projections m+ / m- and the residual norm rho at its layer; steering clamps
h' = h + (t - v^T h) v at the run's layer and positions (``diag.cdas.steer_edit``). The page shows the run's
stored verdict (CDAS vs DiffMean at matched fluency cost), its curves over alpha with bootstrap bands, and its
figures; a ``cdas-steer-sweep`` run (the same study at several layers) is shown as its layer plot. The live panel
asks ``diag.cdas.steer_live.steer_prompt`` for answers with and without the clamp for any prompt and alpha (new
generations, on the worker thread); everything else is read from stored results.
"""

from __future__ import annotations

import io
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import panel as pn

from apps import plots, shell
from apps.jobs import JobPanel
from apps.launch import Launcher
from apps.views import RunPicker, report_link, stored_figures, table
from diag.cdas import steer
from diag.cdas.export import FORMATS, collect, write
from diag.cdas.steer_live import steer_prompt
from diag.errors import DiagError
from diag.runs import RunStore

INTRO = (
    "**Can one rank-1 direction trained with CDAS (Jensen-Shannon distribution matching on distributed "
    "interchange interventions) steer a chat LM both ways?** Train directions for chosen concepts at one layer "
    "(sidebar), or load a stored run; then steer any prompt with the alpha slider and compare the answers with "
    "and without steering. Elicit clamps v·h to α residual norms above the midpoint of m+ and m− (mean projections "
    "on concept / neutral prompts), suppress to α residual norms below it."
)
ANSWER_CSS = """
.answer { border: 1px solid #d8dee6; border-radius: 6px; padding: 8px 12px; background: #fff; min-height: 90px; }
.answer h4 { margin: 0 0 6px 0; font-size: 13px; color: #2f5d8a; }
.answer p { white-space: pre-wrap; font-size: 14px; margin: 0; }
"""


def answer_card(title: str, text: str) -> pn.pane.HTML:
    import html

    return pn.pane.HTML(f'<div class="answer"><h4>{html.escape(title)}</h4><p>{html.escape(text)}</p></div>',
                        stylesheets=[ANSWER_CSS], sizing_mode="stretch_width")


CURVE_MEASURES = {"gain": "concept log-likelihood gain (nats/token)", "cost": "fluency cost (nats/token)",
                  "relevance_sim": "instruction relevance (cosine)", "score": "judge score (0–2)"}


def curve_figure(result: steer.Result, concept: str, direction: str, measure: str) -> Any:
    """One stored measure against α per steered method, with its 95% bootstrap band over held-out prompts."""
    points = [p for p in result.points if p["concept"] == concept and p["direction"] == direction]
    alphas = np.array(sorted({p["alpha"] for p in points if p["method"] in steer.VECTOR_METHODS}), dtype=float)
    series = {}
    for method in (*steer.VECTOR_METHODS, "prompting+cdas"):
        by_alpha = {p["alpha"]: p[measure] for p in points if p["method"] == method}
        if by_alpha and all(a in by_alpha for a in alphas):
            series[method] = tuple(np.array([by_alpha[a][k] for a in alphas]) for k in ("value", "low", "high"))
    for method in ("none", "prompting"):  # unedited references: flat lines
        ref = next((p[measure] for p in points if p["method"] == method), None)
        if ref is not None:
            series["unsteered" if method == "none" else method] = (np.full(len(alphas), ref["value"]), None, None)
    return plots.lines_with_bands(alphas, series, title=f"{concept}, {direction}: {CURVE_MEASURES[measure]}",
                                  x_label="steering factor α", y_label=CURVE_MEASURES[measure], height=280)


CURVE_TABS = {"concept gain and fluency cost": ("gain", "cost"), "relevance and judge score": ("relevance_sim", "score")}


def curve_tabs(result: steer.Result, concept: str, direction: str) -> pn.Tabs:
    """The curves over α, two per tab; a tab's figures are built when it is first shown (the page renders sooner)."""
    def row(measures: tuple[str, str]) -> pn.Row:
        return pn.Row(*[pn.pane.Bokeh(curve_figure(result, concept, direction, m)) for m in measures],
                      sizing_mode="stretch_width")

    return pn.Tabs(*[(title, pn.param.ParamFunction(lambda m=measures: row(m), lazy=True))
                     for title, measures in CURVE_TABS.items()], dynamic=True, sizing_mode="stretch_width")


def guide_tables(summary: dict[str, Any]) -> list[Any]:
    """The report's tables for this run (verdict, frontier, judge scores), read from its stored summary."""
    out = []
    for t in steer.GUIDE.baselines(summary):  # type: ignore[misc]
        out += [pn.pane.Markdown(f"**{t.title}**"),
                table(pd.DataFrame(t.rows, columns=t.columns), css_classes=["cdas-scores"])]
    return out


def examples_frame(result: steer.Result, concept: str, direction: str) -> pd.DataFrame:
    """Stored held-out generations: one row per prompt, one column per method (answer and score)."""
    rows: list[dict[str, str]] = []
    seen: dict[str, int] = {}
    for ex in result.chosen_examples():  # every method answers the same held-out pairs in the same order
        if ex["concept"] != concept or ex["direction"] != direction:
            continue
        index = seen[ex["method"]] = seen.get(ex["method"], -1) + 1
        if index == len(rows):
            rows.append({})
        if ex["method"] != "prompting":
            rows[index]["prompt"] = ex["prompt"]
        rows[index][ex["method"]] = f"{ex['answer']}  [score {ex['score']:.2f}, α={ex['alpha']:g}]"
    return pd.DataFrame(rows, columns=["prompt", *steer.METHODS]).fillna("")


def toy_view(store: RunStore) -> list[Any]:
    """The newest hierarchical-equality ground-truth run: IIA of aligned DIIs against misaligned controls."""
    from diag.cdas.config import TOY

    infos = store.list(analysis=TOY.name, status="finished")
    if not infos:
        return [pn.pane.Markdown("_No ground-truth (cdas-toy) run stored yet: `diag cdas toy` makes one._")]
    try:
        run = store.get(infos[0].run_id)
        result = TOY.result.load(run)
    except DiagError as exc:  # a corrupt run: the store's one line naming the damaged file
        return [pn.pane.Alert(str(exc), alert_type="danger")]
    summary = run.summary
    rows = []
    for objective, per_var in result.aligned.items():
        for variable in per_var:
            ci = summary[f"iia_{objective}_{variable}"]
            rows.append({"intervention": f"{objective} on {variable}", "kind": "aligned",
                         "IIA [95% Wilson CI]": f"{ci['value']:.3f} [{ci['low']:.3f}, {ci['high']:.3f}]"})
    for name in result.controls:
        ci = summary[f"control_iia_{name}"]
        rows.append({"intervention": name, "kind": "control",
                     "IIA [95% Wilson CI]": f"{ci['value']:.3f} [{ci['low']:.3f}, {ci['high']:.3f}]"})
    return [pn.pane.Markdown(f"Hierarchical equality O = (W==X) == (Y==Z), MLP accuracy {result.mlp_accuracy:.3f}, "
                             f"{result.eval_pairs} interchange pairs. Aligned DIIs should be near 1, controls near "
                             f"0.5–0.73 · {report_link(run.run_id)}"),
            table(pd.DataFrame(rows), css_classes=["toy-table"])]


def layer_sweep_view(store: RunStore) -> list[Any]:
    """The newest cdas-steer-sweep run: mean held-out score per layer, method and direction, and its plot."""
    from diag.cdas.config import BY_LAYER

    infos = store.list(analysis=BY_LAYER.name, status="finished")
    if not infos:
        return [pn.pane.Markdown("_No layer sweep (cdas-steer-sweep) run stored yet: `diag cdas sweep` makes one._")]
    try:
        run = store.get(infos[0].run_id)
        result = BY_LAYER.result.load(run)
    except DiagError as exc:  # a corrupt run: the store's one line naming the damaged file
        return [pn.pane.Alert(str(exc), alert_type="danger")]
    rows = [{"layer": layer, **{f"{m} {d}": f"{result.scores[str(layer)][m][d]:.2f}"
                                for m in steer.METHODS for d in steer.DIRECTIONS if m in result.scores[str(layer)]}}
            for layer in result.layers]
    concepts = ", ".join(run.config["concepts"])
    return [pn.pane.Markdown(f"Concepts {concepts}; {run.config['steps']} training steps and α from "
                             f"{run.config['alphas']} residual norms per layer · {report_link(run.run_id)}"),
            table(pd.DataFrame(rows), css_classes=["layer-sweep-table"]), stored_figures(run, width=760)]


class LiveSteer(pn.viewable.Viewer):
    """Prompt, method, direction and alpha -> answers with and without the clamp, generated off the UI thread."""

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.concept = pn.widgets.Select(name="Concept", options=[], width=160)
        self.method = pn.widgets.Select(name="Direction from", options=list(steer.VECTOR_METHODS), value="cdas",
                                        width=140)
        self.direction = pn.widgets.RadioButtonGroup(name="Steer", options=list(steer.DIRECTIONS), value="elicit",
                                                     button_type="default")
        self.alpha = pn.widgets.FloatSlider(name="α (clamp offset, residual norms)", start=0.0, end=1.0, step=0.05,
                                            value=0.2, sizing_mode="stretch_width")
        self.prompt = pn.widgets.TextAreaInput(name="Prompt", value="", height=70, sizing_mode="stretch_width")
        self.tokens = pn.widgets.IntInput(name="New tokens", value=32, start=4, end=256, width=110)
        self.button = pn.widgets.Button(name="Generate with and without steering", button_type="primary", width=300)
        self.job = JobPanel()
        self.answers = pn.Row(sizing_mode="stretch_width", css_classes=["steer-answers"])
        self.run_config: dict[str, Any] | None = None
        self.result: steer.Result | None = None
        self.run_id: str | None = None
        self.export_format = pn.widgets.Select(name="Export format", options=list(FORMATS), value="gguf", width=140)
        self.download = pn.widgets.FileDownload(callback=self.export_file, filename="direction.gguf",
                                                label="Export the direction", button_type="light", width=220)
        self.export_format.param.watch(lambda e: setattr(self.download, "filename", f"direction.{e.new}"), "value")
        self.button.on_click(self._generate)
        self._layout = pn.Column(
            pn.Row(self.concept, self.method, pn.Column(pn.pane.Markdown("Steer", margin=(0, 5)), self.direction),
                   self.tokens, sizing_mode="stretch_width"),
            self.alpha, self.prompt, self.button, self.job, self.answers,
            pn.Row(self.export_format, self.download), sizing_mode="stretch_width")

    def export_file(self) -> io.BytesIO:
        """The chosen concept and method's direction in the chosen format (``diag cdas export``), for download."""
        if self.run_id is None or self.concept.value is None:
            raise DiagError("load a stored cdas-steer run first")
        made = collect(RunStore().get(self.run_id), self.concept.value, self.method.value)
        with tempfile.TemporaryDirectory() as folder:
            path = write(made, self.export_format.value, Path(folder) / f"direction.{self.export_format.value}")
            return io.BytesIO(path.read_bytes())

    def __panel__(self) -> pn.Column:
        return self._layout

    def set_run(self, config: dict[str, Any], result: steer.Result) -> None:
        self.run_config, self.result = config, result
        concepts = sorted({k.split("/")[0] for k in result.vectors})
        self.concept.options = concepts
        self.concept.value = concepts[0] if concepts else None
        self.alpha.end = max(1.0, 2 * max(config["alphas"]))
        chosen = result.alphas.get(f"{self.concept.value}/{self.method.value}/{self.direction.value}")
        self.alpha.value = float(chosen) if chosen is not None else 0.2
        neutral = [ex["prompt"] for ex in result.examples if ex["direction"] == "elicit" and ex["method"] == "cdas"]
        self.prompt.value = neutral[0] if neutral else "Describe your favourite weekend."
        self.answers[:] = []

    async def _generate(self, _: Any) -> None:
        if self.result is None or self.run_config is None or self.concept.value is None:
            self.job.show_error("Load a stored cdas-steer run first (or train one from the sidebar).")
            return
        config, result, prompt, tokens = self.run_config, self.result, self.prompt.value, self.tokens.value
        concept, method, direction, alpha = (self.concept.value, self.method.value, self.direction.value,
                                             self.alpha.value)
        label = f"{direction} {concept} with {method}, α={alpha:g}"
        self.button.disabled = True
        try:
            out = await self.job.run("steer", lambda _progress: steer_prompt(
                config, result, concept, method, direction, alpha, prompt, tokens))
        finally:
            self.button.disabled = False
        if out is not None:
            self.answers[:] = [answer_card("Without steering", out.plain),
                               answer_card(f"With steering: {label} (target v·h = {out.target:.3g})", out.steered)]


LIMITATION = ("The embedded model has 135M parameters: these verdicts say what rank-1 steering does on SmolLM2-135M, "
              "not on the larger models of the CDAS paper. 'Budget too small' marks ties whose intervals are wider "
              "than the run's resolution: more held-out prompts are needed before reading them as equal.")


def _verdict_text(summary: dict[str, Any]) -> str:
    """One sentence per stored verdict, e.g. 'dogs elicit: CDAS ties DiffMean (budget too small)'."""
    who = "At least one representation method elicits" if summary["elicits_any"] else "**No** representation method elicits"
    lines = [(f"{who} a concept within the fluency budget of {summary['fluency_budget']:g} nats/token (concept "
              "log-likelihood gain with its 95% CI above 0).")]
    for concept, per_direction in summary["verdicts"].items():
        for direction, v in per_direction.items():
            if "outcome" in v:
                flag = " (budget too small)" if v["budget_too_small"] else ""
                flag += " (grid-limited)" if v.get("grid_limited") else ""
                lines.append(f"- {concept}, {direction}: CDAS vs DiffMean **{v['outcome']}**{flag}")
    return "\n".join(lines)


def page() -> Any:
    store = RunStore()
    picker = RunPicker(steer.ANALYSIS.name, store, describe=lambda i: ", ".join(i.summary.get("concepts", [])))
    live = LiveSteer()
    stored = pn.Column(sizing_mode="stretch_width")
    header = pn.pane.Markdown("", sizing_mode="stretch_width")

    loading = False  # while a run is loaded into the widgets, their watchers do not redraw (show does, once)

    def show_stored(*_: Any) -> None:
        if loading:
            return
        if live.result is None or live.concept.value is None:
            stored[:] = []
            return
        concept, direction = live.concept.value, live.direction.value
        stored[:] = [
            pn.pane.Markdown(f"**Curves over α** ({concept}, {direction}; every held-out prompt, 95% bootstrap "
                             "bands; the frontier compares methods at matched fluency cost, not at one α)"),
            curve_tabs(live.result, concept, direction),
            pn.pane.Markdown(f"**Stored held-out generations** ({concept}, {direction}; α chosen on half A, "
                             "scored by the offline judge on half B)"),
            table(examples_frame(live.result, concept, direction), layout="fit_columns",
                  formatters={m: {"type": "textarea"} for m in ("prompt", *steer.METHODS)}),
        ]

    def show(*_: Any) -> None:
        if picker.value is None:
            header.object = "_No cdas-steer runs yet: train directions from the sidebar._"
            return
        try:
            run = store.get(picker.value)
            result = steer.Result.load(run)
        except DiagError as exc:
            header.object = f"**Cannot load this run:** {exc}"
            return
        nonlocal loading
        loading = True
        try:
            live.set_run(run.config, result)
        finally:
            loading = False
        live.run_id = run.run_id
        config = run.config
        header.object = (f"Model `{config['model']}`, layer {config['layer']}, concepts "
                         f"{', '.join(config['concepts'])}; direction read at the {config['read']} position(s), "
                         f"steering {config['positions']} positions, α in units of the {config['factor']} factor · "
                         f"judge: {result.judge} · {report_link(run.run_id)}")
        summary = run.summary
        verdict[:] = [pn.pane.Markdown(_verdict_text(summary)), *guide_tables(summary),
                      pn.pane.Alert(LIMITATION, alert_type="warning")]
        figures[:] = [stored_figures(run, width=560)]
        show_stored()

    verdict = pn.Column(sizing_mode="stretch_width")
    figures = pn.Column(sizing_mode="stretch_width")

    def done(run_id: str) -> None:
        picker.refresh(select=run_id)
        show()

    picker.select.param.watch(show, "value")
    live.concept.param.watch(show_stored, "value")
    live.direction.param.watch(show_stored, "value")
    show()
    launcher = Launcher(steer.ANALYSIS, store, done, title="Train steering directions", button="Train and evaluate")
    main = [picker, header, pn.pane.Markdown("### Steer"), live,
            pn.pane.Markdown("### Held-out judge scores and the verdict: CDAS vs DiffMean at matched fluency cost"),
            verdict,
            stored,
            pn.pane.Markdown("### Stored figures (as in the report)"), figures,
            pn.pane.Markdown("### Layer sweep: held-out steering score per layer"),
            shell.after_load(lambda: pn.Column(*layer_sweep_view(store), sizing_mode="stretch_width")),
            pn.pane.Markdown("### Ground truth: does DAS/CDAS find known variables?"),
            shell.after_load(lambda: pn.Column(*toy_view(store), sizing_mode="stretch_width"))]
    return shell.page("cdas", "CDAS steering", INTRO, main, [launcher])
