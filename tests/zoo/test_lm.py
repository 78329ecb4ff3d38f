"""The model zoo loads real models offline and refuses unknown names with one line."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from diag.errors import DiagError
from diag.zoo import load_lm
from diag.zoo.lm import lm_provenance


def test_embedded_smollm2_is_real_and_answers_paris(smollm2) -> None:
    model, tokenizer = smollm2
    assert type(model).__name__ == "LlamaForCausalLM"
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    inputs = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True, return_dict=True, return_tensors="pt",
    )
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=10, do_sample=False)
    assert "Paris" in tokenizer.decode(out[0, inputs["input_ids"].shape[1]:])


def test_embedded_provenance_has_gguf_hash(smollm2) -> None:
    info = lm_provenance("smollm2-135m-instruct")
    assert info["kind"] == "embedded-gguf" and len(info["sha256"]) == 64


def test_local_directory_loads(tiny_llama_dir: Path) -> None:
    model, tokenizer = load_lm(str(tiny_llama_dir), device="cpu")
    assert model.config.num_hidden_layers == 2
    ids = tokenizer("hello", return_tensors="pt")["input_ids"]
    assert model(ids).logits.shape[-1] == model.config.vocab_size


def test_unknown_name_lists_known_models() -> None:
    with pytest.raises(DiagError, match="smollm2-135m-instruct") as info:
        load_lm("gpt-17")
    assert "\n" not in str(info.value)


def test_corrupt_local_checkpoint_fails_cleanly(tiny_llama_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    for item in tiny_llama_dir.iterdir():
        (broken / item.name).write_bytes(item.read_bytes())
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(DiagError, match="cannot load model"):
        load_lm(str(broken), device="cpu")
