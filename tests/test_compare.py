"""diag.compare: the overlaid series are the stored numbers of each run, and what cannot be overlaid is refused."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from diag.compare import compare, legend_names
from diag.contract import run
from diag.errors import DiagError
from diag.registry import ANALYSES
from diag.runs import RunStore
from diag.tir import analysis as tir


def imported_tir(store: RunStore, tmp_path: Path, name: str, tool_ok: list[bool]) -> str:
    """A TIR import run of one problem per entry: the tool solves it as ``tool_ok`` says, text never (2 samples)."""
    lines = [json.dumps({"problem_id": f"p{i}", "mode": mode, "sample": s, "response": "Answer: 1",
                         "correct": ok if mode == "tool" else False}) + "\n"
             for i, ok in enumerate(tool_ok) for mode in ("tool", "text") for s in range(2)]
    path = tmp_path / f"{name}.jsonl"
    path.write_text("".join(lines))
    run_id, _ = run(tir.ANALYSIS, tir.import_config(path, n_bootstrap=50), store=store)
    return run_id


def test_tir_pass_at_k_curves_are_the_stored_arrays_one_series_per_run(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs")
    ids = [imported_tir(store, tmp_path, "a", [True, False]), imported_tir(store, tmp_path, "b", [True, True, True])]
    charts = {chart.quantity.title: chart for chart in compare(store, ids)}
    tool = charts["pass@k with the tool"]
    assert tool.quantity.kind == "line" and list(tool.series) == ids
    for run_id in ids:
        stored = store.get(run_id).read_arrays("metrics")
        series = tool.series[run_id]
        assert series.x == (1, 2)
        np.testing.assert_array_equal(series.y, stored["pass_tool_mean"])
        np.testing.assert_array_equal(series.low, stored["pass_tool_low"])
    assert tool.series[ids[0]].y == (0.5, 0.5) and tool.series[ids[1]].y == (1.0, 1.0)  # 1 of 2, 3 of 3 solved
    split = charts["support split at n (share of problems)"]
    assert split.quantity.kind == "bar"
    assert dict(zip(split.series[ids[0]].x, split.series[ids[0]].y, strict=True))["expansion"] == 0.5


def test_legend_names_are_label_names_else_ids_and_a_repeated_name_keeps_its_id(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs")
    ids = [imported_tir(store, tmp_path, n, ok) for n, ok in (("a", [True]), ("b", [False]), ("c", [True, True]))]
    store.label(ids[0], name="baseline")
    assert legend_names(store, ids) == {ids[0]: "baseline", ids[1]: ids[1], ids[2]: ids[2]}
    store.label(ids[1], name="baseline")
    assert legend_names(store, ids)[ids[1]] == f"baseline ({ids[1]})"


def test_runs_that_cannot_be_overlaid_are_refused_in_one_line(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs")
    one = imported_tir(store, tmp_path, "a", [True])
    with pytest.raises(DiagError, match="overlays compare 2 to 6 runs, got 1"):
        compare(store, [one])
    other = store.open("capture", {"prompt": "x"})
    other.finish({"next_token": " y"})
    with pytest.raises(DiagError, match="overlays compare runs of one analysis, got capture, tir"):
        compare(store, [one, other.run_id])
    running = store.open("tir", {"rollouts_file": "elsewhere"})
    with pytest.raises(DiagError, match=f"only finished runs .*: {running.run_id} is not"):
        compare(store, [one, running.run_id])


def test_compare_imports_no_torch() -> None:
    code = "import sys, diag.compare; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("name", sorted(ANALYSES))
def test_each_declared_comparable_reference_resolves(name: str) -> None:
    comparable = ANALYSES[name].comparable  # a "module:function" reference, imported here
    assert comparable is None or callable(comparable)


@pytest.mark.parametrize("analysis", ["cdas-planted", "no-longer-installed"])
def test_runs_of_an_analysis_declaring_no_comparable_quantities_are_refused(tmp_path: Path, analysis: str) -> None:
    store = RunStore(tmp_path / "runs")
    ids = []
    for seed in (0, 1):
        handle = store.open(analysis, {"seed": seed})
        handle.finish({})
        ids.append(handle.run_id)
    with pytest.raises(DiagError, match=f"^{analysis} runs store nothing this version knows how to overlay$"):
        compare(store, ids)
