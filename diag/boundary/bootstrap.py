"""Bootstrap intervals of Lambda(S', S) over resampled states, from small Gram matrices (never d x d)."""

from __future__ import annotations

import numpy as np
import torch


class QuotientBootstrap:
    """Percentile intervals of Lambda(S', S) over resampled states of both sets, without forming d x d matrices.

    A replicate draws S' and S again with replacement (multinomial counts w', w). With V' and V the stacked
    gradients, G'* is the top eigenvector of V'^T W' V', found from the n' x n' matrix D' K' D' (K' = V' V'^T,
    D' = diag(sqrt w')): eigenpair (lam', u) gives G'* = V'^T D' u / sqrt(lam'). Then
    Lambda* = ||D V G'*||^2 / lambda_max(V^T W V) = ||D C D' u||^2 / (lam' lam) with C = V V'^T. The top
    eigenpairs of all replicates come from one power iteration run on all of them at once (an n x n by n x R
    product per step), started from the full set's own direction. The baseline's resamples are drawn once and
    shared by every condition (common random numbers: differences between conditions are not blurred by
    baseline draws).
    """

    TOLERANCE = 1e-9  # largest change of any replicate's unit eigenvector entry between steps at convergence
    MAX_STEPS = 5000  # a gap lambda_2/lambda_1 of 0.99 converges in ~2000 steps

    def __init__(self, base_grads: torch.Tensor, base_direction: torch.Tensor, n_bootstrap: int, seed: int) -> None:
        self.base = base_grads.reshape(base_grads.shape[0], -1)
        self.n_bootstrap = n_bootstrap
        self.base_sqrt_w = self._weights(self.base.shape[0], seed).sqrt()
        self.base_top, _ = self._top_pairs(self.base, base_direction, self.base_sqrt_w)

    def _weights(self, n: int, seed: int) -> torch.Tensor:
        """Multinomial resample counts, [n_bootstrap, n] (drawn on the CPU: the same on every device)."""
        generator = torch.Generator().manual_seed(seed)
        draws = torch.randint(n, (self.n_bootstrap, n), generator=generator)
        counts = torch.zeros(self.n_bootstrap, n, dtype=torch.float64).scatter_add_(
            1, draws, torch.ones(self.n_bootstrap, n, dtype=torch.float64))
        return counts.to(self.base.device)

    def _top_pairs(self, rows: torch.Tensor, direction: torch.Tensor, sqrt_w: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        """Largest eigenvalue and unit eigenvector of D_r K D_r (K = rows rows^T) for every replicate r."""
        gram = (rows @ rows.T).double()
        start = (rows @ direction.to(rows)).double()  # V G: the full set's top eigenvector of K, unnormalised
        vectors = sqrt_w * start
        vectors = vectors / vectors.norm(dim=1, keepdim=True)
        for _ in range(self.MAX_STEPS):
            product = sqrt_w * ((sqrt_w * vectors) @ gram)
            values = (product * vectors).sum(dim=1)
            updated = product / product.norm(dim=1, keepdim=True)
            converged = float((updated - vectors).abs().max()) < self.TOLERANCE
            vectors = updated
            if converged:
                break
        return values, vectors

    def replicates(self, grads: torch.Tensor, direction: torch.Tensor, seed: int) -> np.ndarray:
        """Lambda(S'*, S*) for each of ``n_bootstrap`` resamples of S' (``grads``, top direction ``direction``)
        and of the baseline."""
        shifted = grads.reshape(grads.shape[0], -1)
        sqrt_w = self._weights(shifted.shape[0], seed).sqrt()
        values, vectors = self._top_pairs(shifted, direction, sqrt_w)
        cross = (self.base @ shifted.T).double()
        projected = self.base_sqrt_w * ((sqrt_w * vectors) @ cross.T)  # row r: D_r C D'_r u_r
        return ((projected * projected).sum(dim=1) / (values * self.base_top)).cpu().numpy()

    def interval(self, grads: torch.Tensor, direction: torch.Tensor, seed: int,
                 level: float = 0.95) -> tuple[float, float]:
        low, high = np.quantile(self.replicates(grads, direction, seed), [(1 - level) / 2, (1 + level) / 2])
        return float(low), float(high)
