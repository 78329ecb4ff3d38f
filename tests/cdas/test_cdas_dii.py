"""Exact invariants of the trainable DII: full basis = source, empty basis = base, reload = identical, orthonormal."""

from __future__ import annotations

import pytest
import torch

from diag.cdas.dii import RotatedSubspace, das_loss, jsd_loss, kl_loss, orthonormality_error
from diag.errors import DiagError


def test_full_rank_returns_source_and_rank_zero_returns_base() -> None:
    torch.manual_seed(0)
    base, source = torch.randn(5, 7, 12), torch.randn(5, 7, 12)
    assert torch.allclose(RotatedSubspace(12, 12, seed=1)(base, source), source, atol=1e-5)
    assert torch.equal(RotatedSubspace(12, 0)(base, source), base)


def test_partial_rank_swaps_exactly_the_subspace() -> None:
    torch.manual_seed(0)
    dii = RotatedSubspace(16, 5, seed=3)
    base, source = torch.randn(8, 16), torch.randn(8, 16)
    out = dii(base, source)
    basis = dii.basis().detach()
    # Inside the subspace the output equals the source, outside it equals the base.
    assert torch.allclose(out @ basis, source @ basis, atol=1e-5)
    complement = torch.eye(16) - basis @ basis.T
    assert torch.allclose(out @ complement, base @ complement, atol=1e-5)


def test_basis_stays_orthonormal_after_training_rank_above_one() -> None:
    torch.manual_seed(0)
    dii = RotatedSubspace(24, 6, seed=0)
    optimiser = torch.optim.Adam(dii.parameters(), lr=0.05)
    target = torch.randn(24)
    for _ in range(200):
        base, source = torch.randn(32, 24), torch.randn(32, 24)
        loss = ((dii(base, source) - target) ** 2).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    assert orthonormality_error(dii.basis()) < 1e-5


def test_reload_gives_identical_outputs(tmp_path) -> None:
    torch.manual_seed(0)
    dii = RotatedSubspace(20, 4, seed=5)
    optimiser = torch.optim.Adam(dii.parameters(), lr=0.1)
    for _ in range(20):
        loss = dii(torch.randn(4, 20), torch.randn(4, 20)).sum()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    dii.save(tmp_path / "dii.pt")
    again = RotatedSubspace.load(tmp_path / "dii.pt")
    base, source = torch.randn(9, 20), torch.randn(9, 20)
    assert torch.equal(dii(base, source), again(base, source))


def test_bad_rank_and_corrupt_file_raise_one_line(tmp_path) -> None:
    with pytest.raises(DiagError, match="rank 9 out of range"):
        RotatedSubspace(8, 9)
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(DiagError, match="corrupt"):
        RotatedSubspace.load(tmp_path / "bad.pt")


def test_objectives_vanish_on_match_and_jsd_is_bounded() -> None:
    torch.manual_seed(0)
    logits = torch.randn(6, 50)
    assert float(jsd_loss(logits, logits)) == pytest.approx(0.0, abs=1e-6)
    assert float(kl_loss(logits, logits)) == pytest.approx(0.0, abs=1e-6)
    # Disjoint one-hot-like distributions: JSD reaches its maximum ln 2.
    p, q = torch.full((1, 2), -1e4), torch.full((1, 2), -1e4)
    p[0, 0], q[0, 1] = 0.0, 0.0
    assert float(jsd_loss(p, q)) == pytest.approx(torch.log(torch.tensor(2.0)).item(), abs=1e-4)
    targets = torch.randint(0, 50, (6,))
    assert float(das_loss(logits, targets)) == pytest.approx(
        float(torch.nn.functional.cross_entropy(logits, targets)), abs=1e-6)
