"""The "budget too small to read" rule: defined once (diag.report.sections), applied by the report and the app,
shown on a real tiny TIR run and absent at a readable budget."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from diag.contract import run
from diag.report.sections import UNIT, Metric, read_summary, readable, too_small_to_read
from diag.runs import RunStore
from diag.tir import analysis as tir


def test_the_rule_reads_the_width_against_the_possible_range() -> None:
    assert too_small_to_read(0.2, 0.8, UNIT)  # 60% of [0, 1]
    assert not too_small_to_read(0.25, 0.75, UNIT)  # exactly half is still read
    assert not too_small_to_read(0.7, 1.3, (0.0, 2.0))  # a judge score 0-2: 0.6 wide is 30% of its range
    assert not Metric("score", 40.0, 0.0, 900.0).unreadable  # no possible range declared: never badged
    assert not Metric("pass@1", 0.5, bounds=UNIT).unreadable  # no interval: nothing to judge
    assert Metric("pass@1", 0.5, 0.0, 1.0, bounds=UNIT).unreadable


def test_labels_are_readable_and_prose_is_left_alone() -> None:
    assert readable("control_iia_random_basis") == "control IIA random basis"
    assert readable("cdas_minus_diffmean_elicit") == "CDAS minus DiffMean elicit"
    assert readable("numerics.allow_tf32") == "numerics · allow TF32"
    assert readable("pass@1 (tool)") == "pass@1 (tool)"
    assert readable("/tmp/my_policy.pt: Lambda pgd") == "/tmp/my_policy.pt: Lambda pgd"


def test_a_dict_of_values_pairs_with_a_sibling_dict_of_intervals() -> None:
    from diag.report.sections import metrics_from_summary

    summary = {"vanilla": {"lambda": {"blur": 0.3, "pgd": 0.1}, "lambda_interval": {"blur": [0.2, 0.4]}}}
    metrics = {m.name: m for m in metrics_from_summary(summary)}
    assert metrics["vanilla.lambda.blur"] == Metric("vanilla.lambda.blur", 0.3, 0.2, 0.4)
    assert not metrics["vanilla.lambda.pgd"].has_interval  # no interval stored for it
    assert not any("lambda_interval" in name for name in metrics)  # folded into the values, not listed twice


def rollouts(path: Path, problems: int, n: int, seed: int) -> Path:
    """Imported rollouts of problems of mixed difficulty: each problem's solve rate is uniform on [0, 1] with
    the tool and on [0, 0.5] without it, as on a real suite where some problems are easy and some out of reach."""
    rng = random.Random(seed)
    rates = [(rng.random(), rng.random() / 2) for _ in range(problems)]
    lines = [json.dumps({"problem_id": f"p{i}", "mode": mode, "sample": s, "response": "Answer: 1",
                         "correct": rng.random() < rate})
             for i, pair in enumerate(rates) for mode, rate in zip(("tool", "text"), pair, strict=True)
             for s in range(n)]
    path.write_text("\n".join(lines) + "\n")
    return path


def tir_run(tmp_path: Path, problems: int, n: int):
    store = RunStore()
    config = tir.import_config(rollouts(tmp_path / f"r{problems}.jsonl", problems, n, seed=problems), n_bootstrap=400)
    run(tir.ANALYSIS, config, store=store)
    (info,) = store.list(analysis=tir.ANALYSIS.name)  # each test has its own store
    return store.get(info.run_id)


@pytest.mark.parametrize(("problems", "flagged"), [(3, True), (200, False)])
def test_report_and_app_badge_the_same_metrics_of_a_real_tir_run(tmp_path: Path, problems: int,
                                                                  flagged: bool) -> None:
    from apps.views import metrics_frame
    from diag.report.render import build_section, render_report

    run = tir_run(tmp_path, problems, n=4)
    summary = run.summary
    reading = read_summary(tir.GUIDE, summary)
    pass_metrics = [m for m in reading.headline if m.name.startswith("pass@")]
    expected = {m.name for m in pass_metrics if m.high - m.low > 0.5}
    assert {m.name for m in reading.unreadable} == expected
    assert bool(expected) is flagged, [(m.name, m.low, m.high) for m in pass_metrics]
    # 3 problems: bootstrap intervals over problems span most of [0, 1]; 200 problems: a few points wide.
    widths = [m.high - m.low for m in pass_metrics if m.value not in (0.0, 1.0)]
    assert (max(widths) > 0.5) if flagged else (max(widths) < 0.2), widths
    section = build_section(run)
    assert [f.name for f in section.figures if f.too_wide] == (["pass_at_k"] if flagged else [])
    assert any("budget too small to read" in note.lower() for note in section.limitations) is flagged
    html = render_report([run])
    assert html.count('<span class="badge budget"') == (len(expected) + 1 + 1 if flagged else 1)  # + legend line
    frame = metrics_frame(summary, tir.ANALYSIS.name)
    assert set(frame[frame["95% interval"].str.contains("budget too small to read")]["metric"]) == expected


def test_support_sets_are_counted_and_shared_alike_in_headline_table_and_app(tmp_path: Path) -> None:
    from apps.pages.tir import split_frame

    summary = tir_run(tmp_path, 3, n=4).summary
    problems, expansion = summary["problems"], len(summary["expansion"])
    headline = {m.name: m.value for m in read_summary(tir.GUIDE, summary).headline}
    share = expansion / problems
    assert headline["expansion at k = n (solved only with the tool)"] == (
        f"{expansion} of {problems} problems ({share:.1%})")
    (table,) = tir.GUIDE.baselines(summary)
    assert table.columns == ["support set", "problems (count)", "share of problems", "paper (share)"]
    rows = {row[0]: row for row in table.rows}
    assert rows["expansion"][1:3] == [expansion, pytest.approx(share)]
    assert sum(row[1] for row in table.rows) == problems
    app = split_frame(summary).set_index("support set")
    assert app.loc["expansion", "count"] == expansion and app.loc["expansion", "share"] == f"{share:.1%}"


# Summaries built by each analysis' own code from n trials (held-out pairs, eval pairs, prompts): at n = 4 every
# share's 95% interval spans most of [0, 1]; at n = 2000 it is a few points wide.
def _credit_score(n: int) -> dict:
    import numpy as np

    from diag.credit.analysis import Result
    from diag.credit.localisation import Item, localisation, localisation_tables, preference_outcomes

    rng = np.random.default_rng(n)
    span = [False, False, True, False]  # the corrupted fact is token 2, where the answers part
    items = [Item(p, side, "q", "a", list("abcd"), list(rng.normal(size=4) - (2.0 if side == "rejected" else 0) *
                                                       np.array(span)), [0.0] * 4, [0.0] * 4, span, first_diff=2)
             for p in range(n) for side in ("chosen", "rejected")]
    margins = {p: sum(items[2 * p].reward) - sum(items[2 * p + 1].reward) for p in range(n)}
    methods = ("dpo_reward", "chance")
    extra = {**preference_outcomes(np.array(list(margins.values()))), "consistency_max_abs_diff": 0.0,
             **localisation_tables(items, margins, methods, n_boot=200, seed=0)}
    return Result(items, localisation(items, methods, n_boot=200, seed=0), {}, extra).summary()


def _credit_train(n: int) -> dict:
    import numpy as np

    from diag.credit.dpo import Result

    margins = np.random.default_rng(n).normal(0.3, 1.0, size=n)  # a win where the margin is positive
    return Result(Path("adapter"), np.linspace(0.7, 0.3, 20), np.zeros(20), margins, {"beta": 0.1}).summary()


def _cdas_toy(n: int) -> dict:
    from diag.cdas.toy import Result

    return Result(1.0, n, {"das": {"wx": 0.5, "yz": 0.75}, "cdas": {"wx": 0.5, "yz": 0.5}},
                  {"random_basis": 0.5, "untrained": 0.5}).summary()


def _cdas_planted(n: int) -> dict:
    from diag.cdas.config import DIRECTIONS, VECTOR_METHODS
    from diag.stats import wilson

    return {**{f"cosine_{m}": 0.9 for m in VECTOR_METHODS},
            **{f"{method}_{direction}_fluent_success": wilson(0.5, n)
               for method in ("cdas", "das", "diffmean", "planted_d") for direction in DIRECTIONS}}


@pytest.mark.parametrize(("summarise", "analysis"), [(_credit_score, "credit"), (_credit_train, "credit-train"),
                                                     (_cdas_toy, "cdas-toy"), (_cdas_planted, "cdas-planted")],
                         ids=lambda x: getattr(x, "__name__", x))
def test_shares_of_credit_and_cdas_are_badged_when_their_budget_is_too_small(summarise, analysis: str) -> None:
    from diag.registry import get

    guide = get(analysis).guide
    tiny, readable_budget = read_summary(guide, summarise(4)), read_summary(guide, summarise(2000))
    assert tiny.unread is None and readable_budget.unread is None
    shares = [m for m in tiny.headline if m.bounds == UNIT]
    assert shares and all(m.has_interval for m in shares)
    assert tiny.unreadable and {m.name for m in tiny.unreadable} == {m.name for m in shares if m.high - m.low > 0.5}
    assert readable_budget.unreadable == []
    assert max(m.high - m.low for m in readable_budget.headline if m.bounds == UNIT) < 0.1
