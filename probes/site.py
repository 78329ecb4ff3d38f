"""A ``Site`` names one place in a model: a layer, a component of it, and optionally token positions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from probes.errors import SiteError

Component = Literal["resid_pre", "resid_post", "attn_out", "mlp_out"]
COMPONENTS: tuple[str, ...] = ("resid_pre", "resid_post", "attn_out", "mlp_out")


@dataclass(frozen=True)
class Site:
    """Where to read or write.

    ``layer`` indexes the model's block list; ``component`` picks the residual stream entering
    (``resid_pre``) or leaving (``resid_post``) the block, or the attention / MLP output inside it;
    ``positions`` restricts to token positions (``None`` = all; negative indices count from the end).
    """

    layer: int
    component: Component = "resid_post"
    positions: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.component not in COMPONENTS:
            raise SiteError(f"unknown component {self.component!r}: choose one of {', '.join(COMPONENTS)}")
        if self.positions is not None and not isinstance(self.positions, tuple):
            object.__setattr__(self, "positions", tuple(int(p) for p in self.positions))

    def key(self) -> str:
        """Short stable name, e.g. ``L3.resid_post`` or ``L3.resid_post@-1``."""
        pos = "" if self.positions is None else "@" + ",".join(map(str, self.positions))
        return f"L{self.layer}.{self.component}{pos}"

    def select(self, h: torch.Tensor) -> torch.Tensor:
        """The part of an activation this site covers (positions along dim 1 of a [batch, seq, ...] tensor)."""
        if self.positions is None:
            return h
        if h.dim() < 3:
            raise SiteError(f"site {self.key()} selects positions but the activation has shape {tuple(h.shape)}")
        return h[:, list(self.positions)]

    def replace(self, h: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
        """``h`` with the covered part swapped for ``new`` (out of place, so autograd sees it)."""
        if self.positions is None:
            return new
        out = h.clone()
        out[:, list(self.positions)] = new
        return out


def block_list(model: nn.Module) -> nn.ModuleList | nn.Sequential:
    """The model's sequence of blocks: the decoder layers of an LM, or ``layers`` of a small network."""
    n_layers = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    for _, module in model.named_modules():
        is_blocks = isinstance(module, nn.ModuleList | nn.Sequential) and len(module) > 0
        if is_blocks and (n_layers is None or len(module) == n_layers):
            return module
    raise SiteError(f"cannot find a block list in {type(model).__name__}")


def _submodule(block: nn.Module, candidates: tuple[str, ...], site: Site) -> nn.Module:
    for name in candidates:
        if hasattr(block, name):
            return getattr(block, name)
    raise SiteError(f"site {site.key()}: block {type(block).__name__} has none of {candidates}")


def locate(model: nn.Module, site: Site) -> tuple[nn.Module, bool]:
    """The module to hook for ``site`` and whether to hook its input (True) rather than its output."""
    blocks = block_list(model)
    if not -len(blocks) <= site.layer < len(blocks):
        raise SiteError(f"site {site.key()}: layer {site.layer} out of range, the model has {len(blocks)} layers")
    block = blocks[site.layer]
    if site.component == "resid_pre":
        return block, True
    if site.component == "resid_post":
        return block, False
    if site.component == "attn_out":
        return _submodule(block, ("self_attn", "attn", "attention"), site), False
    return _submodule(block, ("mlp", "feed_forward"), site), False


def module_path(model: nn.Module, module: nn.Module) -> str:
    """Dotted attribute path of ``module`` inside ``model`` (for backends that address modules by name)."""
    for name, candidate in model.named_modules():
        if candidate is module:
            return name
    raise SiteError(f"module {type(module).__name__} is not part of the model")
