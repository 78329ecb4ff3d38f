"""The per-token scorer: batching, masks, the chat template, exact zeros, sum consistency, mismatch errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from diag.credit.encoding import encode
from diag.credit.model_pair import ModelPair, load_adapter_pair
from diag.credit.sources import load_pair
from diag.credit.token_tree import build_tree, segment_attention
from diag.errors import DiagError
from diag.zoo import load_lm

PAIRS = [("Memo: Ana moved to Oslo.\nRestate it.", "Ana lives in Oslo now."),
         ("What is 25K plus 5K?", "It is 30K dollars, which is a lot more text to make this answer longer."),
         ("Say hi.", "Hi!"),
         # more answers to the first two prompts: they share one pass over their prompt (segments of a row)
         ("Memo: Ana moved to Oslo.\nRestate it.", "Ana moved to Bergen, then stayed there for a very long time."),
         ("Memo: Ana moved to Oslo.\nRestate it.", "Oslo."),
         ("What is 25K plus 5K?", "30K.")]


def test_encode_follows_the_chat_template(smollm2) -> None:
    _, tok = smollm2
    e = encode(tok, PAIRS[0][0], PAIRS[0][1])
    prefix = tok.apply_chat_template([{"role": "user", "content": PAIRS[0][0]}], add_generation_prompt=True,
                                     tokenize=False)
    assert tok.decode(e.ids[:e.response_start]) == prefix
    assert tok.decode(e.response_ids) == PAIRS[0][1] + "<|im_end|>"
    assert len(e.offsets) == len(e.response_ids)
    assert "".join(PAIRS[0][1][a:b] for a, b in e.offsets) == PAIRS[0][1]  # offsets tile the response text


@pytest.mark.parametrize(("adapter", "shared_blocks"), [("adapter_dir", 0), ("top_adapter_dir", 1)])
def test_batched_scores_equal_unbatched_and_sum_to_the_sequence_reward(
        adapter: str, shared_blocks: int, request: pytest.FixtureRequest) -> None:
    pair = load_adapter_pair(str(request.getfixturevalue(adapter)), device="cpu")
    assert pair.beta == 0.25 and pair.reference is None
    assert pair.shared_blocks == shared_blocks  # a top-block adapter: the reference starts from the policy's trunk
    encoded = [encode(pair.tokenizer, p, r) for p, r in PAIRS]
    batched = pair.score(encoded, batch_size=4)
    single = [pair.score([e], batch_size=1)[0] for e in encoded]
    for b, s, e in zip(batched, single, encoded, strict=True):
        assert len(b.reward) == len(e.response_ids)
        np.testing.assert_allclose(b.reward, s.reward, atol=1e-5)  # padding and masks change nothing
        assert np.abs(b.reward).max() > 1e-3  # the adapter really changes the policy
        # independent sequence reward: full logits, no padding, no logits_to_keep
        ids = torch.tensor([e.ids])
        n = len(e.response_ids)
        with torch.no_grad():
            lp = torch.log_softmax(pair.policy(input_ids=ids).logits[0, -n - 1:-1].double(), -1)
            with pair.policy.disable_adapter():
                lr = torch.log_softmax(pair.policy(input_ids=ids).logits[0, -n - 1:-1].double(), -1)
        target = ids[0, -n:, None]
        sequence = 0.25 * float(lp.gather(-1, target).sum() - lr.gather(-1, target).sum())
        assert abs(b.reward.sum() - sequence) < 1e-4


def test_tree_attention_runs_per_prompt_and_restores_the_model(adapter_dir: Path) -> None:
    """The batched test above scores through these segments; here: they partition the nodes, one per prompt."""
    pair = load_adapter_pair(str(adapter_dir), device="cpu")
    tree = build_tree([encode(pair.tokenizer, p, r) for p, r in PAIRS], pair.device, torch.float32)
    assert len(tree.segments) == 3  # three distinct prompts
    queries = torch.cat([s.queries for s in tree.segments]).sort().values
    assert torch.equal(queries, torch.arange(tree.ids.shape[1]))  # every node is computed exactly once
    for s in tree.segments:
        assert set(s.queries.tolist()) <= set(s.keys.tolist())
        assert torch.equal(s.attention, tree.attention[:, :, s.queries][..., s.keys])
    config = pair.policy.get_base_model().config
    with segment_attention(pair.policy) as switched:
        assert switched and config._attn_implementation != "sdpa"
    assert config._attn_implementation == "sdpa"


def test_reward_is_exactly_zero_when_policy_equals_reference(tiny_llama_dir: Path) -> None:
    pair = load_pair(str(tiny_llama_dir), str(tiny_llama_dir), beta=0.1, device="cpu")
    scores = pair.score([encode(pair.tokenizer, p, r) for p, r in PAIRS], batch_size=2)
    assert all(np.all(s.reward == 0.0) for s in scores)
    from peft import LoraConfig, get_peft_model

    fresh = get_peft_model(load_lm(str(tiny_llama_dir), "cpu")[0], LoraConfig(r=4, target_modules=["q_proj"]))
    scores = ModelPair(fresh, pair.tokenizer, beta=0.1).score([encode(pair.tokenizer, p, r) for p, r in PAIRS])
    assert all(np.all(s.reward == 0.0) for s in scores)  # LoRA starts with B = 0: policy == reference


def test_mismatched_tokenizer_or_vocabulary_fails_with_one_line(tiny_llama_dir: Path, tmp_path: Path) -> None:
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(tiny_llama_dir)
    tok.add_tokens(["<extra_token>"])
    other = tmp_path / "other-tokenizer"
    LlamaForCausalLM.from_pretrained(tiny_llama_dir).save_pretrained(other)
    tok.save_pretrained(other)
    with pytest.raises(DiagError, match="tokenizers differ"):
        load_pair(str(tiny_llama_dir), str(other), beta=0.1, device="cpu")
    config = LlamaConfig.from_pretrained(tiny_llama_dir)
    config.vocab_size += 8
    bigger = tmp_path / "bigger-vocab"
    LlamaForCausalLM(config).save_pretrained(bigger)
    AutoTokenizer.from_pretrained(tiny_llama_dir).save_pretrained(bigger)
    with pytest.raises(DiagError, match="vocabularies differ"):
        load_pair(str(tiny_llama_dir), str(bigger), beta=0.1, device="cpu")
    with pytest.raises(DiagError, match="reference model is needed"):
        load_pair(str(tiny_llama_dir), None, beta=0.1, device="cpu")


@pytest.mark.slow
def test_committed_adapter_prefers_the_correct_answer_and_blames_the_corrupted_token() -> None:
    from diag.credit.data import make_pairs
    from diag.credit.inputs import resolve_policy
    from diag.credit.localisation import corrupted_tokens, first_difference
    from diag.credit.metrics import top1_hit

    pair = load_adapter_pair(resolve_policy("smollm2-dpo-credit"), device="cpu")
    assert pair.beta == 0.1  # recorded with the adapter
    pairs = make_pairs("heldout", 8, seed=7)
    encoded = [encode(pair.tokenizer, p.prompt, text) for p in pairs for text in (p.chosen, p.rejected)]
    scores = pair.score(encoded)
    preferred, blamed = 0, 0
    for i, p in enumerate(pairs):
        chosen, rejected = encoded[2 * i], encoded[2 * i + 1]
        preferred += scores[2 * i].reward.sum() > scores[2 * i + 1].reward.sum()
        span = corrupted_tokens(rejected.offsets, p.span_rejected,
                                first_difference(chosen.response_ids, rejected.response_ids))
        blamed += top1_hit(-scores[2 * i + 1].reward, np.array(span))
    # the model card measured, on 96 held-out pairs, preference accuracy 0.98 and top-1 0.91 (from the first
    # differing token); 7 of 8 and 6 of 8 leave room for sampling (chance top-1 is 0.22)
    assert preferred >= 7 and blamed >= 6
