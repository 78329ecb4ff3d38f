"""Default backend: plain torch forward hooks, registered for one pass and removed after it.

``installed`` is the one place hooks are put on a torch model: the backend's single pass and the context
managers of ``probes.forward`` (edits kept on across generation steps, a forward stopped at a site) all use it.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn

from probes.backends import Inputs, PassPlan, Trace, logits_of, split_inputs
from probes.edits import Edit
from probes.site import Site, locate


class StopForward(Exception):
    """Raised by a hook once every wanted activation exists: nothing above the last site is computed."""


class TorchHooksBackend:
    name = "torch"

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def run(
        self,
        inputs: Inputs,
        *,
        edits: Sequence[Edit] = (),
        capture: Sequence[Site] = (),
        keep_graph: bool = False,
    ) -> Trace:
        plan = PassPlan(edits, capture, keep_graph)
        with installed(self.model, plan):
            args, kwargs = split_inputs(inputs)
            output = self.model(*args, **kwargs)
        return plan.trace(logits_of(output))


@contextlib.contextmanager
def installed(model: nn.Module, plan: PassPlan, stop: bool = False) -> Iterator[None]:
    """Hooks that walk ``plan`` at its sites on every forward pass of ``model`` while the block is open.

    With ``stop`` a hook raises ``StopForward`` once every capture of the plan is taken (the caller catches it).
    Every site is located before any hook goes on, so a bad site leaves the model untouched.
    """
    # Group work per hooked module: several sites (positions, components) may share one module.
    sites_at: dict[tuple[int, bool], list[Site]] = defaultdict(list)
    modules: dict[tuple[int, bool], nn.Module] = {}
    for site in plan.sites:
        module, on_input = locate(model, site)
        sites_at[(id(module), on_input)].append(site)
        modules[(id(module), on_input)] = module

    def transform(sites: list[Site], h: torch.Tensor) -> torch.Tensor:
        for site in sites:
            h = plan.visit(site, h)
        if stop and plan.complete:
            raise StopForward
        return h

    handles = []
    try:
        for key, sites in sites_at.items():
            module, on_input = modules[key], key[1]
            if on_input:
                handles.append(module.register_forward_pre_hook(_pre_hook(sites, transform), with_kwargs=True))
            else:
                handles.append(module.register_forward_hook(_post_hook(sites, transform)))
        yield
    finally:
        for handle in handles:
            handle.remove()


def _post_hook(sites: list[Site], transform: Any) -> Any:
    def hook(module: nn.Module, args: Any, output: Any) -> Any:
        if isinstance(output, tuple):
            return (transform(sites, output[0]), *output[1:])
        return transform(sites, output)

    return hook


def _pre_hook(sites: list[Site], transform: Any) -> Any:
    def hook(module: nn.Module, args: tuple, kwargs: dict) -> Any:
        if args:
            return (transform(sites, args[0]), *args[1:]), kwargs
        kwargs = dict(kwargs, hidden_states=transform(sites, kwargs["hidden_states"]))
        return args, kwargs

    return hook
