"""Adversarial perturbations of ALE observations (floats in [0, 1]) against a policy's greedy action.

Both attacks maximise the softmax cross-entropy between Q(s + delta) and the clean greedy action, the loss RA-NLD
differentiates, inside an L-infinity ball of radius ``eps`` (the paper's eps = 1/255 is one grey level).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def greedy_loss(model: nn.Module, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """Summed softmax cross-entropy of Q-values against ``actions`` (a sum keeps per-state gradients separate)."""
    return F.cross_entropy(model(obs), actions, reduction="sum")


def fgsm(model: nn.Module, obs: torch.Tensor, eps: float) -> torch.Tensor:
    """One signed-gradient step of size ``eps`` away from the greedy action (Goodfellow et al. 2015)."""
    return pgd(model, obs, eps, steps=1, step_size=eps, random_start=False)


def pgd(model: nn.Module, obs: torch.Tensor, eps: float, steps: int = 10, step_size: float | None = None,
        random_start: bool = True) -> torch.Tensor:
    """Projected gradient ascent on the greedy-action cross-entropy (Madry et al. 2018), clipped to [0, 1]."""
    step_size = 2.5 * eps / steps if step_size is None else step_size
    with torch.no_grad():
        actions = model(obs).argmax(dim=1)
    delta = torch.empty_like(obs).uniform_(-eps, eps) if random_start else torch.zeros_like(obs)
    for _ in range(steps):
        delta.requires_grad_(True)
        (grad,) = torch.autograd.grad(greedy_loss(model, (obs + delta).clamp(0, 1), actions), delta)
        delta = (delta.detach() + step_size * grad.sign()).clamp(-eps, eps)
    return (obs + delta).clamp(0, 1).detach()
