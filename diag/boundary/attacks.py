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
    """Projected gradient ascent on the greedy-action cross-entropy (Madry et al. 2018).

    ``obs`` are floats in [0, 1], the scale the network sees, and the result is not re-quantised (a 1/255 step
    would otherwise round away). After every step the perturbation is projected onto the eps-ball intersected with
    the valid range, so ``obs + delta`` is always a real screen and no pixel's gradient is lost to clipping:
    45% of RoadRunner's pixels are black, and a random start below 0 would otherwise freeze them.
    """
    step_size = 2.5 * eps / steps if step_size is None else step_size
    with torch.no_grad():
        actions = model(obs).argmax(dim=1)
    delta = torch.empty_like(obs).uniform_(-eps, eps) if random_start else torch.zeros_like(obs)
    delta = (obs + delta).clamp(0, 1) - obs
    for _ in range(steps):
        delta.requires_grad_(True)
        (grad,) = torch.autograd.grad(greedy_loss(model, obs + delta, actions), delta)
        delta = (delta.detach() + step_size * grad.sign()).clamp(-eps, eps)
        delta = (obs + delta).clamp(0, 1) - obs
    return (obs + delta).detach()
