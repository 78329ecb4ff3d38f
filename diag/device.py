"""Device and seeding helpers shared by every analysis."""

from __future__ import annotations

import random
import typing

import numpy as np
import torch

from diag.contract import DtypeName
from diag.errors import DiagError
from probes.numerics import exact_matmul  # defined with the gradients that need it; diag -> probes

__all__ = ["DTYPES", "exact_matmul", "resolve_device", "resolve_dtype", "seed_everything"]


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


DTYPES: dict[str, torch.dtype] = {name: getattr(torch, name) for name in typing.get_args(DtypeName)}


def resolve_dtype(name: str) -> torch.dtype:
    """A dtype by name; an unknown one is one line listing the choices (checked before any model loads)."""
    if name not in DTYPES:
        raise DiagError(f"unknown dtype {name!r}: use one of {', '.join(DTYPES)}")
    return DTYPES[name]


def additive_mask(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A boolean attention mask as the additive one every attention implementation takes (0 where allowed, the
    dtype's minimum elsewhere): eager attention (Gemma-2's default) adds a mask to the scores, so a boolean one
    would shift them by 1 instead of hiding keys."""
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(~allowed, torch.finfo(dtype).min)


def paths_agree(fast: torch.Tensor, plain: torch.Tensor, noise: float, dtype: torch.dtype) -> bool:
    """Whether a fast path's log-probs equal plain forwards' up to rounding.

    Fast paths (a token tree, batched decoding with filler slots) are checked once against plain forwards with
    this. Rounding is measured, not guessed: ``noise`` is how far two plain computations of the same log-probs
    differ on this model in its dtype (0 to 1e-6 in float32; up to ~0.18 nats in bfloat16 on SmolLM2), and the
    fast path may differ by 4x that, or by 1e-3 (float32) / 0.05 (half types) when the plain paths happen to
    agree exactly. A path the architecture does not support (ALiBi models ignore ``position_ids``) is off by
    more: 0.01 nats on a random 2-layer MPT in float32, nats on a trained model.
    """
    floor = 1e-3 if torch.finfo(dtype).bits >= 32 else 0.05
    return float((fast.double() - plain.double()).abs().max()) <= max(floor, 4 * noise)
