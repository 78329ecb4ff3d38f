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
