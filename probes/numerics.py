"""Numerics switches for gradients: TF32 off unless asked for (probes' gradients and every analysis use this)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


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
