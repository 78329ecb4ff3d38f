"""Device and seeding helpers shared by every analysis."""

from __future__ import annotations

import random

import numpy as np
import torch

from diag.errors import DiagError


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when present; anything else must be a device torch knows."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise DiagError(f"unknown device {name!r}: use auto, cpu or cuda[:N]") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DiagError(f"device {name!r} asked for but CUDA is not available on this machine")
    return device


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch so the same config and seed reproduce the same numbers on CPU."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
