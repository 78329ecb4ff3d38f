"""Lambda's bootstrap intervals over states: the Gram-space algebra, coverage of the point estimate, shrinking
with more states, and what a tiny real run stores, shows and flags."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diag.boundary import analysis, nld
from diag.boundary.bootstrap import QuotientBootstrap
from diag.contract import run
from diag.report.sections import read_summary


def planted(n: int, direction: torch.Tensor, seed: int) -> torch.Tensor:
    """n gradients along ``direction`` (scale ~2) plus isotropic noise (0.1 per coordinate), as [n, 1, 20, 20]."""
    g = torch.Generator().manual_seed(seed)
    rows = torch.randn(n, 1, generator=g) * 2.0 * direction + torch.randn(n, direction.numel(), generator=g) * 0.1
    return rows.reshape(n, 1, 20, 20)


BASE = torch.zeros(400)
BASE[0] = 1.0
SHIFTED = torch.zeros(400)
SHIFTED[0], SHIFTED[1] = 0.8, 0.6  # Lambda of the noiseless sets: 0.8^2 = 0.64


def point(shifted: torch.Tensor, base: torch.Tensor) -> float:
    _, lam = nld.principal_direction(base)
    return nld.correlation_quotient(nld.principal_direction(shifted)[0], base, lam)


def bootstrap(base: torch.Tensor, n_bootstrap: int) -> QuotientBootstrap:
    return QuotientBootstrap(base, nld.principal_direction(base)[0], n_bootstrap, 0)


def test_unit_weights_reproduce_lambda_from_the_randomised_svd(monkeypatch: pytest.MonkeyPatch) -> None:
    base, shifted = planted(80, BASE, 1), planted(60, SHIFTED, 2)
    monkeypatch.setattr(QuotientBootstrap, "_weights",
                        lambda self, n, seed: torch.ones(self.n_bootstrap, n, dtype=torch.float64))
    replicates = bootstrap(base, 20).replicates(shifted, nld.principal_direction(shifted)[0], 0)
    # Every "resample" is the data itself: the Gram-space formula must give nld's Lambda (float32 Gram matrices,
    # float64 eigenproblems: agreement to ~1e-6).
    np.testing.assert_allclose(replicates, point(shifted, base), rtol=1e-5)


def test_power_iteration_matches_a_full_eigendecomposition_of_each_replicate() -> None:
    base, shifted = planted(90, BASE, 3), planted(70, SHIFTED, 4)
    boot = bootstrap(base, 30)
    replicates = boot.replicates(shifted, nld.principal_direction(shifted)[0], 5)
    # The same resamples, each solved by eigh and the definition: G'* from the resampled rows, L* of the base.
    b, a = base.reshape(90, -1).double(), shifted.reshape(70, -1).double()
    for r, (w_b, w_a) in enumerate(zip(boot._weights(90, 0), boot._weights(70, 5), strict=True)):
        g = torch.linalg.eigh(a.T @ (w_a[:, None] * a))[1][:, -1]  # top eigenvector of V'^T W' V' (d x d, d=400)
        l_base = b.T @ (w_b[:, None] * b)
        expected = float(g @ l_base @ g / torch.linalg.eigvalsh(l_base)[-1])
        assert replicates[r] == pytest.approx(expected, rel=1e-5), r


def test_interval_contains_the_point_estimate_and_shrinks_with_more_states() -> None:
    widths = []
    for n in (240, 960):
        base, shifted = planted(n, BASE, 1), planted(n, SHIFTED, 2)
        low, high = bootstrap(base, 100).interval(shifted, nld.principal_direction(shifted)[0], 1)
        estimate = point(shifted, base)
        assert low <= estimate <= high, (n, low, estimate, high)
        assert low <= 0.64 <= high + 0.01, (n, low, high)  # near the noiseless value (the statistic is biased low)
        widths.append(high - low)
    # Percentile intervals of a root-n consistent statistic: 4x the states, about half the width (measured 0.49).
    assert widths[0] > 1.5 * widths[1], widths


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory):
    """Two shipped policies, 2 episodes of 6 steps per set: 12 states, far too few to read Lambda."""
    from diag.runs import RunStore

    store = RunStore(tmp_path_factory.mktemp("boundary") / "runs")
    config = analysis.Config(episodes=2, max_steps=6, conditions=("blur", "fgsm"), attribution_states=2,
                             ig_steps=2, n_bootstrap=100)
    _, result = run(analysis.ANALYSIS, config, store=store)
    (info,) = store.list(analysis=analysis.ANALYSIS.name)
    return result, store.get(info.run_id)


def test_a_tiny_run_stores_intervals_and_flags_them_as_too_small_to_read(tiny_run) -> None:
    from apps.views import metrics_frame
    from diag.report.render import render_report

    result, run = tiny_run
    summary = run.summary
    for name, policy in result.policies.items():
        assert set(summary[name]["lambda_interval"]) == set(policy.lambdas) == {"clean", "blur", "fgsm"}
        for condition, (low, high) in summary[name]["lambda_interval"].items():
            assert 0.0 <= low <= high <= 1.0 + 1e-9, (name, condition, low, high)
    reading = read_summary(analysis.GUIDE, summary)
    lambdas = [m for m in reading.headline if "Lambda" in m.name]
    assert lambdas and all(m.has_interval and m.bounds == (0.0, 1.0) for m in lambdas)
    # The rule, on the stored numbers: an interval wider than half of [0, 1].
    expected = {m.name for m in lambdas if m.high - m.low > 0.5}
    assert {m.name for m in reading.unreadable} == expected
    # The Lambda figure draws every condition's interval: with 12 states some is too wide (fgsm: ~0.7 measured).
    drawn = analysis.GUIDE.figure_metrics(summary)["lambda_table"]
    assert len(drawn) == sum(len(p.lambdas) for p in result.policies.values())
    wide = [m.name for m in drawn if m.high - m.low > 0.5]
    assert wide and reading.figure_badges == {"lambda_table": wide}
    (table, _) = reading.baselines
    assert sum(str(cell).endswith("⚠") for row in table.rows for cell in row) == len(wide)
    # Report and app mark the same metrics.
    html = render_report([run])
    assert html.count('class="badge budget"') == len(expected) + 1 + 1  # metric rows, the figure, the legend line
    frame = metrics_frame(summary, analysis.ANALYSIS.name)
    flagged = frame[frame["95% interval"].str.contains("budget too small to read")]["metric"]
    assert set(flagged) == expected


def test_stored_spectrum_is_the_clean_direction_s_and_old_runs_derive_it(tiny_run) -> None:
    result, run = tiny_run
    for i, policy in enumerate(result.policies.values()):
        np.testing.assert_allclose(policy.spectrum, nld.fourier_spectrum(policy.directions["clean"]), rtol=1e-6)
        assert "spectrum" in run.read_arrays(f"policy{i}")
    loaded = analysis.Result.load(run)
    np.testing.assert_array_equal(next(iter(loaded.policies.values())).spectrum,
                                  next(iter(result.policies.values())).spectrum)


def test_integer_axes_of_the_boundary_figures_tick_at_whole_numbers(tiny_run) -> None:
    from apps.pages.boundary import image_figure, oscillation_view

    result, run = tiny_run
    fig = result.oscillation_figure()
    fig.canvas.draw()  # matplotlib places ticks at draw time
    ax = fig.axes[0]
    low, high = ax.get_xlim()
    ticks = [t for t in ax.get_xticks() if low <= t <= high]
    assert len(ticks) >= 2 and all(float(t).is_integer() for t in ticks), ticks
    bokeh_figs = [oscillation_view(result, run.summary)[0].object, image_figure(np.zeros((84, 84)), title="", palette=["#000"],
                                                                   low=0, high=1)]
    for bokeh_fig in bokeh_figs:  # Bokeh ticks in the browser: steps of mantissa x 10^n, never below 1
        ticker = bokeh_fig.xaxis[0].ticker
        assert ticker.min_interval >= 1 and all(float(m).is_integer() for m in ticker.mantissas)
