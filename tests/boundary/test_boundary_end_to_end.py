"""End to end on the shipped vanilla policy: record episodes, run a small RA-NLD analysis, reload it, CLI codes."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from diag import contract
from diag.boundary import analysis, episodes
from diag.boundary.policy.network import QNetwork


@pytest.mark.slow
def test_record_stores_steps_and_scores_with_a_random_baseline(monkeypatch: pytest.MonkeyPatch) -> None:
    computed = []
    compute = episodes.compute
    monkeypatch.setattr(episodes, "compute", lambda *args: computed.append(1) or compute(*args))
    config = episodes.Config(episodes=2, max_steps=40, seed=0)
    _, result = contract.run(episodes.ANALYSIS, config)
    summary = result.summary()
    assert summary["episodes"] == 2 and summary["game"] == "road_runner"
    n = int(result.lengths.sum())
    assert result.steps["frames"].shape == (n, 84, 84) and result.steps["q_values"].shape == (n, 18)
    assert np.isclose(result.steps["rewards"].sum(), result.returns.sum())
    assert summary["score"]["low"] <= summary["score"]["value"] <= summary["score"]["high"]
    assert "random_score" in summary
    shares = np.bincount(result.steps["actions"]) / n  # the action histogram, checked against the raw actions
    assert summary["most_frequent_action"] == {"action": int(shares.argmax()), "share": float(shares.max())}
    assert summary["actions_above_1pct"] == int((shares >= 0.01).sum()) >= 1
    _, again = contract.run(episodes.ANALYSIS, config)  # reused from the run store, not recomputed
    assert len(computed) == 1
    np.testing.assert_array_equal(again.steps["actions"], result.steps["actions"])


@pytest.mark.slow
def test_analysis_on_two_policies_gives_quotients_in_range_and_reloads(tmp_path, monkeypatch) -> None:
    computed = []
    compute = analysis.compute
    monkeypatch.setattr(analysis, "compute", lambda *args: computed.append(1) or compute(*args))
    torch.manual_seed(0)
    fresh = tmp_path / "fresh.pt"
    torch.save({"format": "diag-qnet-v1", "game": "road_runner", "n_actions": 18,
                "state_dict": QNetwork(18).state_dict(), "meta": {}}, fresh)
    config = analysis.Config(policies=("roadrunner-vanilla", str(fresh)), episodes=2, max_steps=16,
                             conditions=("blur", "rotation", "fgsm"), attribution_states=4, ig_steps=4)
    _, result = contract.run(analysis.ANALYSIS, config)
    summary = result.summary()
    for name in config.policies:
        lambdas = summary[name]["lambda"]
        assert set(lambdas) == {"clean", "blur", "rotation", "fgsm"}
        assert all(0.0 <= v <= 1.0 + 1e-9 for v in lambdas.values())
        assert summary[name]["oscillation"]["variance"] > 0
        assert set(summary[name]["attribution_agreement"]) == set(analysis.ATTRIBUTIONS)
        g = result.policies[name].directions["clean"]
        assert g.shape == (4, 84, 84) and np.isclose(np.linalg.norm(g), 1.0, atol=1e-4)
    assert 0.0 <= summary["disjointness"]["disjointness"] <= 1.0
    _, reloaded = contract.run(analysis.ANALYSIS, config)
    assert len(computed) == 1
    assert json.dumps(reloaded.summary(), sort_keys=True) == json.dumps(summary, sort_keys=True)


def diag(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "diag.cli", "boundary", *args], check=False, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.slow
def test_cli_records_as_json_and_rejects_bad_input_with_exit_2() -> None:
    out = diag("record", "--episodes", "2", "--max-steps", "10", "--no-random-baseline", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["episodes"] == 2
    for args, needle in ((("record", "--condition", "snow"), "unknown condition"),
                         (("record", "--policy", "no-such-policy"), "unknown policy"),
                         (("analyse", "--conditions", "snow"), "unknown condition")):
        bad = diag(*args)
        assert bad.returncode == 2 and needle in bad.stderr, bad.stderr
