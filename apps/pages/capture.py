"""Capture page: run the reference analysis from the browser and look at per-token activation norms."""

from __future__ import annotations

from typing import Any

import pandas as pd
import panel as pn

from apps import plots, shell
from apps.launch import Launcher
from apps.views import PickedRunView, RunPicker, config_frame, metrics_frame, report_link, table
from diag import capture
from diag.report.sections import format_value
from diag.runs import RunStore

INTRO = (
    "**What are the residual-stream activations of one prompt at chosen layers, and which token comes next?** "
    "Launch a capture below (it runs on the server's worker thread; the page stays usable) or pick a stored run."
)


def result_view(store: RunStore, run_id: str) -> list[Any]:
    run = store.get(run_id)
    result = capture.Result.load(run)
    sites = run.summary["sites"]  # per-token norms, computed by the analysis
    if "token_norms" not in next(iter(sites.values()), {}):  # stored before the summary carried them
        sites = result.summary()["sites"]
    tokens = [t.replace("Ġ", "␣") for t in result.tokens]
    shapes = pd.DataFrame([{"site": k, "shape": " x ".join(map(str, s["shape"])),
                            "mean token norm": format_value(s["mean_token_norm"]),
                            "max token norm": format_value(s["max_token_norm"])} for k, s in sites.items()])
    return [
        pn.pane.Markdown(f"### Prompt: “{run.config['prompt']}”\nModel `{run.config['model']}` predicts the next "
                         f"token **`{result.next_token}`** · {report_link(run_id)}", css_classes=["capture-result"]),
        pn.pane.Bokeh(plots.heatmap([s["token_norms"] for s in sites.values()], tokens, list(sites),
                                    title="Activation norm per token and site (log colour scale)",
                                    x_label="token (position:text)", y_label="site (layer.component)",
                                    value_label="L2 norm", log=True, height=200 + 40 * len(sites))),
        pn.Row(pn.Column(pn.pane.Markdown("**Sites**"), table(shapes)),
               pn.Column(pn.pane.Markdown("**Configuration**"), table(config_frame(run.config))),
               sizing_mode="stretch_width"),
        pn.pane.Markdown("**Summary**"), table(metrics_frame(run.summary, capture.ANALYSIS.name)),
    ]


def page() -> Any:
    store = RunStore()
    picker = RunPicker(capture.ANALYSIS.name, store, describe=lambda info: info.summary.get("next_token", "").strip())
    shown = PickedRunView(picker, lambda run_id: result_view(store, run_id),
                          "No capture runs yet: launch one from the sidebar.")
    launcher = Launcher(capture.ANALYSIS, store, shown.select, title="New capture run", button="Run capture",
                        defaults=capture.Config(layers=(0, 15, 29)))
    return shell.page("capture", "Capture", INTRO, [picker, shown.view], [launcher])
