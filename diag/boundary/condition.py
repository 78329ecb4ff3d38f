"""Name -> observation perturbation: 'clean', a natural shift (see ``shifts``) or an attack.

'fgsm' and 'pgd' stay inside the L-infinity ball of radius eps. 'cw' (Carlini-Wagner L2) and 'deepfool' come from
ART and are unbounded minimal-L2 attacks that ignore eps: their Lambda is measured at whatever size each state's
margin needs (median L2 ~0.1 on vanilla RoadRunner; a full-sign step of eps = 1/255 has L2 0.66), not at eps.
Both cost ~0.5-1 s per agent step for 10 parallel episodes on one core (see ``attacks``).
"""

from __future__ import annotations

from functools import partial

from torch import nn

from diag.boundary.attacks import carlini_wagner, deepfool, fgsm, pgd
from diag.boundary.policy.play import Perturb
from diag.boundary.shifts import SHIFTS
from diag.errors import DiagError

ATTACKS = ("fgsm", "pgd", "cw", "deepfool")
CONDITIONS = ("clean", *SHIFTS, *ATTACKS)


def perturbation(name: str, network: nn.Module, eps: float, pgd_steps: int) -> Perturb | None:
    """The perturbation the agent's observations go through under condition ``name`` (None for clean).

    ``eps`` and ``pgd_steps`` apply to 'fgsm'/'pgd' only; 'cw' and 'deepfool' run their fixed ART budgets.
    """
    if name == "clean":
        return None
    if name in SHIFTS:
        return SHIFTS[name]
    if name == "fgsm":
        return partial(fgsm, network, eps=eps)
    if name == "pgd":
        return partial(pgd, network, eps=eps, steps=pgd_steps)
    if name == "cw":
        return partial(carlini_wagner, network)
    if name == "deepfool":
        return partial(deepfool, network)
    raise DiagError(f"unknown condition {name!r}: choose from {', '.join(CONDITIONS)}")
