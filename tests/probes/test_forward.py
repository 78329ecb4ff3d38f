"""probes.forward on tiny random models: edits kept on across generation steps, a pass stopped at a site, a
block's input recorded and a pass started there."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from probes import Site, editing, get_backend, recording, run_to, starting_at, steer
from probes.errors import SiteError


def _tiny(family: str) -> nn.Module:
    """A random 3-block causal LM of ``family``, in eval mode."""
    import transformers

    torch.manual_seed(0)
    common = {"vocab_size": 64, "num_hidden_layers": 3, "num_attention_heads": 4}
    if family == "gpt2":
        config = transformers.GPT2Config(n_embd=32, n_positions=64, n_layer=3, n_head=4, vocab_size=64)
        return transformers.GPT2LMHeadModel(config).eval()
    config_class, model_class = {"llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM),
                                 "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM)}[family]
    config = config_class(hidden_size=32, intermediate_size=64, num_key_value_heads=2, max_position_embeddings=64,
                          **common)
    return model_class(config).eval()


IDS = torch.tensor([[1, 5, 9, 13, 2, 7], [3, 3, 8, 21, 40, 11]])


def _hooks(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


@torch.no_grad()
def test_editing_applies_in_every_generation_step_and_is_removed() -> None:
    model = _tiny("llama")
    backend = get_backend("torch", model)
    edit = steer(Site(1), torch.linspace(-2, 2, 32))
    plain = model(IDS).logits
    with editing(model, [edit]):
        edited = model(IDS).logits
        generated = model.generate(IDS, max_new_tokens=5, do_sample=False, pad_token_id=0)
    assert torch.equal(edited, backend.run(IDS, edits=[edit]).logits) and not torch.allclose(edited, plain)
    # with a KV cache each new token is its own pass: a greedy loop of full edited passes must pick the same tokens
    ids = IDS
    for _ in range(5):
        ids = torch.cat([ids, backend.run(ids, edits=[edit]).logits[:, -1:].argmax(-1)], dim=1)
    assert torch.equal(generated, ids)
    assert _hooks(model) == 0 and torch.equal(model(IDS).logits, plain)


@pytest.mark.parametrize("family", ["llama", "gpt2"])
@torch.no_grad()
def test_run_to_returns_the_site_and_computes_nothing_above_it(family: str) -> None:
    model = _tiny(family)
    site = Site(0)
    full = get_backend("torch", model).run(IDS, capture=[site, Site(1, "resid_pre")])
    with recording(model, [Site(2), Site(1, "attn_out")]) as above:
        reached = run_to(model, site, IDS)
    assert torch.equal(reached, full.activations[site]) and above == {}  # block 1 and 2 never ran
    assert torch.equal(run_to(model, Site(1, "resid_pre"), IDS), full.activations[Site(1, "resid_pre")])
    assert _hooks(model) == 0


@pytest.mark.parametrize(("family", "exact"), [("llama", True), ("qwen2", True), ("gpt2", False)])
@torch.no_grad()
def test_a_pass_started_at_a_block_from_its_recorded_input(family: str, exact: bool) -> None:
    model = _tiny(family)
    path = "transformer.h" if family == "gpt2" else "model.layers"
    blocks = model.get_submodule(path)
    inlet = Site(2, "resid_pre")
    with recording(model, [inlet]) as captured:
        full = model(IDS).logits
    with starting_at(model, 2):
        assert len(model.get_submodule(path)) == 1
        resumed = model(inputs_embeds=captured[inlet]).logits
    assert model.get_submodule(path) is blocks  # restored
    # GPT-2 adds position embeddings to inputs_embeds, so its shortcut is not the full pass: callers compare once
    assert torch.allclose(resumed, full, atol=1e-5) == exact
    with starting_at(model, 0):
        assert torch.equal(model(IDS).logits, full)


class _Net(nn.Module):
    """Not a transformers model: blocks found by their list's name."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Sequential(nn.Linear(4, 8))
        self.layers = nn.Sequential(nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(self.stem(x))


@torch.no_grad()
def test_plain_networks_and_bad_sites() -> None:
    net, x = _Net(), torch.randn(3, 4)
    hidden = net.layers[0](net.stem(x))
    assert torch.equal(run_to(net, Site(0), x), hidden)
    with editing(net, [steer(Site(1), torch.ones(8))]):
        assert torch.allclose(net(x), net.layers[2](torch.tanh(hidden) + 1))
    last = net.layers[2]
    with starting_at(net, 2):
        assert torch.equal(net(x), last(net.stem(x)))  # the stem feeds the last block directly
    with pytest.raises(SiteError, match="out of range"), editing(net, [steer(Site(5), torch.ones(8))]):
        pass
    with pytest.raises(SiteError, match="cannot start at block 3"), starting_at(net, 3):
        pass
    assert _hooks(net) == 0 and len(net.layers) == 3
