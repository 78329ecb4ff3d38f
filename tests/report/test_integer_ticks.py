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


# Each stored figure whose axis counts something, drawn by its own function from small arrays of n steps (layers,
# token positions): its counted axes as [(axes, "x" or "y"), ...]. n = 3 is where matplotlib's default
# ticks fall on quarters (0, 0.25, ..., 2), n = 1 where a flat axis ticks at fractions of its margin.
def _episodes(n: int):
    import numpy as np

    from diag.boundary.episodes import Result

    steps = {"episode": np.zeros(n, int), "actions": np.zeros(n, int), "q_values": np.linspace(0, 1, 2 * n).reshape(n, 2),
             "rewards": np.eye(n)[0].astype(np.float32)}  # one point scored: "score so far" goes 1, 1, 1
    fig = Result("Pong", "clean", np.array([1.0]), np.array([n]), np.array([False]), None, steps).q_value_figure()
    ax, twin = fig.axes
    return [(ax, "x"), (twin, "y")]


def _toy_sweep(n: int):
    from diag.cdas.toy import Result

    sweep = {"das": {str(la): 0.5 + la / (2 * n) for la in range(n)}}
    fig = Result(1.0, 10, {}, {"random_basis": 0.5}, layer_sweep=sweep).sweep_figure()
    return [(fig.axes[0], "x")]


def _toy_loss(n: int):
    from diag.cdas.toy import Result

    fig = Result(1.0, 10, {}, {}, curves={"das WX": [1.0 / (s + 1) for s in range(n)]}).figure()
    return [(fig.axes[0], "x")]


def _steer_loss(n: int):
    from diag.cdas.steer_figures import loss_figure

    fig = loss_figure({"cdas": [1.0 / (s + 1) for s in range(n)]})
    return [(fig.axes[0], "x")]


def _by_layer(n: int):
    from diag.cdas import steer
    from diag.cdas.by_layer import Result

    scores = {str(la): {m: {d: 1.0 for d in steer.DIRECTIONS} for m in steer.METHODS} for la in range(n)}
    fig = Result(list(range(n)), {}, scores).figure()
    return [(ax, "x") for ax in fig.axes]


def _cdas_train(n: int):
    import numpy as np

    from diag.cdas.train import Result

    fig = Result(2.0, 1.0, 0.0, [1.0 / (s + 1) for s in range(n)], np.eye(4)[:, :1]).loss_figure()
    return [(fig.axes[0], "x")]


def _dpo(n: int):
    import numpy as np

    from diag.credit.dpo import Result

    fig = Result(Path("adapter"), np.linspace(0.7, 0.3, n), np.zeros(n), np.zeros(2), {}).loss_figure()
    return [(fig.axes[0], "x")]


def _credit_aggregates(n: int):
    from diag.credit.aggregates import figures
    from diag.credit.localisation import Item

    items = [Item(0, side, "q", "a", [f"t{t}" for t in range(n)], [0.1 * t * sign for t in range(n)], [0.0] * n,
                  [0.0] * n, [], first_diff=min(1, n - 1)) for side, sign in (("chosen", 1), ("rejected", -1))]
    out = figures(items)
    cumulative, by_position = out["cumulative_reward"], out["reward_by_position_and_type"]
    return [(cumulative.axes[0], "x"), (by_position.axes[0], "x")]


@pytest.mark.parametrize("n", [1, 2, 3, 7, 40])
@pytest.mark.parametrize("draw", [_episodes, _toy_sweep, _toy_loss, _steer_loss, _by_layer, _cdas_train, _dpo,
                                  _credit_aggregates], ids=lambda f: f.__name__.strip("_"))
def test_stored_figures_tick_counted_axes_at_whole_numbers(draw, n: int) -> None:
    import matplotlib.pyplot as plt

    try:
        for ax, which in draw(n):
            ticks = visible_ticks(ax, which)
            assert ticks and all(t.is_integer() for t in ticks), (ax.get_xlabel() or ax.get_ylabel(), ticks)
    finally:
        plt.close("all")
