"""Boundary page: RA-NLD decision-boundary instability of Atari policies, vanilla vs robust.

An episode scrubber shows each recorded frame under the stored principal unstable direction G_S of the same
policy; beside it G_S as an image with its 2-D spectrum, the Lambda table across shifts and attacks, and the
gradient-norm trace over time. Everything comes from stored ``boundary`` and ``boundary-episodes`` runs.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import panel as pn
from bokeh.models import ColumnDataSource, HoverTool, LinearColorMapper
from bokeh.palettes import Greys256, Inferno256, RdBu11
from bokeh.plotting import figure

from apps import plots, shell
from apps.launch import Launcher
from apps.views import (
    PickedRunView,
    RunPicker,
    budget_alert,
    report_link,
    set_url,
    stored_figures,
    table,
    url_ints,
)
from diag.boundary import analysis as boundary
from diag.boundary import episodes
from diag.boundary.policy.load import output_name
from diag.errors import DiagError
from diag.report.sections import format_value
from diag.runs import RunStore

INTRO = (
    "**How stable is each policy's most sensitive decision-boundary direction when screens shift or are "
    "attacked?** RA-NLD (Korkmaz, ICML 2024): v(s) is the input gradient of the cross-entropy between "
    "softmax(Q(s,·)) and the greedy action; G_S is the top eigenvector of L(S) = Σ v(s)v(s)ᵀ over a state set; "
    f"Λ compares a shifted set's G with the clean L(S): `{boundary.LAMBDA_FORMULA}`."
)


def image_figure(image: np.ndarray, *, title: str, palette: Any, low: float, high: float, size: int = 290,
                 label: str = "value") -> figure:
    """An image in pixel coordinates (row 0 at the top, as on the screen), with hover values and a colour bar."""
    h, w = image.shape
    fig = figure(title=title, width=size + 70, height=size, x_range=(0, w), y_range=(h, 0), tools="hover,save,reset",
                 tooltips=[("x", "$x{0}"), ("y", "$y{0}"), (label, "@image{0.0000}")], toolbar_location=None,
                 x_axis_label="x (pixel)", y_axis_label="y (pixel)")
    mapper = LinearColorMapper(palette=palette, low=low, high=high)
    fig.image(image=[image], x=0, y=0, dw=w, dh=h, color_mapper=mapper)
    plots.integer_axis([*fig.xaxis, *fig.yaxis])
    plots.colour_bar(fig, mapper, label)
    fig.grid.visible = False
    return fig


def direction_row(name: str, p: boundary.PolicyResult) -> pn.Row:
    """G_S (mean over the frame stack, diverging colours) and its stored log-magnitude spectrum."""
    mean = p.directions["clean"].mean(axis=0)
    bound = float(np.abs(mean).max()) or 1.0
    spectrum = p.spectrum
    return pn.Column(
        pn.pane.Markdown(f"**{name}**", margin=(0, 10)),
        pn.Row(pn.pane.Bokeh(image_figure(mean, title="G_S over clean states", palette=list(reversed(RdBu11)),
                                          low=-bound, high=bound, label="G_S")),
               pn.pane.Bokeh(image_figure(spectrum, title="log |FFT2(G_S)|, centred", palette=Inferno256,
                                          low=float(spectrum.min()), high=float(spectrum.max()),
                                          label="log magnitude"))),
    )


def lambda_frame(result: boundary.Result, summary: dict[str, Any]) -> pd.DataFrame:
    """Λ [95% bootstrap interval] and score per condition and policy, beside the paper's vanilla values."""
    names = list(result.policies)
    game = next(iter(result.policies.values())).game
    paper = boundary.PAPER_LAMBDA.get(game, {})
    conditions = list(next(iter(result.policies.values())).lambdas)
    rows = []
    for c in conditions:
        row: dict[str, Any] = {"condition": c}
        for n in names:
            metric = boundary.lambda_metric(summary, n, c)
            row[f"Λ {n}"] = boundary.lambda_cell(metric)
            row[f"score {n}"] = round(result.policies[n].scores.get(c, float("nan")), 1)
        row["paper Λ (vanilla DDQN)"] = paper.get(c, "")
        rows.append(row)
    return pd.DataFrame(rows)


def oscillation_view(result: boundary.Result, summary: dict[str, Any]) -> list[Any]:
    fig = figure(title="Gradient-norm trace over the first clean episode (normalised by its mean)", height=280,
                 sizing_mode="stretch_width", x_axis_label="agent step", y_axis_label="‖v(s_t)‖ / mean",
                 tools="pan,wheel_zoom,box_zoom,reset,save")
    plots.integer_axis(fig.xaxis)
    rows = []
    for (name, p), colour in zip(result.policies.items(), plots.PALETTE, strict=False):
        trace = p.first_episode_trace()
        fig.line(np.arange(len(trace)), trace, line_color=colour, line_width=1.5, legend_label=name)
        rows.append({"policy": name, **{k.replace("_", " "): format_value(v)
                                        for k, v in summary[name]["oscillation"].items()}})
    fig.legend.location = "top_left"
    return [pn.pane.Bokeh(fig), table(pd.DataFrame(rows))]


def action_names(n: int) -> list[str]:
    """ALE's names for the full 18-action set (the policies use it); plain indices for any other size."""
    import ale_py

    return [ale_py.Action(j).name for j in range(n)] if n == len(ale_py.Action) else [f"a{j}" for j in range(n)]


class Scrubber(pn.viewable.Viewer):
    """Step through a recorded episode: the frame, G_S over it, the Q-values and the reward at that step.

    The recorded run, episode and step live in the URL (``episodes=ID&episode=E&frame=N``): a link opens there.
    """

    def __init__(self, store: RunStore, **params: Any) -> None:
        super().__init__(**params)
        self.store = store
        self._linked_episode, self._linked_frame = url_ints("episode")[:1], url_ints("frame")[:1]
        self.picker = RunPicker(episodes.ANALYSIS.name, store, describe=self._describe, url_key="episodes")
        self.episode = pn.widgets.Select(name="Episode", options=[], width=120)
        self.step = pn.widgets.Player(name="Step", start=0, end=1, value=0, loop_policy="once", interval=150,
                                      show_value=True, show_loop_controls=False, sizing_mode="stretch_width")
        self.opacity = pn.widgets.FloatSlider(name="G_S overlay opacity", start=0, end=1, step=0.05, value=0.5,
                                              width=200)
        self.frame_source = ColumnDataSource({"image": [np.zeros((84, 84))]})
        self.overlay_source = ColumnDataSource({"image": [np.zeros((84, 84))]})
        self.q_source = ColumnDataSource({"action": [], "q": [], "colour": []})
        self.info = pn.pane.Markdown("", sizing_mode="stretch_width")
        self.note = pn.pane.Markdown("", sizing_mode="stretch_width")
        self.result: episodes.Result | None = None
        self.overlays: dict[str, np.ndarray] = {}  # policy name -> |G_S| scaled to [0, 1]
        self._build_figures()
        self.picker.select.param.watch(self._load, "value")
        self.episode.param.watch(self._episode_changed, "value")
        self.step.param.watch(self._show_step, "value")
        self.opacity.param.watch(lambda e: setattr(self.overlay_glyph.glyph, "global_alpha", e.new), "value")
        self._layout = pn.Column(
            pn.Row(self.picker, self.episode, self.opacity, sizing_mode="stretch_width"), self.step,
            pn.Row(pn.pane.Bokeh(self.frame_fig), pn.pane.Bokeh(self.q_fig), self.info, sizing_mode="stretch_width"),
            self.note, sizing_mode="stretch_width")

    @staticmethod
    def _describe(info: Any) -> str:
        s = info.summary
        score = s.get("score", {})
        return f"{s.get('game', '?')} {s.get('condition', '')}, score {score.get('value', float('nan')):.0f}"

    def __panel__(self) -> pn.Column:
        return self._layout

    def _build_figures(self) -> None:
        self.frame_fig = figure(title="Frame (newest of the stack) with |G_S| overlay", width=340, height=340,
                                x_range=(0, 84), y_range=(84, 0), toolbar_location=None,
                                x_axis_label="x (pixel)", y_axis_label="y (pixel)")
        self.frame_fig.image(image="image", x=0, y=0, dw=84, dh=84, source=self.frame_source,
                             color_mapper=LinearColorMapper(palette=Greys256, low=0, high=255))
        self.overlay_glyph = self.frame_fig.image(
            image="image", x=0, y=0, dw=84, dh=84, source=self.overlay_source, global_alpha=0.5,
            color_mapper=LinearColorMapper(palette=Inferno256, low=0, high=1, low_color=(0, 0, 0, 0)))
        self.frame_fig.grid.visible = False
        plots.integer_axis([*self.frame_fig.xaxis, *self.frame_fig.yaxis])
        self.q_fig = figure(title="Q-values at this step (red: greedy action)", height=340, width=420,
                            x_range=[], tools="", toolbar_location=None, x_axis_label="action", y_axis_label="Q(s, a)")
        self.q_fig.vbar(x="action", top="q", width=0.7, color="colour", source=self.q_source)
        self.q_fig.add_tools(HoverTool(tooltips=[("action", "@action"), ("Q", "@q{0.000}")]))
        self.q_fig.xaxis.major_label_orientation = 0.8

    def set_overlays(self, overlays: dict[str, np.ndarray]) -> None:
        """Each policy's clean |G_S| in [0, 1] (``PolicyResult.sensitivity_map``), from the selected boundary run."""
        self.overlays = overlays
        self._show_step()

    def _load(self, *_: Any) -> None:
        if self.picker.value is None:
            self.result = None
            self.info.object = "_No recorded episodes yet: record some with the sidebar's second card._"
            return
        try:
            self.result = episodes.Result.load(self.store.get(self.picker.value))
        except DiagError as exc:  # a corrupt run: the store's one line naming the damaged file
            self.result, self.info.object = None, str(exc)
            return
        if "frames" not in self.result.steps:
            self.info.object = "_This run was recorded without frames (keep_frames=false)._"
            self.result = None
            return
        output = output_name(self.result.format)  # Q-values, or an actor-critic policy's logits
        self.q_fig.title.text = f"{'Q-values' if output == 'Q' else 'Actor logits'} at this step (red: greedy action)"
        self.q_fig.yaxis.axis_label = "Q(s, a)" if output == "Q" else "logit(a | s)"
        eps = sorted(int(e) for e in np.unique(self.result.steps["episode"]))
        linked, self._linked_episode = [e for e in self._linked_episode if e in eps], []
        self.episode.options = eps
        self.episode.value = (linked or eps)[0]  # its watcher may open the episode already: at the linked frame
        self._episode_changed()
        self._linked_frame = []  # later episodes open at their first step

    def _indices(self) -> np.ndarray:
        return np.flatnonzero(self.result.steps["episode"] == self.episode.value)

    def _episode_changed(self, *_: Any) -> None:
        if self.result is None or self.episode.value is None:
            return
        n = len(self._indices())
        self.step.end = max(n - 1, 1)
        self.step.value = min(self._linked_frame[0], n - 1) if self._linked_frame else 0
        self._show_step()

    def _show_step(self, *_: Any) -> None:
        if self.result is None:
            return
        idx = self._indices()
        i = int(idx[min(self.step.value, len(idx) - 1)])
        steps = self.result.steps
        self.frame_source.data = {"image": [steps["frames"][i].astype(float)]}
        policy = self.store.get(self.picker.value, verify=False).config["policy"]  # hashes checked in _load
        overlay = self.overlays.get(policy)
        if overlay is not None:
            self.overlay_source.data = {"image": [overlay]}
            self.note.object = (f"Overlay: |G_S| of `{policy}` over its clean states (mean over the 4 stacked "
                                "frames, scaled to [0, 1]); brighter = the direction the boundary is most "
                                "sensitive to.")
        else:
            self.overlay_source.data = {"image": [np.zeros((84, 84))]}
            self.note.object = (f"_No G_S of `{policy}` in the selected boundary run: the frame is shown alone._")
        q = steps["q_values"][i]
        labels = action_names(len(q))
        greedy = int(np.argmax(q))
        self.q_fig.x_range.factors = labels
        self.q_source.data = {"action": labels, "q": q.tolist(),
                              "colour": [plots.PALETTE[1] if j == greedy else plots.PALETTE[0] for j in range(len(q))]}
        rewards = steps["rewards"][idx]
        pos = min(self.step.value, len(idx) - 1)
        set_url(episode=self.episode.value, frame=pos)
        self.info.object = (f"**Step {pos}** of {len(idx)} in episode {self.episode.value}  \n"
                            f"action taken: **{labels[int(steps['actions'][i])]}** (greedy {labels[greedy]})  \n"
                            f"reward: {float(rewards[pos]):g} · score so far: {float(rewards[:pos + 1].sum()):g}")

    def refresh(self, select: str | None = None) -> None:
        self.picker.refresh(select=select)
        self._load()


def result_view(store: RunStore, run_id: str, scrubber: Scrubber) -> list[Any]:
    run = store.get(run_id)
    result = boundary.Result.load(run)
    scrubber.set_overlays({name: p.sensitivity_map() for name, p in result.policies.items()})
    summary = run.summary
    items: list[Any] = [
        *budget_alert(boundary.ANALYSIS, summary),
        pn.pane.Markdown(f"### Principal direction G_S and its spectrum · {report_link(run_id)}"),
        pn.FlexBox(*[direction_row(name, p) for name, p in result.policies.items()]),
        pn.pane.Markdown("### Λ across shifts and attacks (1 = same principal direction as clean)\n"
                         "Λ [95% bootstrap interval over states]; ⚠ budget too small to read; score within the "
                         "step cap"),
        table(lambda_frame(result, summary), css_classes=["lambda-table"]),
        pn.pane.Bokeh(lambda_bars(summary)),
        pn.pane.Markdown("### Oscillation over time"),
        *oscillation_view(result, summary),
    ]
    if "disjointness" in summary:
        d = summary["disjointness"]
        items.append(pn.pane.Markdown(
            f"**Vanilla vs robust**: top-{d['topk_fraction']:.0%} pixel overlap of |G_S| {d['topk_overlap']:.3f} "
            f"(chance {d['chance_overlap']:.3f}), cosine(G_vanilla, G_robust) = {d['cosine_G']:.3f}."))
    items += [pn.pane.Markdown("### Stored figures (as in the report)"), stored_figures(run, width=560)]
    return items


def lambda_bars(summary: dict[str, Any]) -> figure:
    """Λ per condition and policy with its 95% bootstrap interval as a whisker."""
    from bokeh.models import FactorRange, Whisker

    names = [n for n, v in summary.items() if isinstance(v, dict) and "lambda" in v]
    conditions = list(summary[names[0]]["lambda"]) if names else []
    x = [(c, n) for c in conditions for n in names]
    metrics = [boundary.lambda_metric(summary, n, c) for c, n in x]
    source = ColumnDataSource({"x": x, "value": [m.value for m in metrics],
                               "low": [m.low if m.has_interval else m.value for m in metrics],
                               "high": [m.high if m.has_interval else m.value for m in metrics],
                               "colour": [plots.PALETTE[names.index(n)] for _, n in x]})
    fig = figure(x_range=FactorRange(*x), height=280, sizing_mode="stretch_width", y_range=(0, 1.05),
                 title="Λ(S_condition, S_clean) per policy, 95% bootstrap interval over states",
                 x_axis_label="condition / policy", y_axis_label="Λ", tools="save")
    fig.vbar(x="x", top="value", width=0.8, color="colour", source=source)
    fig.add_layout(Whisker(base="x", lower="low", upper="high", source=source, line_color="#111",
                           level="overlay"))  # over the bars: an interval may lie below its bar's top
    fig.add_tools(HoverTool(tooltips=[("condition, policy", "@x"), ("Λ", "@value{0.000}"),
                                      ("95% interval", "[@low{0.000}, @high{0.000}]")]))
    fig.xaxis.major_label_orientation = 0.8
    return fig


def page() -> Any:
    store = RunStore()
    picker = RunPicker(boundary.ANALYSIS.name, store, describe=lambda i: ", ".join(
        k for k, v in i.summary.items() if isinstance(v, dict) and "lambda" in v))
    scrubber = Scrubber(store)
    scrubber.refresh()
    shown = PickedRunView(picker, lambda run_id: result_view(store, run_id, scrubber),
                          "No boundary runs yet: launch one from the sidebar.")
    sidebar = [
        Launcher(boundary.ANALYSIS, store, shown.select, title="New RA-NLD run", button="Run boundary analysis"),
        Launcher(episodes.ANALYSIS, store, scrubber.refresh, title="Record episodes", button="Record episodes"),
    ]
    main = [pn.pane.Markdown("### Episode scrubber"), scrubber, pn.layout.Divider(), picker, shown.view]
    return shell.page("boundary", "Boundary", INTRO, main, sidebar)
