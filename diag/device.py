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


def same_logprobs(a: torch.Tensor, b: torch.Tensor, dtype: torch.dtype) -> bool:
    """Whether two computations of the same log-probs agree as closely as ``dtype`` allows.

    Fast paths (a token tree, batched decoding with filler slots) are checked once against plain forwards with
    this: a path an architecture does not support (ALiBi models ignore ``position_ids``) is off by far more
    than rounding (0.01 nats on a random 2-layer MPT, nats on a trained model), float32 rounding by ~1e-6.
    """
    tolerance = 1e-3 if torch.finfo(dtype).bits >= 32 else 0.25
    return bool(torch.allclose(a.double(), b.double(), atol=tolerance, rtol=0))
