"""Gradients through the probes layer match finite differences, on every backend."""

from __future__ import annotations

import pytest
import torch

from diag.zoo import load_lm
from probes import BACKENDS_AVAILABLE, Site, activation_gradient, get_backend, input_gradient, steer


@pytest.fixture(scope="module")
def tiny(tiny_llama_dir):
    model, tokenizer = load_lm(str(tiny_llama_dir), device="cpu")
    model = model.double()  # float64, so the finite difference below resolves the first-order term
    inputs = dict(tokenizer(["Gradients flow back", "to the residual"], return_tensors="pt", padding=True))
    return model, tokenizer, inputs


def _objective(trace) -> torch.Tensor:
    """A smooth scalar per example: the last position's log-probability of token 42."""
    return torch.log_softmax(trace.logits[:, -1], dim=-1)[:, 42]


@pytest.mark.parametrize("backend_name", BACKENDS_AVAILABLE)
def test_activation_gradient_matches_a_central_difference(tiny, backend_name: str) -> None:
    model, tokenizer, inputs = tiny
    backend = get_backend(backend_name, model, tokenizer)
    site = Site(1, "resid_pre")
    grad, trace = activation_gradient(backend, inputs, site, _objective)
    assert grad.shape == trace.activations[site].shape
    # Steering every position by eps * u moves the objective by eps * sum_p grad[:, p] . u to first order.
    torch.manual_seed(0)
    u = torch.nn.functional.normalize(torch.randn(model.config.hidden_size, dtype=torch.float64), dim=0)
    eps = 1e-3
    with torch.no_grad():
        up = _objective(backend.run(inputs, edits=[steer(site, u, eps)]))
        down = _objective(backend.run(inputs, edits=[steer(site, u, -eps)]))
    predicted = (grad @ u).sum(dim=1)
    # HF Llama keeps its rotary tables in float32, so the objective carries ~1e-8 noise: at eps 1e-3 the central
    # difference's truncation (O(eps^2)) and noise (1e-8 / eps) are both ~1e-5, against derivatives of order 1.
    torch.testing.assert_close((up - down) / (2 * eps), predicted, atol=1e-4, rtol=1e-4)


def test_input_gradient_gives_each_example_its_own_gradient() -> None:
    torch.manual_seed(0)
    weight = torch.randn(3, 5)
    x = torch.randn(4, 5)
    grad = input_gradient(lambda v: v @ weight.T, x, lambda out, _: (out ** 2).sum(dim=1))
    # d/dx ||W x||^2 = 2 W^T W x, per example.
    torch.testing.assert_close(grad, 2 * x @ weight.T @ weight)
