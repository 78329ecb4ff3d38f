"""Every model-touching path on tiny random models of the common decoder families, not only SmolLM2's names.

Each family is a 2-layer random model (hidden size 64) saved with SmolLM2's tokenizer, so chat templates and
token ids are shared. On each: block resolution, capture (checked against ``output_hidden_states``), one CDAS
DII training step, credit scoring of a pair (checked against a plain forward of each sequence) and a TIR
rollout with injected tool output (checked against a plain forward of the finished sequence).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from diag import contract
from probes import Site
from probes.errors import SiteError
from probes.site import block_list, block_path, locate

# family -> (config class name, config kwargs, path of the decoder block list)
FAMILIES: dict[str, tuple[str, dict, str]] = {
    "llama": ("LlamaConfig", {"hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4,
                              "num_key_value_heads": 2}, "model.layers"),
    "qwen2": ("Qwen2Config", {"hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4,
                              "num_key_value_heads": 2}, "model.layers"),
    "gpt2": ("GPT2Config", {"n_embd": 64, "n_head": 4, "n_positions": 512}, "transformer.h"),
    "gemma": ("GemmaConfig", {"hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4,
                              "num_key_value_heads": 1, "head_dim": 16}, "model.layers"),
    "gpt_neox": ("GPTNeoXConfig", {"hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4},
                 "gpt_neox.layers"),
    "phi": ("PhiConfig", {"hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4}, "model.layers"),
    # eager attention by default (adds the mask to the scores: a boolean mask once shifted them by 1)
    "gemma2": ("Gemma2Config", {"hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4,
                                "num_key_value_heads": 1, "head_dim": 16}, "model.layers"),
    "opt": ("OPTConfig", {"hidden_size": 64, "ffn_dim": 128, "num_attention_heads": 4, "word_embed_proj_dim": 64},
            "model.decoder.layers"),
    "falcon": ("FalconConfig", {"hidden_size": 64, "num_attention_heads": 4}, "transformer.h"),
    # ALiBi: no position_ids (BLOOM cannot take a 4D mask either), so no token tree and no batched decoding
    "bloom": ("BloomConfig", {"hidden_size": 64, "n_head": 4}, "transformer.h"),
    "mpt": ("MptConfig", {"d_model": 64, "n_heads": 4}, "transformer.blocks"),  # its layer count is n_layers
    # recurrent: no attention, so no token tree; RWKV reads padding (credit scores one sequence at a time) and
    # keeps a state, not a KV cache; Mamba's cache layers cannot be copied per row (TIR re-reads each sequence)
    "mamba": ("MambaConfig", {"hidden_size": 64, "state_size": 8, "expand": 2}, "backbone.layers"),
    "rwkv": ("RwkvConfig", {"hidden_size": 64, "attention_hidden_size": 64}, "rwkv.blocks"),
}
ALIBI = {"bloom", "mpt"}
RECURRENT = {"mamba", "rwkv"}
LAYER_KEY = {"gpt2": "n_layer", "bloom": "n_layer", "mpt": "n_layers"}


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family(request, tmp_path_factory: pytest.TempPathFactory, smollm2) -> tuple[str, Path]:
    """(family, model dir): a 2-layer random model of the family with SmolLM2's tokenizer."""
    import transformers
    from transformers import AutoModelForCausalLM

    _, tokenizer = smollm2
    config_class, kwargs, _ = FAMILIES[request.param]
    layers = {LAYER_KEY.get(request.param, "num_hidden_layers"): 2}
    config = getattr(transformers, config_class)(
        vocab_size=len(tokenizer), max_position_embeddings=512, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **layers, **kwargs)
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp(request.param)
    AutoModelForCausalLM.from_config(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return request.param, path


@pytest.fixture(scope="module")
def loaded(family):
    from diag.zoo import load_lm

    return load_lm(str(family[1]), device="cpu")


def test_blocks_are_found_by_architecture(family, loaded):
    model, _ = loaded
    assert block_path(model) == FAMILIES[family[0]][2]
    assert len(block_list(model)) == 2


def test_capture_reads_the_decoder_layer_output(family, loaded):
    from diag import capture

    model, tokenizer = loaded
    config = capture.Config(model=str(family[1]), prompt="The capital of France is", layers=(0,), device="cpu")
    _, result = contract.run(capture.ANALYSIS, config)
    ids = tokenizer("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        states = model(**ids, output_hidden_states=True).hidden_states  # recurrent models' leave out embeddings
        hidden = states[0 if family[0] in RECURRENT else 1][0]  # output of block 0
    np.testing.assert_allclose(result.activations["L0.resid_post"], hidden.numpy(), rtol=0, atol=1e-5)


def test_one_cdas_training_step(family):
    from diag.cdas import train

    config = train.Config(model=str(family[1]), layer=1, rank=2, steps=1, pairs_per_step=1, device="cpu")
    _, result = contract.run(train.ANALYSIS, config)
    assert len(result.curve) == 1 and np.isfinite(result.curve[0])
    assert result.orthonormality_error < 1e-5
    assert np.isfinite(result.heldout_loss_before) and result.heldout_loss_after != result.heldout_loss_before


def test_credit_scores_match_plain_forwards(family, loaded):
    from diag.credit.encoding import encode
    from diag.credit.model_pair import ModelPair

    policy, tokenizer = loaded
    reference = type(policy)(policy.config).eval()  # a second random model of the same architecture
    pair = ModelPair(policy, tokenizer, reference, tokenizer, beta=0.5)
    prompt = "Name the capital of France."
    encoded = [encode(tokenizer, prompt, "Paris is the capital."), encode(tokenizer, prompt, "Lyon, I think."),
               encode(tokenizer, "What is 2 + 2?", "4")]
    scores = pair.score(encoded)
    for e, s in zip(encoded, scores, strict=True):
        ids = torch.tensor([e.ids])
        n = len(e.response_ids)
        with torch.no_grad():
            own = [torch.log_softmax(m(input_ids=ids).logits[0, -n - 1:-1].double(), -1)
                   .gather(-1, ids[0, -n:, None]).squeeze(-1).numpy() for m in (policy, reference)]
        np.testing.assert_allclose(s.policy, own[0], atol=1e-4)
        np.testing.assert_allclose(s.reward, 0.5 * (own[0] - own[1]), atol=1e-4)


def test_tir_rollout_with_injection_matches_a_plain_forward(loaded, assert_decoding_matches_forward):
    model, tokenizer = loaded
    assert_decoding_matches_forward(model, tokenizer, atol=1e-4)


def test_fast_paths_are_kept_where_exact_and_left_where_not(family, loaded):
    """The token tree (credit) and batched decoding with filler slots (TIR) are checked once per model: kept on
    architectures that place tokens by position_ids, replaced by plain forwards on ALiBi and recurrent ones;
    padded batches (credit) and the KV cache (TIR) are dropped where the model reads filler or keeps a state."""
    from diag.credit.model_pair import ModelPair
    from diag.tir.decoding import BatchDecoder

    policy, tokenizer = loaded
    pair = ModelPair(policy, tokenizer, type(policy)(policy.config).eval(), tokenizer, beta=0.5)
    decoder = BatchDecoder(policy, 1.0, 4, torch.Generator().manual_seed(0), tokenizer.pad_token_id)
    exact = family[0] not in ALIBI | RECURRENT
    assert pair.tree_is_exact == exact and decoder.batches_exactly == exact
    assert pair.pads_exactly == (family[0] != "rwkv")
    assert decoder.caches_exactly == (family[0] not in RECURRENT)


class _StemFirst(nn.Module):
    """A network with a two-module ``stem`` registered before its two ``layers`` (the old first-match trap)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Linear(4, 8), nn.ReLU())
        self.layers = nn.ModuleList(nn.Linear(8, 8) for _ in range(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        for layer in self.layers:
            h = layer(h)
        return h


def test_a_stem_before_the_layers_is_not_taken_for_the_blocks():
    model = _StemFirst()
    module, on_input = locate(model, Site(0))
    assert module is model.layers[0] and not on_input
    assert locate(model, Site(0, blocks="stem"))[0] is model.stem[0]  # an explicit path overrides


def test_missing_or_ambiguous_blocks_fail_with_the_architecture_named():
    model = _StemFirst()
    model.blocks = nn.ModuleList([nn.Linear(8, 8)])
    with pytest.raises(SiteError, match=r"_StemFirst has 2 candidate block lists \(layers, blocks\)"):
        block_path(model)
    bare = nn.Sequential(nn.Linear(2, 2))
    with pytest.raises(SiteError, match="cannot find the blocks of Sequential"):
        block_path(bare)
    with pytest.raises(SiteError, match="_StemFirst has no module 'trunk'"):
        block_path(model, "trunk")


def test_dense_tree_mask_equals_per_prompt_attention(family, loaded, monkeypatch):
    """CUDA scores with one dense-mask SDPA call, CPU per prompt: both paths give the same numbers."""
    from diag.credit import token_tree
    from diag.credit.encoding import encode
    from diag.credit.model_pair import ModelPair

    policy, tokenizer = loaded
    pair = ModelPair(policy, tokenizer, type(policy)(policy.config).eval(), tokenizer, beta=0.5)
    encoded = [encode(tokenizer, p, r) for p, r in (("Name a colour.", "Red."), ("Name a colour.", "Blue!"),
                                                   ("Count to two.", "1, 2"))]
    per_prompt = pair.score(encoded)
    monkeypatch.setattr(token_tree, "SEGMENTED_ON", frozenset())
    dense = pair.score(encoded)
    for a, b in zip(per_prompt, dense, strict=True):
        np.testing.assert_allclose(a.reward, b.reward, atol=1e-5)


def test_a_base_model_without_a_chat_template_is_prompted_with_plain_text(tmp_path, smollm2):
    """GPT-2 style base models have no chat template: every analysis prompts them with BOS and plain text."""
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from diag.cdas import train
    from diag.credit.encoding import encode
    from diag.zoo.lm import answer_prefix

    smollm2[1].save_pretrained(tmp_path)
    tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    tokenizer.chat_template = None
    config = transformers.GPT2Config(n_embd=64, n_head=4, n_layer=2, n_positions=512, vocab_size=len(tokenizer),
                                     bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                                     pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    assert answer_prefix(tokenizer, [{"role": "user", "content": "Name a colour."}]) == \
        f"{tokenizer.bos_token}Name a colour.\n"
    encoded = encode(tokenizer, "Name a colour.", "Red.")
    assert tokenizer.decode(encoded.ids) == f"{tokenizer.bos_token}Name a colour.\nRed.{tokenizer.eos_token}"
    _, result = contract.run(train.ANALYSIS, train.Config(model=str(tmp_path), layer=1, rank=1, steps=1,
                                                          pairs_per_step=1, device="cpu"))
    assert np.isfinite(result.curve[0]) and result.orthonormality_error < 1e-5
