"""Name -> observation perturbation: 'clean', a natural shift (see ``shifts``) or an attack ('fgsm', 'pgd')."""

from __future__ import annotations

from functools import partial

from torch import nn

from diag.boundary.attacks import fgsm, pgd
from diag.boundary.policy.play import Perturb
from diag.boundary.shifts import SHIFTS
from diag.errors import DiagError

ATTACKS = ("fgsm", "pgd")
CONDITIONS = ("clean", *SHIFTS, *ATTACKS)


def perturbation(name: str, network: nn.Module, eps: float, pgd_steps: int) -> Perturb | None:
    """The perturbation the agent's observations go through under condition ``name`` (None for clean)."""
    if name == "clean":
        return None
    if name in SHIFTS:
        return SHIFTS[name]
    if name == "fgsm":
        return partial(fgsm, network, eps=eps)
    if name == "pgd":
        return partial(pgd, network, eps=eps, steps=pgd_steps)
    raise DiagError(f"unknown condition {name!r}: choose from {', '.join(CONDITIONS)}")
