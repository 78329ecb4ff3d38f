"""Gradients of a scalar objective with respect to inputs or to a site's activation."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch

from probes.backends import Backend, Trace
from probes.numerics import exact_matmul
from probes.site import Site


def input_gradient(
    forward: Callable[[torch.Tensor], torch.Tensor],
    inputs: torch.Tensor,
    objective: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    allow_tf32: bool = False,
) -> torch.Tensor:
    """d objective / d inputs for a batch, in one backward pass (TF32 off unless ``allow_tf32``).

    ``objective(outputs, inputs)`` must return per-example losses of shape [batch] (or a scalar); per-example
    terms are summed, which gives each example its own gradient because examples do not interact.
    """
    x = inputs.detach().clone().requires_grad_(True)
    with torch.enable_grad(), exact_matmul(allow_tf32):
        loss = objective(forward(x), x)
        (grad,) = torch.autograd.grad(loss.sum(), x)
    return grad


def activation_gradient(
    backend: Backend,
    inputs: Mapping[str, torch.Tensor] | torch.Tensor,
    site: Site,
    objective: Callable[[Trace], torch.Tensor],
    allow_tf32: bool = False,
) -> tuple[torch.Tensor, Trace]:
    """d objective / d activation at ``site`` (the activation as captured, positions applied; TF32 off unless
    ``allow_tf32``)."""
    with torch.enable_grad(), exact_matmul(allow_tf32):
        trace = backend.run(inputs, capture=[site], keep_graph=True)
        (grad,) = torch.autograd.grad(objective(trace).sum(), trace.activations[site])
    return grad, trace
