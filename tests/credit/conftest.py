"""Fixtures for the credit tests: a small PEFT adapter with non-zero weights on the tiny Llama."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from diag.credit.adapters import ADAPTER_META
from diag.zoo import load_lm


def save_adapter(tiny_llama_dir: Path, path: Path, layers: list[int] | None) -> Path:
    """A LoRA adapter on the tiny Llama (on ``layers``, or all) with random non-zero weights, saved like ours."""
    from peft import LoraConfig, get_peft_model

    base, _ = load_lm(str(tiny_llama_dir), "cpu")
    torch.manual_seed(1)
    model = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj", "down_proj"],
                                            layers_to_transform=layers))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    model.save_pretrained(path)
    config = json.loads((path / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = str(tiny_llama_dir)
    (path / "adapter_config.json").write_text(json.dumps(config))
    (path / ADAPTER_META).write_text(json.dumps({"beta": 0.25}))
    return path


@pytest.fixture(scope="session")
def adapter_dir(tiny_llama_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An adapter on every block: the reference pass runs the whole model."""
    return save_adapter(tiny_llama_dir, tmp_path_factory.mktemp("adapter"), None)


@pytest.fixture(scope="session")
def top_adapter_dir(tiny_llama_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An adapter on the top block only, as ours: the reference pass reuses the policy's bottom block."""
    return save_adapter(tiny_llama_dir, tmp_path_factory.mktemp("top-adapter"), [1])
