"""Edits: pure functions applied to the activation at a site. Backends only decide *where* they run."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from probes.site import Site


@dataclass(frozen=True)
class Edit:
    """Replace the activation ``h`` covered by ``site`` with ``fn(h)``."""

    site: Site
    fn: Callable[[torch.Tensor], torch.Tensor]
    label: str = "edit"


def patch(site: Site, value: torch.Tensor) -> Edit:
    """Replace the activation with ``value`` (broadcast over the batch if needed)."""
    return Edit(site, lambda h: value.to(h.dtype).expand_as(h), "patch")


def steer(site: Site, vector: torch.Tensor, scale: float = 1.0) -> Edit:
    """Add ``scale * vector`` to the activation at every covered position."""
    return Edit(site, lambda h: h + scale * vector.to(h.dtype), "steer")


def clamp(site: Site, unit: torch.Tensor, value: float | torch.Tensor) -> Edit:
    """Set the projection on the unit vector ``unit`` to ``value``: h' = h + (value - u^T h) u."""

    def fn(h: torch.Tensor) -> torch.Tensor:
        u = unit.to(h.dtype)
        return h + (value - h @ u).unsqueeze(-1) * u

    return Edit(site, fn, "clamp")


def interchange_subspace(base: torch.Tensor, source: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """Distributed interchange: h' = h_b + (h_s - h_b) R R^T for an orthonormal basis R of shape (d, k).

    k = d returns the source exactly (up to float error); k = 0 returns the base.
    """
    if basis.shape[-1] == 0:
        return base
    return base + ((source - base) @ basis) @ basis.T


def interchange(site: Site, basis: torch.Tensor, source: torch.Tensor) -> Edit:
    """Swap the subspace spanned by ``basis`` for the same subspace of ``source`` activations."""
    return Edit(site, lambda h: interchange_subspace(h, source.to(h.dtype), basis.to(h.dtype)), "interchange")
