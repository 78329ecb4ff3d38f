"""Shared fixtures: every test gets its own run store; the SmolLM2 weights are loaded once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Dequantizing the embedded GGUF takes ~20 s: keep the weight cache outside the per-test DIAG_HOME.
os.environ.setdefault("DIAG_MODELS", str(Path.home() / ".cache" / "diag" / "models"))


@pytest.fixture(autouse=True)
def diag_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "diag_home"
    monkeypatch.setenv("DIAG_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def smollm2():
    """The real embedded SmolLM2-135M-Instruct and its tokenizer, on CPU, shared by all tests."""
    import torch

    from diag.zoo import load_lm

    torch.manual_seed(0)
    return load_lm("smollm2-135m-instruct", device="cpu")


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory: pytest.TempPathFactory, smollm2) -> Path:
    """A randomly initialised 2-layer Llama with SmolLM2's tokenizer, saved as a local model directory."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    _, tokenizer = smollm2
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )
    path = tmp_path_factory.mktemp("tiny-llama")
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def _assert_decoding_matches_forward(model, tokenizer, atol: float) -> None:
    """Batched TIR decoding with a tool answer injected after the first token: every sampled token's logits
    equal a plain forward of that sequence alone, on the model's own device."""
    import torch

    from diag.tir.decoding import BatchDecoder, inject

    device = next(model.parameters()).device
    prefix = tokenizer("Question: What is 2 + 3?\nAnswer: 5\n\n").input_ids
    groups = [tokenizer("Question: What is 17 + 25?\n").input_ids, tokenizer("Question: 9 * 9?\n").input_ids]
    injected = tokenizer("\n<interpreter>42</interpreter>\n", add_special_tokens=False).input_ids

    def on_token(_token, seq):
        if seq.generated == 1:
            inject(seq, injected)

    decoder = BatchDecoder(model, 1.0, 4, torch.Generator().manual_seed(0), tokenizer.pad_token_id)
    seen: list[tuple[object, torch.Tensor]] = []
    sample = decoder._sample_into

    def recording(rows, logits, callback):
        seen.extend((row, logits[i].clone()) for i, row in enumerate(rows))
        sample(rows, logits, callback)  # the device tensor, as the decoder passes it

    decoder._sample_into = recording
    seqs = decoder.run(prefix, groups, 2, on_token)
    assert [s.generated for s in seqs] == [4] * 4
    for index, seq in enumerate(seqs):
        start = len(prefix) + len(groups[index // 2])
        with torch.no_grad():
            reference = model(torch.tensor([prefix + groups[index // 2] + seq.tokens], device=device)).logits[0]
        sampled_at = [i for i in range(len(seq.tokens)) if not 1 <= i < 1 + len(injected)]
        mine = [logits for row, logits in seen if row is seq]
        for logits, i in zip(mine, sampled_at, strict=True):
            torch.testing.assert_close(logits, reference[start + i - 1], atol=atol, rtol=0)


@pytest.fixture
def assert_decoding_matches_forward():
    """The decoding check above, for tests in any folder (conftest functions are not importable)."""
    return _assert_decoding_matches_forward
