"""Adversarial perturbations of ALE observations (floats in [0, 1]) against a policy's greedy action.

``fgsm`` and ``pgd`` (ours) maximise the softmax cross-entropy between Q(s + delta) and the clean greedy action, the
loss RA-NLD differentiates, inside an L-infinity ball of radius ``eps`` (the paper's eps = 1/255 is one grey level).
``deepfool`` and ``carlini_wagner`` come from the Adversarial Robustness Toolbox (ART) and treat the Q-values as
logits; both look for a small L2 perturbation that changes the greedy action and have no eps bound.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from art.estimators.classification import PyTorchClassifier


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


class _InputGradientsOnly(nn.Module):
    """``model`` with its parameters detached: ART backpropagates once per class, and weight gradients nobody
    reads would cost ~40% of every backward pass (measured on the Nature CNN, batch of 10, one core)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        params = {name: p.detach() for name, p in self.model.named_parameters()}
        return torch.func.functional_call(self.model, params, (obs,))


def _art_classifier(model: nn.Module, obs: torch.Tensor) -> PyTorchClassifier:
    """ART's view of the Q-network: Q-values as logits, inputs clipped to [0, 1], no preprocessing.

    ART moves the module to its own device (the GPU whenever one exists), so the device is pinned to the
    observations' to leave a CPU network where it is.
    """
    from art.estimators.classification import PyTorchClassifier

    with torch.no_grad():
        nb_classes = model(obs[:1]).shape[1]
    return PyTorchClassifier(_InputGradientsOnly(model), loss=nn.CrossEntropyLoss(), input_shape=tuple(obs.shape[1:]),
                             nb_classes=nb_classes, clip_values=(0.0, 1.0), preprocessing=None,
                             device_type="cpu" if obs.device.type == "cpu" else "gpu")


def deepfool(model: nn.Module, obs: torch.Tensor, overshoot: float = 0.02, max_iter: int = 8) -> torch.Tensor:
    """DeepFool (Moosavi-Dezfooli et al. 2016) through ART: the smallest L2 step that crosses the nearest boundary.

    Unbounded: it steps to the linearised nearest boundary until the greedy action changes, then scales the total
    step by 1 + ``overshoot``, so its size is whatever each state's margin needs, not eps.
    Budget: ``max_iter`` = 8 linearisations, each one forward and one backward per action (all 18 class gradients;
    ART's top-k subset mode left most states unperturbed here). Several because ART clips to [0, 1] inside the
    loop: the half of each step that pushes black pixels below 0 is cut, so every step lands short of the boundary
    and the state approaches it geometrically (measured on the shipped vanilla policy's first 120 visited states:
    62% flipped after 5 steps, 98% after 8, 100% after 12, median L2 0.015). Cost ~2 s per 10 states on one
    shared core.
    Wider margins take more: on the robust policy's first 120 states 8 steps flip 95% at median L2 0.093, six
    times the vanilla's. Where the budget runs out the state comes back moved but not flipped, so the result is
    "8 DeepFool steps", not always an adversarial example.
    """
    from art.attacks.evasion import DeepFool

    classifier = _art_classifier(model, obs)
    attack = DeepFool(classifier, max_iter=max_iter, epsilon=overshoot, nb_grads=classifier.nb_classes,
                      batch_size=len(obs), verbose=False)
    return torch.from_numpy(attack.generate(obs.detach().cpu().numpy())).to(obs.device)


def carlini_wagner(model: nn.Module, obs: torch.Tensor, initial_const: float = 100.0, binary_search_steps: int = 1,
                   max_iter: int = 5, line_search_steps: int = 2) -> torch.Tensor:
    """Carlini-Wagner (2017) L2 through ART: minimise ||delta||_2^2 + c * max(Q_greedy - max_other Q, 0).

    L2, not L-infinity at eps: ART 1.20.1's ``CarliniLInfMethod`` has no eps bound (it searches the smallest
    L-infinity radius from 1 down) and loops over states one at a time. So the result has no size bound, only the
    [0, 1] range, and its Lambda is not at the PGD eps. Where no step succeeds ART returns the clean state.
    ART optimises in tanh space, where a pixel at exactly 0 (45% of RoadRunner's) has a vanishing derivative, so
    C&W perturbs the lit pixels only.

    Budget (~0.4 s per 10 states on one core, measured): one binary-search step (a fixed trade-off ``c``),
    5 gradient steps, 2 line-search halvings/doublings. ``c`` = 100 because Q-gaps are 0.001-0.01 while the
    crossing needs ||delta||^2 ~ 0.01: the default 0.01 only starts a doubling search that costs a full round
    per factor of 2. Measured on 60 vanilla RoadRunner states: 85% flipped, median L2 0.12; a second search step
    (0.8 s) flips 95%.
    """
    from art.attacks.evasion import CarliniL2Method

    attack = CarliniL2Method(_art_classifier(model, obs), initial_const=initial_const,
                             binary_search_steps=binary_search_steps, max_iter=max_iter, max_halving=line_search_steps,
                             max_doubling=line_search_steps, batch_size=len(obs), verbose=False)
    return torch.from_numpy(attack.generate(obs.detach().cpu().numpy())).to(obs.device)
