"""Ways into a torch model beyond one traced pass, all through the torch backend's hooks (``installed``).

- ``editing``: edits kept on for every pass while open (``generate`` runs one pass per new token);
- ``recording``: the activations at sites during passes the caller runs (e.g. a block's input);
- ``run_to``: one pass stopped at a site, so nothing above it is computed;
- ``starting_at``: passes that start at a block, from a residual stream the caller recorded.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from probes.backends import Inputs, PassPlan, split_inputs
from probes.backends.hooks import StopForward, installed
from probes.edits import Edit
from probes.errors import SiteError
from probes.site import Site, block_path


@contextlib.contextmanager
def editing(model: nn.Module, edits: Sequence[Edit]) -> Iterator[None]:
    """Apply ``edits`` in every forward pass of ``model`` while the block is open, then remove them."""
    with installed(model, PassPlan(edits, (), keep_graph=False)):
        yield


@contextlib.contextmanager
def recording(model: nn.Module, sites: Sequence[Site]) -> Iterator[dict[Site, torch.Tensor]]:
    """Yield a dict that each forward pass run inside the block fills with the activations at ``sites``.

    Values are the tensors the pass computed (the last pass wins), attached to its graph when it has one.
    """
    plan = PassPlan((), sites, keep_graph=False)
    with installed(model, plan):
        yield plan.captured


def run_to(model: nn.Module, site: Site, inputs: Inputs) -> torch.Tensor:
    """The activation at ``site`` for ``inputs`` (detached), ending the forward there: a site in block k needs
    nothing above block k, so blocks above it and the LM head never run."""
    plan = PassPlan((), [site], keep_graph=False)
    args, kwargs = split_inputs(inputs)
    with installed(model, plan, stop=True):
        try:
            model(*args, **kwargs)
        except StopForward:
            pass
    if site not in plan.captured:
        raise SiteError(f"site {site.key()} was not reached by the forward pass")
    return plan.captured[site].detach()


@contextlib.contextmanager
def starting_at(model: nn.Module, layer: int, blocks: str | None = None) -> Iterator[None]:
    """Run only blocks ``layer`` and up while the block is open; the caller passes the residual stream entering
    block ``layer`` (``recording`` at ``Site(layer, "resid_pre")``) where the model takes its embeddings
    (``inputs_embeds`` for a transformers model). ``layer`` 0 changes nothing (and needs no block list).

    The block list is swapped for its tail and restored on exit. This reproduces the full pass only where the
    embedding layer feeds the blocks unchanged (Llama, Qwen2: yes; GPT-2 adds position embeddings to
    ``inputs_embeds``): a caller compares it once against a full pass on a short input before relying on it.
    """
    if layer == 0:
        yield
        return
    parent, _, name = block_path(model, blocks).rpartition(".")
    holder = model.get_submodule(parent)
    all_blocks = getattr(holder, name)
    if not 0 < layer < len(all_blocks):
        raise SiteError(f"cannot start at block {layer}: the model has {len(all_blocks)} blocks")
    tail = list(all_blocks)[layer:]
    setattr(holder, name, nn.ModuleList(tail) if isinstance(all_blocks, nn.ModuleList) else nn.Sequential(*tail))
    try:
        yield
    finally:
        setattr(holder, name, all_blocks)
