"""PEFT adapters: loading one onto its base, the metadata we write beside ours, and which blocks it touches."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from diag.errors import DiagError, first_line

ADAPTER_META = "diag_dpo.json"  # written next to adapters we train: beta, base model, training data


def adapter_meta(path: str) -> dict:
    """Training metadata we store beside our adapters (beta, base); empty for foreign adapters."""
    meta = Path(path) / ADAPTER_META
    return json.loads(meta.read_text()) if meta.is_file() else {}


def load_adapter(adapter: str, device: str = "auto", dtype: str = "float32") -> tuple[Any, Any, dict[str, Any]]:
    """A PEFT adapter applied to its base (in ``dtype`` on ``device``), its tokenizer and the base's numerics."""
    from peft import PeftModel

    from diag.zoo.lm import check_finite, load_lm_numerics

    base_name = json.loads((Path(adapter) / "adapter_config.json").read_text()).get("base_model_name_or_path")
    base, tokenizer, numerics = load_lm_numerics(base_name, device, dtype)
    try:
        model = PeftModel.from_pretrained(base, adapter)
    except Exception as exc:
        raise DiagError(f"cannot load adapter {adapter}: {first_line(exc)}") from exc
    check_finite(model, f"adapter {adapter}")
    return model.eval(), tokenizer, numerics


def first_adapted_block(model: torch.nn.Module) -> int:
    """Index of the lowest block holding an adapter; 0 when there is none or it also touches other modules."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    from probes.errors import SiteError
    from probes.site import block_list

    try:
        blocks = block_list(model)
    except SiteError as exc:
        raise DiagError(str(exc)) from exc
    owner = {id(module): i for i, block in enumerate(blocks) for module in block.modules()}
    adapted = [owner.get(id(module), -1) for module in model.modules()
               if isinstance(module, BaseTunerLayer) or "ModulesToSave" in type(module).__name__]
    return max(0, min(adapted)) if adapted else 0
