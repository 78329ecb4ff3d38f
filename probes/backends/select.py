"""``get_backend``: a backend by name, its module imported only when chosen (TransformerLens, nnsight are slow)."""

from __future__ import annotations

from torch import nn

from probes.backends import BACKENDS, Backend
from probes.errors import ProbeError


def get_backend(name: str, model: nn.Module, tokenizer: object | None = None, *, remote: bool = False) -> Backend:
    """Build a backend by name over an already-loaded model (weights are shared, not copied).

    ``remote=True`` sends every operation of the backend to nnsight's remote execution (NDIF); it is checked
    here, before any work, so an offline machine fails at once with one clear line.
    """
    if remote and name != "nnsight":
        raise ProbeError(f"remote execution runs through the nnsight backend only, not {name!r}")
    if name == "torch":
        from probes.backends.hooks import TorchHooksBackend

        return TorchHooksBackend(model)
    if name == "transformer_lens":
        from probes.backends.transformer_lens import TransformerLensBackend

        return TransformerLensBackend(model, tokenizer)
    if name == "nnsight":
        from probes.backends.nnsight import NNsightBackend

        return NNsightBackend(model, tokenizer, remote=remote)
    raise ProbeError(f"unknown backend {name!r}: choose one of {', '.join(BACKENDS)}")
