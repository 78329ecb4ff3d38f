"""Capture page: run the reference analysis from the browser and look at per-token activation norms."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import panel as pn

from apps import plots, shell
from apps.launch import Launcher
from apps.views import PickedRunView, RunPicker, config_frame, metrics_frame, report_link, table
from diag import capture
from diag.runs import RunStore

INTRO = (
    "**What are the residual-stream activations of one prompt at chosen layers, and which token comes next?** "
    "Launch a capture below (it runs on the server's worker thread; the page stays usable) or pick a stored run."
)


def result_view(store: RunStore, run_id: str) -> list[Any]:
    run = store.get(run_id)
    result = capture.Result.load(run)
    layers = list(result.activations)
    norms = np.stack([np.linalg.norm(result.activations[k], axis=-1) for k in layers])  # [sites, tokens]
    tokens = [t.replace("Ġ", "␣") for t in result.tokens]
    shapes = pd.DataFrame([{"site": k, "shape": " x ".join(map(str, a.shape)),
                            "mean token norm": f"{np.linalg.norm(a, axis=-1).mean():.4g}",
                            "max token norm": f"{np.linalg.norm(a, axis=-1).max():.4g}"}
                           for k, a in result.activations.items()])
    return [
        pn.pane.Markdown(f"### Prompt: “{run.config['prompt']}”\nModel `{run.config['model']}` predicts the next "
                         f"token **`{result.next_token}`** · {report_link(run_id)}", css_classes=["capture-result"]),
        pn.pane.Bokeh(plots.heatmap(norms, tokens, layers, title="Activation norm per token and site",
                                    x_label="token (position:text)", y_label="site (layer.component)",
                                    value_label="L2 norm", height=200 + 40 * len(layers))),
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
