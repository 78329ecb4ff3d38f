"""A ``Site`` names one place in a model: a layer, a component of it, and optionally token positions."""

from __future__ import annotations

import weakref
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
    ``positions`` restricts to token positions (``None`` = all; negative indices count from the end);
    ``blocks`` is the dotted path of the block list (e.g. ``model.layers``) for a model whose blocks cannot be
    found by architecture (``None`` = find them, see ``block_path``).
    """

    layer: int
    component: Component = "resid_post"
    positions: tuple[int, ...] | None = None
    blocks: str | None = None

    def __post_init__(self) -> None:
        if self.component not in COMPONENTS:
            raise SiteError(f"unknown component {self.component!r}: choose one of {', '.join(COMPONENTS)}")
        if self.positions is not None and not isinstance(self.positions, tuple):
            object.__setattr__(self, "positions", tuple(int(p) for p in self.positions))

    def key(self) -> str:
        """Short stable name, e.g. ``L3.resid_post`` or ``L3.resid_post@-1`` (``stack/L3...`` with ``blocks``)."""
        pos = "" if self.positions is None else "@" + ",".join(map(str, self.positions))
        where = "" if self.blocks is None else f"{self.blocks}/"
        return f"{where}L{self.layer}.{self.component}{pos}"

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


BLOCK_NAMES: tuple[str, ...] = ("layers", "blocks", "h")  # block-list names of networks that are not HF models
# A model's resolved path, kept: walking every module costs ~0.3 ms (SmolLM2), paid per site per pass otherwise.
_RESOLVED: weakref.WeakKeyDictionary[nn.Module, str] = weakref.WeakKeyDictionary()


def block_path(model: nn.Module, path: str | None = None) -> str:
    """Dotted path of the model's block list, by architecture, never by position in the module tree.

    A transformers model names its decoder layer class in ``_no_split_modules`` (``LlamaDecoderLayer``,
    ``GPT2Block``, ``GPTNeoXLayer``...): the block list is the one module list made of that class. Another
    network's is its one module list called ``layers``, ``blocks`` or ``h``. ``path`` overrides both. None
    found, or more than one, is one line naming the architecture (the first list of the right length, used
    before, silently hooked a ``stem`` registered ahead of ``layers``).
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # through a PEFT wrapper
    arch = type(base).__name__
    if path is not None:
        try:
            module = model.get_submodule(path)
        except AttributeError as exc:
            raise SiteError(f"{arch} has no module {path!r} to use as its block list") from exc
        if not isinstance(module, nn.ModuleList | nn.Sequential) or len(module) == 0:
            raise SiteError(f"{arch}: {path!r} is a {type(module).__name__}, not a non-empty list of blocks")
        return path
    if model in _RESOLVED:
        return _RESOLVED[model]
    lists = [(name, m) for name, m in model.named_modules()
             if isinstance(m, nn.ModuleList | nn.Sequential) and len(m) > 0]
    layer_classes = set(getattr(base, "_no_split_modules", None) or ())
    if layer_classes:
        found = [name for name, m in lists if all(type(block).__name__ in layer_classes for block in m)]
        wanted = f"a list of {' / '.join(sorted(layer_classes))}"
    else:
        found = [name for name, _ in lists if name.rsplit(".", 1)[-1] in BLOCK_NAMES]
        wanted = f"a module list named {' / '.join(BLOCK_NAMES)}"
    if len(found) == 1:
        _RESOLVED[model] = found[0]
        return found[0]
    if not found:
        raise SiteError(f"cannot find the blocks of {arch}: it has no {wanted}; give Site(blocks='dotted.path')")
    raise SiteError(f"{arch} has {len(found)} candidate block lists ({', '.join(found)}); "
                    "give Site(blocks='dotted.path') to choose")


def block_list(model: nn.Module, path: str | None = None) -> nn.ModuleList | nn.Sequential:
    """The model's sequence of blocks (see ``block_path``)."""
    return model.get_submodule(block_path(model, path))


def _submodule(block: nn.Module, candidates: tuple[str, ...], site: Site) -> nn.Module:
    for name in candidates:
        if hasattr(block, name):
            return getattr(block, name)
    raise SiteError(f"site {site.key()}: block {type(block).__name__} has none of {candidates}")


def locate(model: nn.Module, site: Site) -> tuple[nn.Module, bool]:
    """The module to hook for ``site`` and whether to hook its input (True) rather than its output."""
    blocks = block_list(model, site.blocks)
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
