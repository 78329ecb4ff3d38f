"""The steering edit of ``cdas-steer``: clamp one direction's projection to a target, at chosen positions.

h' = h + (t - v^T h) v sets v^T h to t and leaves every other component of h alone. The target moves alpha
units from the midpoint c = (m+ + m-)/2 of the mean projections on concept / neutral prompts: up to elicit,
down to suppress. The unit is either the mean residual norm rho at the layer (``factor="norm"``: one alpha is
the same edit strength for every method's unit vector) or half the direction's own separation (m+ - m-)/2
(``factor="data"``: alpha = 1 clamps to m+ / m- exactly, the factor read from data).

Positions: ``"all"`` edits every position after BOS (prompt and answer); ``"generated"`` only the positions that
predict answer tokens (the last prompt token, where the direction is read, and every generated one).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from diag.cdas.config import Factor


def alpha_unit(factor: Factor, m_plus: float, m_minus: float, residual_norm: float) -> float:
    """What one unit of alpha moves the clamp target by (see the module docstring)."""
    return residual_norm if factor == "norm" else (m_plus - m_minus) / 2


def clamp_target(m_plus: float, m_minus: float, direction: str, alpha: float, unit: float) -> float:
    """Value of v^T h after the clamp: alpha units above (elicit) or below (suppress) the midpoint."""
    sign = 1.0 if direction == "elicit" else -1.0
    return (m_plus + m_minus) / 2 + sign * alpha * unit


def row_clamp(vectors: torch.Tensor, targets: torch.Tensor,
              first: torch.Tensor | None = None) -> Callable[[torch.Tensor], torch.Tensor]:
    """Per-row clamp h' = h + (t - v^T h) v for batched steering (``probes.clamp`` is the one-vector form); a zero
    vector leaves the row untouched (prompting rows).

    ``first`` ([b] long): in a multi-token forward, edit row i only from position ``first[i]`` on (negative: counted
    from the end, -1 = the last position of a left-padded prompt); single-token forwards (generation steps with a
    KV cache) are edited everywhere. None edits every position the hook hands over.
    """

    def fn(h: torch.Tensor) -> torch.Tensor:
        v = vectors.to(h.device, h.dtype).unsqueeze(1)  # [b, 1, d]
        t = targets.to(h.device, h.dtype).view(-1, 1, 1)
        new = h + (t - (h * v).sum(-1, keepdim=True)) * v
        if first is None or h.shape[1] == 1:
            return new
        start = first.to(h.device)
        start = torch.where(start < 0, start + h.shape[1], start)
        edit = torch.arange(h.shape[1], device=h.device)[None] >= start[:, None]  # [b, t]
        return torch.where(edit.unsqueeze(-1), new, h)

    return fn
