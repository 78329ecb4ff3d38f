"""JSONL import: line-numbered errors, nothing half-imported, and metrics computed from imported rollouts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from diag.analysis import config_to_dict
from diag.errors import DiagError
from diag.runs import RunStore
from diag.tir import analysis
from diag.tir.importer import read_rollouts


def _line(pid: str, mode: str, sample: int, correct: bool, **extra) -> str:
    return json.dumps({"problem_id": pid, "mode": mode, "sample": sample, "response": f"Answer: {int(correct)}",
                       "correct": correct, **extra}) + "\n"


def _write(tmp_path: Path, lines: list[str]) -> Path:
    path = tmp_path / "rollouts.jsonl"
    path.write_text("".join(lines))
    return path


def _suite_lines() -> list[str]:
    """3 problems x 4 samples: p0 tool-only (expansion), p1 text-only (shrinkage), p2 both; one infra failure."""
    correct = {("p0", "tool"): [1, 0, 0, 1], ("p0", "text"): [0, 0, 0, 0],
               ("p1", "tool"): [0, 0, 0, 0], ("p1", "text"): [0, 1, 0, 0],
               ("p2", "tool"): [1, 1, 1, 1], ("p2", "text"): [1, 0, 1, 0]}
    lines = []
    for (pid, mode), flags in correct.items():
        for s, ok in enumerate(flags):
            extra = {"tool_calls": 1, "exec_statuses": ["ok"], "generated_tokens": 20, "tool_output_tokens": 5,
                     "first_call_token": 3} if mode == "tool" else {"generated_tokens": 8}
            if (pid, mode, s) == ("p1", "tool", 0):
                extra["exec_statuses"] = ["infra_error"]
            lines.append(_line(pid, mode, s, bool(ok), **extra))
    return lines


@pytest.mark.parametrize(("bad", "message"), [
    ("{not json\n", ":3: invalid JSON"),
    ('["a list"]\n', ":3: expected a JSON object"),
    (json.dumps({"problem_id": "p9", "mode": "tool", "sample": 0, "response": ""}) + "\n", ":3: missing field"),
    (_line("p9", "voice", 0, True), ":3: mode must be one of"),
    (_line("p9", "tool", 0, True, tool_calls=True), ":3: field 'tool_calls' must be int"),
    (_line("p9", "tool", -1, True), ":3: sample must be >= 0"),
    (_line("p0", "tool", 0, True), r":3: duplicate rollout \('p0', 'tool', 0\) \(first on line 1\)"),
    (_line("p9", "tool", 0, True, colour="red"), ":3: unknown field"),
    (_line("p9", "tool", 0, True, exec_statuses=["exploded"]), ":3: unknown exec status"),
])
def test_bad_lines_are_named_and_nothing_is_imported(tmp_path, bad, message):
    lines = [_line("p0", "tool", 0, True), _line("p0", "text", 0, False), bad]
    path = _write(tmp_path, lines)
    with pytest.raises(DiagError, match=message):
        read_rollouts(path)
    store = RunStore()
    with pytest.raises(DiagError, match=message):
        analysis.run(analysis.import_config(path), store=store)
    assert store.list() == [] and not any(p.is_dir() for p in store.root.iterdir())  # no half-written run


def test_problem_missing_a_mode_is_rejected(tmp_path):
    path = _write(tmp_path, [_line("p0", "tool", 0, True), _line("p0", "text", 0, True), _line("p1", "tool", 0, True)])
    with pytest.raises(DiagError, match=":3: problem 'p1' has rollouts for mode tool only"):
        read_rollouts(path)


def test_imported_metrics_support_sets_and_audit_flag(tmp_path):
    path = _write(tmp_path, _suite_lines())
    store = RunStore()
    result = analysis.run(analysis.import_config(path, n_bootstrap=200), store=store)
    summary = result.summary()
    assert summary["expansion"] == ["p0"] and summary["shrinkage"] == ["p1"]
    # pass@1 = mean of c/n: tool (2/4 + 0 + 4/4)/3 = 0.5; text (0 + 1/4 + 2/4)/3 = 0.25.
    assert summary["pass@1"]["tool"]["value"] == pytest.approx(0.5)
    assert summary["pass@1"]["text"]["value"] == pytest.approx(0.25)
    # pass@4 is the support indicator: tool solves p0, p2; text solves p1, p2.
    assert summary["pass@4"]["tool"]["value"] == pytest.approx(2 / 3)
    assert summary["split_at_k4"] == pytest.approx(
        {"expansion": 1 / 3, "shrinkage": 1 / 3, "preserved": 1 / 3, "jointly_unsolved": 0.0})
    # 1 of 12 tool executions failed in the sandbox: 8.3% > 1%, flagged in the summary and the figure titles.
    audit = summary["execution_audit"]
    assert audit["infra_errors"] == 1 and audit["infra_failure_rate"] == pytest.approx(1 / 12) and audit["flagged"]
    assert summary["warning"].startswith("FLAGGED")
    # Token cost per correct answer: tool 12 rollouts x 25 tokens / 6 correct; text 12 x 8 / 3.
    assert summary["tokens_per_correct"] == pytest.approx({"tool": 50.0, "text": 32.0})
    assert summary["tool_calls"]["calls_per_rollout"] == 1.0
    # The finished run reloads without recomputing and gives the same summary and figures.
    run = store.open(analysis.ANALYSIS, config_to_dict(analysis.import_config(path, n_bootstrap=200)))
    reloaded = analysis.Result.load(run)
    assert reloaded.summary()["expansion"] == ["p0"]
    assert {p.name for p in run.figure_paths()} == {"pass_at_k.png", "split_flow.png"}
    arrays = run.read_arrays("metrics")
    assert np.array_equal(arrays["c_tool"], [2, 0, 4])


def test_unflagged_when_sandbox_is_healthy(tmp_path):
    lines = [line.replace("infra_error", "error") for line in _suite_lines()]
    result = analysis.run(analysis.import_config(_write(tmp_path, lines)))
    assert not result.summary()["execution_audit"]["flagged"] and result.summary()["warning"] is None


def test_export_round_trip_and_partial_checkpoint(tmp_path):
    from diag.tir.problems import make_suite

    path = _write(tmp_path, _suite_lines())
    store = RunStore()
    config = analysis.import_config(path, n_bootstrap=200)
    first = analysis.run(config, store=store)
    run = store.open(analysis.ANALYSIS, config_to_dict(config))
    exported = tmp_path / "exported.jsonl"
    assert analysis.export_jsonl(run, exported) == {"rollouts": 24, "problems": 3}
    again = analysis.run(analysis.import_config(exported, n_bootstrap=200), store=store)
    assert again.summary()["pass@4"] == first.summary()["pass@4"]
    # A killed sampling run: only problems finished in both modes are exported, with their family and level.
    sampling = analysis.Config(per_cell=1)
    partial = store.open(analysis.ANALYSIS, config_to_dict(sampling))
    ids = [p.problem_id for p in make_suite(per_cell=1)]
    rows = [{"problem_id": ids[0], "mode": m, "sample": s, "response": "Answer: 1", "correct": s == 0}
            for m in ("tool", "text") for s in range(2)]
    rows.append({"problem_id": ids[1], "mode": "tool", "sample": 0, "response": "", "correct": False})
    partial.save_checkpoint({"loop_step": 3, "state": {"rollouts": rows}})
    assert analysis.export_jsonl(partial, exported) == {"rollouts": 4, "problems": 1}
    assert json.loads(exported.read_text().splitlines()[0])["family"] == "arithmetic"
