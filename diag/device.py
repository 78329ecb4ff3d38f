"""Device and seeding helpers shared by every analysis."""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator

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


DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_dtype(name: str) -> torch.dtype:
    """A dtype by name; an unknown one is one line listing the choices (checked before any model loads)."""
    if name not in DTYPES:
        raise DiagError(f"unknown dtype {name!r}: use one of {', '.join(DTYPES)}")
    return DTYPES[name]


@contextlib.contextmanager
def exact_matmul(allow_tf32: bool = False) -> Iterator[None]:
    """Run gradients, attributions and DII training without TF32 unless the config allows it.

    On an H200, cuDNN's default TF32 convolutions moved RA-NLD gradients by 3% of their maximum (batched vs
    per-frame cosine 0.990); with TF32 off they agree to 5e-7. A no-op on CPU, where TF32 does not exist.
    """
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = allow_tf32
    torch.backends.cudnn.allow_tf32 = allow_tf32
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
