"""RA-NLD (Korkmaz, ICML 2024): the most unstable decision-boundary direction of a policy over a set of states.

For each state s, v(s) is the gradient with respect to the observation of the softmax cross-entropy between
softmax(Q(s, .)) and the one-hot greedy action. Over a state set S, L(S) = sum_s v(s) v(s)^T and the principal
direction G_S is its top eigenvector, which is the top right singular vector of the stacked n x d gradient
matrix V (rows v(s)), so it is found by randomised SVD without ever forming the d x d matrix.

Feature Correlation Quotient used here:

    Lambda(S', S) = G_{S'}^T L(S) G_{S'} / lambda_max(L(S)) = ||V_S G_{S'}||^2 / sigma_1(V_S)^2,

which lies in [0, 1] (Rayleigh quotient of a unit vector), equals 1 when S' = S, and is near 0 when the shifted
states' principal direction lies in directions the baseline states are insensitive to.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from probes import input_gradient

CPU_CHUNK = 256  # frames per backward pass on the CPU: bigger batches gained nothing on 2 cores


def gradient_chunk(obs: torch.Tensor) -> int:
    """Frames per backward pass: ``CPU_CHUNK`` on the CPU; on CUDA as many as half the free memory holds.

    On an H200, 256-frame chunks made the batched gradients 1.79x a bare forward+backward at 512 frames (launches
    and small-batch kernels, for no memory need). ``32 * numel`` bytes per frame (~0.9 MB for 4x84x84) is about
    1.6x what the Nature CNN's forward and backward keep per frame, so a whole episode set fits in one pass.
    """
    if obs.device.type != "cuda":
        return CPU_CHUNK
    free, _ = torch.cuda.mem_get_info(obs.device)
    return max(CPU_CHUNK, int(0.5 * free / (32 * obs[0].numel())))


def boundary_gradients(model: nn.Module, obs: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
    """Per-state gradients v(s), ``[n, *obs.shape[1:]]`` on ``obs``' device, with one backward pass per chunk.

    The loss of state i depends only on input i, so the gradient of the batch sum with respect to the batch is
    exactly the stack of per-state gradients: no per-sample machinery is needed. ``batch_size`` defaults to
    ``gradient_chunk``. Callers on CUDA run this inside ``diag.device.exact_matmul`` (TF32 moves v(s) by 3%).
    """

    def greedy_cross_entropy(q_values: torch.Tensor, _: torch.Tensor) -> torch.Tensor:
        # One forward serves both the greedy action and the loss.
        return F.cross_entropy(q_values, q_values.argmax(dim=1), reduction="none")

    chunks = obs.split(batch_size or gradient_chunk(obs))
    grads = [input_gradient(model, chunk, greedy_cross_entropy) for chunk in chunks]
    return grads[0] if len(grads) == 1 else torch.cat(grads)


def principal_direction(grads: torch.Tensor, seed: int = 0, rank: int = 6, iters: int = 6) -> tuple[
        torch.Tensor, float]:
    """(G_S as a unit vector of length d, lambda_max(L(S)) = sigma_1^2) by randomised SVD of the n x d matrix.

    The sign of an eigenvector is arbitrary; it is fixed so that the largest-magnitude entry is positive.
    """
    matrix = grads.reshape(grads.shape[0], -1).double()
    with torch.random.fork_rng(devices=[matrix.device] if matrix.is_cuda else []):  # callers' streams untouched
        torch.manual_seed(seed)
        _, singular, right = torch.svd_lowrank(matrix, q=min(rank, *matrix.shape), niter=iters)
    direction = right[:, 0]
    direction = direction * torch.sign(direction[direction.abs().argmax()])
    return direction.float(), float(singular[0] ** 2)


def correlation_quotient(direction: torch.Tensor, base_grads: torch.Tensor, base_lambda_max: float) -> float:
    """Lambda(S', S) = G'^T L(S) G' / lambda_max(L(S)), computed as ||V_S G'||^2 / sigma_1^2."""
    projected = base_grads.reshape(base_grads.shape[0], -1).double() @ direction.double()
    return float((projected @ projected) / base_lambda_max)


def gradient_norm_trace(grads: torch.Tensor) -> np.ndarray:
    """||v(s_t)||_2 for each state in visiting order: how close the boundary is, over time."""
    return grads.reshape(grads.shape[0], -1).norm(dim=1).cpu().numpy()


def fourier_spectrum(direction_image: np.ndarray) -> np.ndarray:
    """Log-magnitude 2-D Fourier spectrum (zero frequency centred) of G_S averaged over the frame stack."""
    image = direction_image.reshape(-1, *direction_image.shape[-2:]).mean(axis=0)
    return np.log1p(np.abs(np.fft.fftshift(np.fft.fft2(image))))


def top_k_overlap(a: np.ndarray, b: np.ndarray, fraction: float) -> float:
    """|top-k(|a|) intersect top-k(|b|)| / k for the k = fraction * d most sensitive pixels (1 - disjointness)."""
    k = max(1, round(fraction * a.size))
    top_a = np.argpartition(-np.abs(a).ravel(), k - 1)[:k]
    top_b = np.argpartition(-np.abs(b).ravel(), k - 1)[:k]
    return len(np.intersect1d(top_a, top_b)) / k
