"""Ground truth for the DII trainer: aligned variables reach high IIA, misaligned controls stay near chance."""

from __future__ import annotations

import subprocess
import sys

import pytest

from diag import contract
from diag.cdas import toy
from diag.errors import DiagError


def test_toy_aligned_beats_controls_and_reloads(monkeypatch: pytest.MonkeyPatch) -> None:
    computed = []
    compute = toy.compute
    monkeypatch.setattr(toy, "compute", lambda *args: computed.append(1) or compute(*args))
    # Half the CLI's DII budget, no layer sweep (the CLI default reaches aligned IIA ~0.98, controls <= 0.59).
    config = toy.Config(dii_steps=300, eval_pairs=1000, sweep_layers=(0,))
    _, result = contract.run(toy.ANALYSIS, config)
    summary = result.summary()
    assert summary["mlp_accuracy"] >= 0.97
    # The bars. Seeded, so the values are fixed on CPU; 1000 held-out pairs give a 95% half-width ~0.01
    # at IIA 0.97 and ~0.03 at 0.6.
    assert summary["aligned_iia_min"] >= 0.95, summary
    assert summary["control_iia_max"] <= 0.75, summary
    _, again = contract.run(toy.ANALYSIS, config)  # reuses the finished run: loaded, not recomputed
    assert len(computed) == 1
    assert again.summary() == summary
    assert set(again.bases) == set(result.bases)


def test_toy_rejects_bad_config() -> None:
    with pytest.raises(DiagError, match="rank 17 out of range"):
        toy.Config(rank=17)
    with pytest.raises(DiagError, match="layer 3 out of range"):
        toy.Config(layer=3)


@pytest.mark.parametrize("args", [["cdas", "toy", "--rank", "40"], ["cdas", "toy", "--objectives", "mse"]])
def test_cli_bad_input_exits_2_with_one_line(args: list[str]) -> None:
    proc = subprocess.run([sys.executable, "-m", "diag.cli", *args, "--json"], capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and proc.stderr.startswith("error:")
