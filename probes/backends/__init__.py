"""One interface, three interchangeable backends (tests check they agree numerically)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn

from probes.edits import Edit
from probes.errors import ProbeError
from probes.site import Site

Inputs = Mapping[str, torch.Tensor] | torch.Tensor
BACKENDS = ("torch", "transformer_lens", "nnsight")
BACKENDS_AVAILABLE = BACKENDS

# Execution order of components inside a block; backends that must visit modules in forward order
# (nnsight) sort sites by it.
COMPONENT_ORDER = {"resid_pre": 0, "attn_out": 1, "mlp_out": 2, "resid_post": 3}


@dataclass
class Trace:
    """What one forward pass returns: the model's logits (or raw output) and the captured activations."""

    logits: torch.Tensor
    activations: dict[Site, torch.Tensor] = field(default_factory=dict)


class Backend(Protocol):
    name: str
    model: nn.Module

    def run(
        self,
        inputs: Inputs,
        *,
        edits: Sequence[Edit] = (),
        capture: Sequence[Site] = (),
        keep_graph: bool = False,
    ) -> Trace:
        """Forward ``inputs`` with ``edits`` applied; return logits and the activations at ``capture``.

        Captured values are taken after the edits at that site. With ``keep_graph`` they stay attached to
        the graph so gradients can be taken with respect to them.
        """
        ...


def apply_edits(site_edits: Sequence[Edit], h: torch.Tensor) -> torch.Tensor:
    """Run the edits registered at one site, in order."""
    for edit in site_edits:
        h = edit.site.replace(h, edit.fn(edit.site.select(h)))
    return h


class PassPlan:
    """What one forward pass does at each site: run its edits in order, then capture the edited value if asked.

    Every backend walks the same plan, which is why they agree exactly; ``save`` wraps a captured value in what
    the backend needs to keep it past the pass (nnsight's ``.save()``; plain tensors otherwise).
    """

    def __init__(self, edits: Sequence[Edit], capture: Sequence[Site], keep_graph: bool,
                 save: Callable[[torch.Tensor], Any] = lambda t: t) -> None:
        self.edits_at: dict[Site, list[Edit]] = defaultdict(list)
        for edit in edits:
            self.edits_at[edit.site].append(edit)
        self.capture = list(capture)
        self._wanted = set(capture)
        self.keep_graph = keep_graph
        self.save = save
        self.captured: dict[Site, Any] = {}
        # Edited sites first, then the ones only read.
        self.sites = list(self.edits_at) + [s for s in self.capture if s not in self.edits_at]

    def visit(self, site: Site, h: torch.Tensor) -> torch.Tensor:
        """Edit ``h`` at ``site``, record the capture, and return the tensor the model continues with."""
        h = apply_edits(self.edits_at.get(site, ()), h)
        if site in self._wanted:
            selected = site.select(h)
            if self.keep_graph:  # route the rest of the pass through the captured tensor, so grads reach it
                h = site.replace(h, selected)
            self.captured[site] = self.save(selected)
        return h

    @property
    def complete(self) -> bool:
        """Every site to capture has been visited in this pass."""
        return self._wanted <= self.captured.keys()

    def trace(self, logits: torch.Tensor) -> Trace:
        return Trace(logits, {s: self.captured[s] if self.keep_graph else self.captured[s].detach()
                              for s in self.capture})


def split_inputs(inputs: Inputs) -> tuple[tuple, dict]:
    if isinstance(inputs, torch.Tensor):
        return (inputs,), {}
    return (), dict(inputs)


def logits_of(output: object) -> torch.Tensor:
    """The model's prediction in whatever its forward returns: a tensor, an object or mapping with ``logits``
    (transformers' outputs), or a tuple or list led by a tensor (``return_dict=False``, ``(logits, aux)``)."""
    if isinstance(output, torch.Tensor):
        return output
    if hasattr(output, "logits"):
        return output.logits  # type: ignore[no-any-return]
    if isinstance(output, Mapping) and isinstance(output.get("logits"), torch.Tensor):
        return output["logits"]
    if isinstance(output, tuple | list) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise ProbeError(f"the model returned a {type(output).__name__}: expected a tensor, an output with .logits, "
                     "or a tuple led by the prediction tensor")
