"""Layer sweep of the steering study on the real SmolLM2 with a tiny budget: one cdas-steer run per layer."""

from __future__ import annotations

import pytest

from diag import contract
from diag.cdas import by_layer, steer
from diag.errors import DiagError
from diag.runs import RunStore


def test_sweep_config_rejects_empty_and_repeated_layers() -> None:
    with pytest.raises(DiagError, match="no layers given"):
        by_layer.Config(layers=())
    with pytest.raises(DiagError, match="layers repeat"):
        by_layer.Config(layers=(3, 3))
    with pytest.raises(DiagError, match="no alphas given"):
        by_layer.Config(alphas=())


@pytest.mark.slow
def test_sweep_runs_one_steer_study_per_layer(smollm2) -> None:
    config = by_layer.Config(layers=(6, 10), concepts=("dogs",), steps=1, alphas=(0.2,), eval_prompts=2,
                             max_new_tokens=4)
    _, result = contract.run(by_layer.ANALYSIS, config)
    store = RunStore()
    assert result.layers == [6, 10]
    examples = {}
    for layer in ("6", "10"):
        run = store.get(result.runs[layer])
        assert run.finished and run.config["layer"] == int(layer)
        stored = steer.Result.load(run)
        assert stored.table() == result.scores[layer]  # the sweep keeps exactly what each layer's run measured
        assert all(0.0 <= s <= 2.0 for per in result.scores[layer].values() for s in per.values())
        examples[layer] = [e["answer"] for e in stored.examples if e["method"] == "prompting"]
    # Prompting does not touch the residual: the same greedy answers at every layer.
    assert examples["6"] == examples["10"] and examples["6"]
    summary = result.summary()
    assert summary["best_layer_cdas_elicit"] in (6, 10)
    assert set(summary["cdas_suppress_by_layer"]) == {"6", "10"}
    assert contract.run(by_layer.ANALYSIS, config)[1].scores == result.scores  # finished: reused from the store


def test_sweep_rejects_out_of_range_layers_without_leaving_a_run(smollm2) -> None:
    with pytest.raises(DiagError, match=r"layer\(s\) \[30\] out of range"):
        contract.run(by_layer.ANALYSIS, by_layer.Config(layers=(3, 30), concepts=("dogs",)))
    assert RunStore().list(analysis=by_layer.ANALYSIS.name) == []


def test_clamp_target_moves_alpha_residual_norms_from_the_midpoint() -> None:
    assert steer.clamp_target(10.0, 2.0, "elicit", 0.5, 100.0) == pytest.approx(56.0)
    assert steer.clamp_target(10.0, 2.0, "suppress", 0.5, 100.0) == pytest.approx(-44.0)
