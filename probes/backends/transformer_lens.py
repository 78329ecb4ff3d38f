"""TransformerLens v4 backend: the HF model wrapped by a TransformerBridge (weights shared, booted offline).

Booting swaps the HF model's submodules for bridge wrappers in place, after which HF's ``generate()`` with a KV
cache degrades (measured on SmolLM2: greedy answers turn into repeated tokens). So the bridge boots on a twin:
new module objects holding the very same parameter and buffer tensors, which costs no weight memory and leaves
the caller's model untouched."""

from __future__ import annotations

import copy
import itertools
from collections import defaultdict
from collections.abc import Sequence

import torch
from torch import nn

from probes.backends import Inputs, PassPlan, Trace
from probes.edits import Edit
from probes.errors import SiteError
from probes.site import Site

_HOOK_NAMES = {
    "resid_pre": "blocks.{layer}.hook_in",
    "resid_post": "blocks.{layer}.hook_out",
    "attn_out": "blocks.{layer}.attn.hook_out",
    "mlp_out": "blocks.{layer}.mlp.hook_out",
}


class TransformerLensBackend:
    name = "transformer_lens"

    def __init__(self, model: nn.Module, tokenizer: object | None) -> None:
        from transformer_lens.model_bridge.sources.transformers.source import boot

        self.model = model
        name = getattr(model.config, "_name_or_path", "") or type(model).__name__
        shared = {id(t): t for t in itertools.chain(model.parameters(), model.buffers())}
        twin = copy.deepcopy(model, shared)
        self.bridge = boot(name, hf_model=twin, tokenizer=tokenizer, device=next(model.parameters()).device)
        self.n_layers = model.config.num_hidden_layers

    def hook_name(self, site: Site) -> str:
        if site.blocks is not None:
            raise SiteError(f"site {site.key()}: the TransformerLens bridge names its own blocks; drop blocks=")
        layer = site.layer % self.n_layers
        return _HOOK_NAMES[site.component].format(layer=layer)

    def run(
        self,
        inputs: Inputs,
        *,
        edits: Sequence[Edit] = (),
        capture: Sequence[Site] = (),
        keep_graph: bool = False,
    ) -> Trace:
        plan = PassPlan(edits, capture, keep_graph)
        sites_by_hook: dict[str, list[Site]] = defaultdict(list)
        for site in plan.sites:
            sites_by_hook[self.hook_name(site)].append(site)

        def make_hook(sites: list[Site]):
            def hook(act, hook):
                first = act[0] if isinstance(act, tuple) else act
                for site in sites:
                    first = plan.visit(site, first)
                return (first, *act[1:]) if isinstance(act, tuple) else first

            return hook

        if isinstance(inputs, torch.Tensor):
            input_ids, kwargs = inputs, {}
        else:
            input_ids = inputs["input_ids"]
            kwargs = {"attention_mask": inputs["attention_mask"]} if "attention_mask" in inputs else {}
        hooks = [(name, make_hook(sites)) for name, sites in sites_by_hook.items()]
        logits = self.bridge.run_with_hooks(input_ids, fwd_hooks=hooks, **kwargs)
        return plan.trace(logits)
