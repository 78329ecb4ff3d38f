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
