"""RA-NLD validation: gradients against finite differences, G_S on a policy with a known direction, Lambda(S,S)=1.

These properties hold for any weights, so they use freshly initialised networks and need no trained agent.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from diag.boundary import nld
from diag.boundary.attacks import fgsm, greedy_loss, pgd
from diag.boundary.policy.network import QNetwork


@pytest.fixture
def q_net() -> QNetwork:
    torch.manual_seed(0)
    return QNetwork(6).double().eval()


def test_batched_gradients_match_central_finite_differences(q_net: QNetwork) -> None:
    torch.manual_seed(1)
    states = torch.rand(3, 4, 84, 84, dtype=torch.float64)
    grads = nld.boundary_gradients(q_net, states, batch_size=2)  # two batches: exercises the chunking too
    actions = q_net(states).argmax(dim=1)
    h = 1e-5
    for i in range(3):
        for _ in range(3):
            u = torch.randn(1, 4, 84, 84, dtype=torch.float64)
            u /= u.norm()  # a step of length h in input space
            with torch.no_grad():
                plus = greedy_loss(q_net, states[i:i + 1] + h * u, actions[i:i + 1])
                minus = greedy_loss(q_net, states[i:i + 1] - h * u, actions[i:i + 1])
            numeric = float((plus - minus) / (2 * h))
            analytic = float((grads[i] * u[0]).sum())
            # float64 central differences: O(h^2) truncation, ~1e-11 rounding; a ReLU kink within h of the
            # input would break this, and is rare enough at h = 1e-5 on random inputs
            assert numeric == pytest.approx(analytic, rel=1e-5, abs=1e-9)


def test_batched_gradients_equal_a_per_state_loop(q_net: QNetwork) -> None:
    torch.manual_seed(2)
    states = torch.rand(5, 4, 84, 84, dtype=torch.float64)
    batched = nld.boundary_gradients(q_net, states)
    looped = torch.cat([nld.boundary_gradients(q_net, states[i:i + 1]) for i in range(5)])
    torch.testing.assert_close(batched, looped, rtol=1e-10, atol=1e-14)


def linear_softmax_policy(direction: torch.Tensor, noise: float, seed: int) -> nn.Module:
    """Q(s) = W s with every action's row = (its weight) * direction + small random parts."""
    torch.manual_seed(seed)
    d = direction.numel()
    rows = torch.tensor([3.0, -2.0, -1.0])[:, None] * direction.reshape(1, d) + noise * torch.randn(3, d) / d**0.5
    linear = nn.Linear(d, 3, bias=False)
    linear.weight.data = rows
    return nn.Sequential(nn.Flatten(), linear)


def test_principal_direction_recovers_the_known_sensitive_direction() -> None:
    torch.manual_seed(3)
    direction = torch.randn(4 * 84 * 84)
    direction /= direction.norm()
    policy = linear_softmax_policy(direction, noise=0.05, seed=4)
    states = torch.rand(200, 4, 84, 84)
    grads = nld.boundary_gradients(policy, states)
    g, lam_max = nld.principal_direction(grads)
    cosine = float(torch.dot(g, direction))
    assert abs(cosine) >= 0.99
    # lambda_max is the top eigenvalue of L(S) = V^T V: check it against the exact Gram-matrix eigenvalue
    gram = grads.reshape(200, -1).double() @ grads.reshape(200, -1).double().T
    assert lam_max == pytest.approx(float(torch.linalg.eigvalsh(gram)[-1]), rel=1e-6)


def test_lambda_is_one_on_the_same_set_and_zero_orthogonal_to_it(q_net: QNetwork) -> None:
    torch.manual_seed(5)
    grads = nld.boundary_gradients(q_net, torch.rand(40, 4, 84, 84, dtype=torch.float64))
    g, lam_max = nld.principal_direction(grads)
    assert nld.correlation_quotient(g, grads, lam_max) == pytest.approx(1.0, abs=1e-6)
    # a unit vector orthogonal to every gradient (the matrix has rank <= 40 in 28,224 dimensions)
    flat = grads.reshape(40, -1).double()
    r = torch.randn(flat.shape[1], dtype=torch.float64)
    q, _ = torch.linalg.qr(flat.T)
    orthogonal = r - q @ (q.T @ r)
    orthogonal /= orthogonal.norm()
    assert nld.correlation_quotient(orthogonal.float(), grads, lam_max) == pytest.approx(0.0, abs=1e-8)
    other = nld.boundary_gradients(q_net, torch.rand(40, 4, 84, 84, dtype=torch.float64))
    g_other, _ = nld.principal_direction(other)
    assert 0.0 <= nld.correlation_quotient(g_other, grads, lam_max) <= 1.0 + 1e-9


def test_top_k_overlap_and_spectrum() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=(4, 84, 84))
    assert nld.top_k_overlap(a, a, 0.01) == 1.0
    assert nld.top_k_overlap(a, -a, 0.01) == 1.0  # sensitivity is sign-free
    assert nld.top_k_overlap(a, rng.normal(size=a.shape), 0.05) < 0.15  # chance is 0.05
    constant = np.ones((4, 84, 84))
    spectrum = nld.fourier_spectrum(constant)
    assert spectrum.argmax() == np.ravel_multi_index((42, 42), (84, 84))  # all energy at zero frequency


def test_attacks_stay_in_the_ball_and_raise_the_greedy_loss(q_net: QNetwork) -> None:
    net = q_net.float()
    torch.manual_seed(6)
    states = torch.rand(8, 4, 84, 84)
    eps = 1 / 255
    actions = net(states).argmax(dim=1)
    clean = F.cross_entropy(net(states), actions)
    for adv in (fgsm(net, states, eps), pgd(net, states, eps, steps=5)):
        assert float((adv - states).abs().max()) <= eps + 1e-6
        assert adv.min() >= 0 and adv.max() <= 1
        noise = (states + eps * torch.randint(0, 2, states.shape).mul(2).sub(1)).clamp(0, 1)
        assert F.cross_entropy(net(adv), actions) > F.cross_entropy(net(noise), actions) > 0
        assert F.cross_entropy(net(adv), actions) > clean
    # FGSM is exactly one signed-gradient step
    grads = nld.boundary_gradients(net, states)
    expected = (states + eps * grads.sign()).clamp(0, 1)
    torch.testing.assert_close(fgsm(net, states, eps), expected)


def test_cpu_gradients_keep_their_256_frame_chunks_and_svd_leaves_the_callers_rng_alone() -> None:
    assert nld.gradient_chunk(torch.zeros(300, 4, 84, 84)) == nld.CPU_CHUNK == 256
    grads = torch.randn(8, 10)
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    nld.principal_direction(grads, seed=0)  # seeds its own randomised SVD, then restores the caller's stream
    torch.testing.assert_close(torch.rand(3), expected, rtol=0, atol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_gradients_match_the_cpu_in_one_chunk_with_tf32_off() -> None:
    """On an H200, TF32 convolutions moved v(s) by 3% (per-frame cosine 0.990); with TF32 off they agreed to 0.99997."""
    from diag.device import exact_matmul

    torch.manual_seed(0)
    net = QNetwork(18).eval()
    states = torch.rand(512, 4, 84, 84)
    on_cpu = nld.boundary_gradients(net, states)
    cuda_states = states.cuda()
    assert nld.gradient_chunk(cuda_states) >= 512  # the whole set in one backward pass
    with exact_matmul(False):
        on_gpu = nld.boundary_gradients(net.cuda(), cuda_states)
    assert on_gpu.device.type == "cuda"
    cosine = F.cosine_similarity(on_gpu.cpu().flatten(1), on_cpu.flatten(1), dim=1)
    assert float(cosine.min()) > 0.9999
