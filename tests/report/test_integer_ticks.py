"""Axes that count things (k, agent steps, token positions) tick at whole numbers only, in the stored figures and
in the app's Bokeh figures: no "k 1.5"."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from diag.contract import run
from diag.runs import RunStore
from diag.tir import analysis as tir


def visible_ticks(ax, which: str = "x") -> list[float]:
    ax.figure.canvas.draw()  # matplotlib places ticks at draw time
    low, high = getattr(ax, f"get_{which}lim")()
    return [float(t) for t in getattr(ax, f"get_{which}ticks")() if min(low, high) <= t <= max(low, high)]


def tir_run(tmp_path: Path, n: int):
    lines = [json.dumps({"problem_id": f"p{i}", "mode": mode, "sample": s, "response": "Answer: 1",
                         "correct": (i + s) % 3 == 0}) for i in range(4) for mode in ("tool", "text") for s in range(n)]
    (tmp_path / "r.jsonl").write_text("\n".join(lines) + "\n")
    store = RunStore()
    run_id, result = run(tir.ANALYSIS, tir.import_config(tmp_path / "r.jsonl", n_bootstrap=50), store=store)
    return result, store.get(run_id)


@pytest.mark.parametrize("n", [1, 2, 3, 6, 40])
def test_pass_at_k_and_split_figures_tick_k_at_whole_numbers(tmp_path: Path, n: int) -> None:
    from apps.pages.tir import curves_figure

    result, run = tir_run(tmp_path, n)
    curves = result.curves_with_ci()
    split = result.pass_curves()
    from diag.tir.metrics import four_way_split

    for fig in (result.pass_at_k_figure(curves), result.split_figure(four_way_split(*split.values()))):
        ticks = visible_ticks(fig.axes[0])
        assert ticks and all(t.is_integer() and t >= 1 for t in ticks), (n, ticks)
    ticker = curves_figure(run).xaxis[0].ticker  # the app's pass@k: BokehJS places ticks at steps >= 1
    assert ticker.min_interval >= 1 and all(float(m).is_integer() for m in ticker.mantissas)


def test_integer_x_in_the_shared_line_helper_gets_integer_ticks_and_float_x_does_not() -> None:
    import numpy as np

    from apps.plots import lines_with_bands

    series = {"a": (np.array([0.1, 0.2, 0.3]), None, None)}
    counted = lines_with_bands(np.arange(1, 4), series, title="", x_label="k", y_label="y")
    assert counted.xaxis[0].ticker.min_interval == 1
    measured = lines_with_bands(np.array([0.5, 1.0, 2.0]), series, title="", x_label="alpha", y_label="y")
    assert measured.xaxis[0].ticker.min_interval == 0  # alpha is a real number: Bokeh's default ticks
