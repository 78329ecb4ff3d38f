"""Trainable distributed interchange intervention (DII) with a truly orthonormal basis, and its objectives.

h' = h_b + R R^T (h_s - h_b) with R (d x k) kept orthonormal by ``torch.nn.utils.parametrizations.orthogonal``
for every k, as pyvene 0.1.8 also does for its rank > 1 rotations (measured max |R^T R - I| = 1.8e-6 there).
Objectives: DAS (cross-entropy on counterfactual labels/tokens), CDAS (Jensen-Shannon to the un-intervened
counterfactual run) and KL (ablation). ``diag.cdas.trainer`` trains one on any torch module and causal variable.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrizations

from diag.errors import DiagError
from probes.edits import interchange_subspace


class RotatedSubspace(nn.Module):
    """A rank-k subspace of a width-d activation, parametrised on the Stiefel manifold (R^T R = I_k)."""

    def __init__(self, width: int, rank: int, seed: int | None = None) -> None:
        super().__init__()
        if width < 1:
            raise DiagError(f"subspace width must be positive, got {width}")
        if not 0 <= rank <= width:
            raise DiagError(f"rank {rank} out of range: the activation has width {width} (rank must be 0..{width})")
        self.width, self.rank = width, rank
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        self.proj: nn.Linear | None = None
        if rank > 0:
            linear = nn.Linear(rank, width, bias=False)  # weight: (width, rank)
            with torch.no_grad():
                linear.weight.copy_(torch.randn(width, rank, generator=generator))
            self.proj = parametrizations.orthogonal(linear, "weight")

    def basis(self) -> torch.Tensor:
        """R, shape (width, rank), orthonormal columns."""
        if self.proj is None:
            return torch.zeros(self.width, 0)
        return self.proj.weight

    def set_basis(self, basis: torch.Tensor) -> None:
        """Start from a given orthonormal basis (e.g. the DiffMean direction), through the parametrisation."""
        if self.proj is None or basis.shape != (self.width, self.rank):
            raise DiagError(f"basis of shape {tuple(basis.shape)} does not fit ({self.width}, {self.rank})")
        with torch.no_grad():
            self.proj.weight = basis.to(self.proj.weight.dtype)

    def forward(self, base: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        basis = self.basis().to(base.device, base.dtype)
        return interchange_subspace(base, source, basis)

    def save(self, path: Path) -> None:
        torch.save({"width": self.width, "rank": self.rank, "state": self.state_dict()}, path)

    @classmethod
    def load(cls, path: Path) -> RotatedSubspace:
        """Rebuild a saved intervention; raises DiagError on a missing or corrupt file."""
        try:
            saved = torch.load(path, map_location="cpu", weights_only=True)
            module = cls(int(saved["width"]), int(saved["rank"]))
            module.load_state_dict(saved["state"])
        except FileNotFoundError as exc:
            raise DiagError(f"intervention file {path} does not exist") from exc
        except (RuntimeError, KeyError, TypeError, ValueError, EOFError, pickle.UnpicklingError) as exc:
            raise DiagError(f"intervention file {path} is corrupt or of another shape: {exc}") from exc
        return module


def orthonormality_error(basis: torch.Tensor) -> float:
    """max |R^T R - I|: how far the basis is from orthonormal."""
    eye = torch.eye(basis.shape[1], dtype=basis.dtype)
    return float((basis.T @ basis - eye).detach().abs().max()) if basis.shape[1] else 0.0


def _masked_mean(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if mask is None:
        return values.mean()
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp(min=1)


def das_loss(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy of the intervened run on the counterfactual labels (or tokens)."""
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1), reduction="none")
    return _masked_mean(ce.view(targets.shape), mask)


def jsd_loss(logits: torch.Tensor, target_logits: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Jensen-Shannon divergence JSD(P, Q) = KL(P||M)/2 + KL(Q||M)/2, M = (P+Q)/2, per position, averaged."""
    logp = F.log_softmax(logits.float(), dim=-1)
    logq = F.log_softmax(target_logits.float(), dim=-1)
    logm = torch.logsumexp(torch.stack([logp, logq]), dim=0) - torch.log(torch.tensor(2.0))
    kl_pm = (logp.exp() * (logp - logm)).sum(-1)
    kl_qm = (logq.exp() * (logq - logm)).sum(-1)
    return _masked_mean(0.5 * (kl_pm + kl_qm), mask)


def kl_loss(logits: torch.Tensor, target_logits: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """KL(Q || P): the counterfactual run's distribution Q against the intervened one P (ablation of CDAS)."""
    logp = F.log_softmax(logits.float(), dim=-1)
    logq = F.log_softmax(target_logits.float(), dim=-1)
    return _masked_mean((logq.exp() * (logq - logp)).sum(-1), mask)
