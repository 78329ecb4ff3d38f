"""Rank-k DII training on SmolLM2: the basis stays orthonormal and a reloaded intervention acts identically."""

from __future__ import annotations

import math

import pytest
import torch

from diag import contract
from diag.cdas import train
from diag.cdas.dii import RotatedSubspace


@pytest.mark.slow
def test_train_rank2_orthonormal_and_reload_identical(smollm2, monkeypatch: pytest.MonkeyPatch) -> None:
    computed = []
    compute = train.compute
    monkeypatch.setattr(train, "compute", lambda *args: computed.append(1) or compute(*args))
    config = train.Config(concept="dogs", rank=2, steps=2, pairs_per_step=1)
    _, result = contract.run(train.ANALYSIS, config)
    assert result.orthonormality_error < 1e-5
    assert math.isfinite(result.heldout_loss_before) and math.isfinite(result.heldout_loss_after)
    assert len(result.curve) == 2
    _, reloaded = contract.run(train.ANALYSIS, config)  # finished run: loaded from disk, not recomputed
    assert len(computed) == 1

    def rebuild(state: dict) -> RotatedSubspace:
        module = RotatedSubspace(576, 2)
        module.load_state_dict({k: torch.as_tensor(v) for k, v in state.items()})
        return module

    base, source = torch.randn(3, 7, 576), torch.randn(3, 7, 576)
    assert torch.equal(rebuild(result.intervention_state)(base, source),
                       rebuild(reloaded.intervention_state)(base, source))
    assert torch.allclose(rebuild(reloaded.intervention_state).basis(), torch.as_tensor(result.basis), atol=0)
