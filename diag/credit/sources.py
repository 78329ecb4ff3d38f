"""Policy/reference pairs from what users bring: TRL ``DPOTrainer`` outputs, model and adapter directories.

TRL's ``DPOTrainer`` (through transformers' ``Trainer``) writes to its ``output_dir`` one ``checkpoint-N/``
folder per save (N = global step) holding the model or PEFT adapter, ``trainer_state.json``, optimizer state
and ``training_args.bin``; ``trainer.save_model()`` writes the final model or adapter (and another
``training_args.bin``) at the top of ``output_dir``. ``training_args.bin`` is the ``DPOConfig`` pickled with
``torch.save``; its ``beta`` is the one the implicit reward needs. We read it with a restricted unpickler that
imports nothing: every class it names becomes an inert attribute holder, so no code in the file runs and trl
need not be installed.

A policy may be such an output directory (the final model, else the latest checkpoint), one checkpoint, a
model directory or hub id, or a PEFT adapter directory. The reference is, for an adapter, its base with the
adapter disabled (as TRL's DPOTrainer does when given no ``ref_model``); otherwise, or when a separate
reference is named, that model or adapter, loaded on its own.
"""

from __future__ import annotations

import io
import json
import pickle
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from diag.errors import DiagError

CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")  # transformers.trainer_utils.PREFIX_CHECKPOINT_DIR + "-" + step
TRAINING_ARGS = "training_args.bin"
RECORDED = ("beta", "loss_type", "label_smoothing", "sync_ref_model", "precompute_ref_log_probs",
            "reference_free", "learning_rate", "max_steps", "num_train_epochs")  # what a report should show
_TORCH_MAGIC = 0x1950A86A20F9469CFC6C  # first pickle of torch's legacy (pre-zip) format
_SAFE = {("collections", "OrderedDict"): dict, ("builtins", "set"): set, ("builtins", "frozenset"): frozenset,
         ("builtins", "complex"): complex, ("builtins", "slice"): slice, ("builtins", "range"): range}


# What a truncated, corrupt or foreign file raises while unpickling (IndexError: a stack underflow, StopIteration:
# a zip without data.pkl, TypeError/AttributeError: a reduce on something that is not callable; MemoryError: a
# corrupted length field; NotImplementedError: an unsupported zip compression).
_MALFORMED = (pickle.UnpicklingError, zipfile.BadZipFile, EOFError, ValueError, TypeError, KeyError, AttributeError,
              IndexError, StopIteration, OverflowError, RecursionError, NotImplementedError, MemoryError)


class Recorded:
    """Stands in for any class a pickle names: keeps constructor arguments, state and items, runs nothing."""

    _name = "?"
    _args: tuple[Any, ...] = ()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.__dict__.update(kwargs)
        self._args = args

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2:  # (dict, slots dict)
            for part in state:
                if isinstance(part, dict):
                    self.__dict__.update(part)
        elif isinstance(state, dict):
            self.__dict__.update(state)
        else:
            self._state = state

    def __setitem__(self, key: Any, value: Any) -> None:
        self.__dict__.setdefault("_items", {})[key] = value

    def append(self, value: Any) -> None:
        self.__dict__.setdefault("_list", []).append(value)

    def extend(self, values: Any) -> None:
        self.__dict__.setdefault("_list", []).extend(values)

    def __repr__(self) -> str:
        return f"<recorded {self._name}>"


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _SAFE:
            return _SAFE[(module, name)]
        return type(name, (Recorded,), {"_name": f"{module}.{name}"})

    def persistent_load(self, pid: Any) -> None:  # tensor storages: never read
        return None


def _plain(value: Any) -> Any:
    """JSON-friendly form of a recorded value (enums keep their value, other objects their class name)."""
    if isinstance(value, Recorded):
        return value._args[0] if len(value._args) == 1 and isinstance(value._args[0], str | int | float) \
            else repr(value)
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return repr(value)


def read_training_args(path: Path) -> dict[str, Any]:
    """The fields of a pickled ``TrainingArguments``/``DPOConfig`` (``torch.save`` zip or legacy format).

    Nothing in the file is executed. A file that is not such a pickle is one ``DiagError`` line.
    """
    path = Path(path)
    data = path.read_bytes()
    try:
        if zipfile.is_zipfile(io.BytesIO(data)):
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                name = next(n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl")
                obj = _RestrictedUnpickler(io.BytesIO(archive.read(name))).load()
        else:
            stream = io.BytesIO(data)
            obj = _RestrictedUnpickler(stream).load()
            if obj == _TORCH_MAGIC:  # legacy torch.save: magic, protocol, system info, then the object
                for _ in range(3):
                    obj = _RestrictedUnpickler(stream).load()
    except _MALFORMED as exc:  # any malformed pickle or archive: the same one line
        raise DiagError(f"{path}: not a readable training-arguments pickle ({type(exc).__name__}); pass --beta "
                        "to score without it") from None
    if not isinstance(obj, Recorded):
        raise DiagError(f"{path}: holds a {type(obj).__name__}, not training arguments; pass --beta")
    fields = {k: _plain(v) for k, v in vars(obj).items() if not k.startswith("_")}
    return {"class": obj._name, **{k: fields[k] for k in RECORDED if k in fields}}


def is_model_dir(path: Path) -> bool:
    return (path / "adapter_config.json").is_file() or (path / "config.json").is_file()


@dataclass(frozen=True)
class Source:
    """The model directory to load for what the user named, and what TRL recorded with it."""

    model_dir: str  # a directory, or the name as given (hub id, zoo name)
    chosen: str  # which model was taken and why, for the report
    training_args: dict[str, Any] = field(default_factory=dict)
    global_step: int | None = None


def resolve(name: str, with_args: bool = True) -> Source:
    """A TRL output directory -> its final model, else its latest checkpoint; anything else as given.

    ``with_args=False`` skips ``training_args.bin`` (a reference's beta is never used).
    """
    path = Path(name)
    if not path.is_dir():
        return Source(name, "as given")
    checkpoints = sorted((c for c in path.iterdir() if c.is_dir() and CHECKPOINT.match(c.name) and is_model_dir(c)),
                         key=lambda c: int(CHECKPOINT.match(c.name).group(1)))
    if is_model_dir(path):
        chosen = path
        if checkpoints:
            how = f"the final model in {path} (not its checkpoints {', '.join(c.name for c in checkpoints)})"
        elif CHECKPOINT.match(path.name):
            how = f"checkpoint {path.name}"
        else:
            how = f"the {'adapter' if is_adapter_dir(name) else 'model'} in {path}"
    elif checkpoints:
        chosen = checkpoints[-1]
        how = f"the latest checkpoint {chosen.name} ({path} holds no final model)"
    else:
        raise DiagError(f"{path} holds neither a model (config.json), an adapter (adapter_config.json) nor "
                        "checkpoint-N folders")
    args_file = next((f for f in (chosen / TRAINING_ARGS, path / TRAINING_ARGS) if with_args and f.is_file()), None)
    state_file = chosen / "trainer_state.json"
    step = None
    if state_file.is_file():
        try:
            step = int(json.loads(state_file.read_text())["global_step"])
        except (ValueError, KeyError, TypeError):
            step = None
    return Source(str(chosen), how, read_training_args(args_file) if args_file else {}, step)


def is_adapter_dir(name: str) -> bool:
    return (Path(name) / "adapter_config.json").is_file()


def recorded_beta(source: Source) -> float | None:
    """Beta from TRL's training arguments, else from the metadata we write beside our own adapters."""
    if isinstance(source.training_args.get("beta"), int | float):
        return float(source.training_args["beta"])
    from diag.credit.adapters import ADAPTER_META

    meta = Path(source.model_dir) / ADAPTER_META
    beta = json.loads(meta.read_text()).get("beta") if meta.is_file() else None
    return float(beta) if isinstance(beta, int | float) else None


def _same_model(a: str, b: str) -> bool:
    return a == b or (Path(a).exists() and Path(b).exists() and Path(a).resolve() == Path(b).resolve())


def _load(name: str, device: str, dtype: str) -> tuple[Any, Any, dict[str, Any]]:
    """A model, or a base with a PEFT adapter applied, its tokenizer and its measured numerics."""
    from diag.credit.adapters import load_adapter
    from diag.zoo.lm import load_lm_numerics

    return load_adapter(name, device, dtype) if is_adapter_dir(name) else load_lm_numerics(name, device, dtype)


def load_pair(policy: str, reference: str | None, beta: float | None, device: str = "auto",
              dtype: str = "float32") -> Any:
    """A ``ModelPair``: an adapter against its disabled self, or two models (either may be an adapter).

    Both run in ``dtype``; ``pair.numerics`` holds the policy's (or its base's) measured faithfulness.
    """
    from diag.credit.model_pair import ModelPair, load_adapter_pair

    if is_adapter_dir(policy):
        base = json.loads((Path(policy) / "adapter_config.json").read_text()).get("base_model_name_or_path")
        if reference is None or _same_model(reference, base or ""):
            return load_adapter_pair(policy, beta, device, dtype)
    elif reference is None:
        raise DiagError(f"{policy!r} is not a PEFT adapter directory, so a reference model is needed (--reference)")
    if beta is None:
        raise DiagError("beta is needed to turn log-ratios into rewards and none is recorded; pass --beta")
    policy_model, tokenizer, numerics = _load(policy, device, dtype)
    reference_model, reference_tokenizer, _ = _load(reference, device, dtype)
    pair = ModelPair(policy_model, tokenizer, reference_model, reference_tokenizer, beta=beta)
    pair.numerics = numerics
    return pair
