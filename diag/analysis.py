"""The contract every analysis follows: ``Config -> run() -> Result``, cached in the run store.

A ``Config`` is a frozen dataclass of JSON-able fields (it is hashed into the run id). A ``Result`` knows how
to save itself into a run directory, load itself back, summarise itself as one JSON object (what ``--json``
prints) and draw its figures. ``execute`` is the one place that decides between reusing a finished run,
resuming a killed one, and computing a new one.
"""

from __future__ import annotations

import codecs
import dataclasses
import functools
import hashlib
import json
import logging
import math
import numbers
import re
import sys
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

from diag.errors import DiagError
from diag.progress import Progress, no_progress
from diag.runs import Run, RunStore

C = TypeVar("C")
R = TypeVar("R", bound="Result")
log = logging.getLogger("diag.analysis")


class Result(Protocol):
    def summary(self) -> dict[str, Any]:
        """Headline numbers as one JSON-able dict (what ``--json`` prints)."""
        ...

    def save(self, run: Run) -> None:
        """Write arrays, tables and figures into the run directory (``result.json`` is written by execute)."""
        ...

    @classmethod
    def load(cls, run: Run) -> typing.Self:
        """Rebuild the result from a finished run without recomputing anything."""
        ...


def config_to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def config_from_dict(cls: type[C], data: dict[str, Any]) -> C:
    """Build a config dataclass from a dict, rejecting unknown keys and wrong types with one clear line.

    Construction then runs the field checks of ``validated`` (ranges, files, ...), so nothing that passes here
    can fail later on its input's shape.
    """
    owner = _owner(cls)
    if not isinstance(data, dict):
        raise DiagError(f"{owner} config: expected a mapping of fields, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise DiagError(f"{owner} config: unknown field(s) {', '.join(unknown)}; known: {', '.join(fields)}")
    hints = _hints(cls)
    values = {}
    for name, value in data.items():
        values[name] = _coerce(owner, name, hints[name], value)
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        raise DiagError(f"{owner} config: {exc}") from exc


def _coerce(owner: str, name: str, hint: Any, value: Any) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        for option in args:
            try:
                return _coerce(owner, name, option, value)
            except DiagError:
                continue
        raise DiagError(f"{owner}.{name} must be {_describe(hint)}, got {_show(value)}")
    if hint is type(None):
        if value is None:
            return None
        raise DiagError(f"{owner}.{name} must be null, got {_show(value)}")
    if origin is typing.Literal:
        if value in args:
            return value
        raise DiagError(f"{owner}.{name} must be one of {', '.join(map(repr, args))}, got {_show(value)}")
    if origin in (tuple, list):
        if not isinstance(value, list | tuple):
            raise DiagError(f"{owner}.{name} must be a list, got {_show(value)}")
        item = args[0] if args else Any
        items = [_coerce(owner, name, item, v) for v in value]
        return tuple(items) if origin is tuple else items
    if hint is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if hint in (int, str, bool) and not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        raise DiagError(f"{owner}.{name} must be {_describe(hint)}, got {_show(value)}")
    return value


# ---- Field checks: what each Config field accepts, declared next to it, checked on every construction ----

MAX_SEED = 2**32 - 1  # numpy's seed range; torch's is wider
# The dtypes a model may run in (a Config field of this type is checked like any Literal; diag.device maps them)
DtypeName = Literal["float32", "bfloat16", "float16"]
_DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")
_TEXT_SNIFF = 1 << 16  # bytes read to tell a text file from a binary one


@dataclasses.dataclass(frozen=True)
class Check:
    """What a Config field accepts beyond its type hint (for a tuple: each item, and its length).

    Numbers lie in [low, high], or in (above, high] where zero is meaningless (rates, temperatures); NaN and
    infinities never pass. Text is non-empty unless ``empty`` (the empty string then means a default).
    ``kind`` "file": an existing UTF-8 text file, or one of ``names``; "model": a model name, directory or hub
    id (``diag.zoo.sources``); "device": auto, cpu, mps or cuda[:N]. ``layer_of`` names the field holding the
    model these block indices must exist in, read from its config file (no weights, no torch).
    """

    low: float | None = None
    high: float | None = None
    above: float | None = None
    min_len: int = 1
    max_len: int | None = None
    empty: bool = False
    kind: Literal["text", "file", "model", "device"] = "text"
    names: tuple[str, ...] = ()
    layer_of: str | None = None


def checked(default: Any, **check: Any) -> Any:
    """A dataclass field with its ``Check`` as metadata: ``n: int = checked(32, low=1, high=4096)``."""
    return dataclasses.field(default=default, metadata={"check": Check(**check)})


def validated(cls: type[C]) -> type[C]:
    """Class decorator (under ``@dataclass``): every construction checks each field first.

    ``Config(...)``, ``config_from_dict`` and ``dataclasses.replace`` all run ``check_fields`` before the
    class's own ``__post_init__``, which is left to checks across fields. So the CLI, ``diag run``, sweeps, the
    app's forms and notebooks refuse the same values with the same line, before any run is opened.
    """
    own = cls.__dict__.get("__post_init__")

    def __post_init__(self: Any) -> None:
        check_fields(self)
        if own is not None:
            own(self)

    cls.__post_init__ = __post_init__  # type: ignore[attr-defined]
    return cls


def check_fields(config: Any) -> None:
    """Raise one ``DiagError`` line for the first field whose value its type and ``Check`` refuse."""
    owner = _owner(type(config))
    hints = _hints(type(config))
    fields = dataclasses.fields(config)
    for f in fields:
        check = f.metadata.get("check", Check())
        _check_value(f"{owner}.{f.name}", hints[f.name], getattr(config, f.name), check)
    for f in fields:
        model_field = f.metadata.get("check", Check()).layer_of
        if model_field is not None:
            from diag.zoo.sources import check_layer_range

            layers = getattr(config, f.name)
            layers = layers if isinstance(layers, tuple | list) else [layers]
            check_layer_range(getattr(config, model_field), layers)


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _owner(cls: type) -> str:
    """The analysis a Config belongs to (its module's ``ANALYSIS``), which is what a user typed."""
    return getattr(sys.modules.get(cls.__module__), "ANALYSIS", cls.__name__)


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _describe(hint: Any) -> str:
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if typing.get_origin(hint) in (tuple, list):
        return f"a list of {_describe(args[0]) if args else 'values'}"
    if typing.get_origin(hint) is typing.Literal:
        return "one of " + ", ".join(map(repr, args))
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false",
            type(None): "null"}.get(hint, str(hint))


def _check_value(where: str, hint: Any, value: Any, check: Check) -> None:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return
        options = [a for a in args if a is not type(None)]
        errors = []
        for option in options:
            try:
                return _check_value(where, option, value, check)
            except DiagError as exc:
                errors.append(exc)
        if len(options) == 1:
            raise errors[0]
        raise DiagError(f"{where} must be {_describe(hint)}, got {_show(value)}")
    if origin is typing.Literal:
        if value not in args:
            raise DiagError(f"{where} must be one of {', '.join(map(repr, args))}, got {_show(value)}")
        return
    if origin in (tuple, list):
        if not isinstance(value, list | tuple):
            raise DiagError(f"{where} must be {_describe(hint)}, got {_show(value)}")
        if not value and check.min_len > 0:
            owner, _, name = where.rpartition(".")
            raise DiagError(f"{owner}: no {name} given")
        if len(value) < check.min_len:
            raise DiagError(f"{where} must have at least {check.min_len} items, got {len(value)}")
        if check.max_len is not None and len(value) > check.max_len:
            raise DiagError(f"{where} must have at most {check.max_len} items, got {len(value)}")
        for item in value:
            _check_value(where, args[0] if args else Any, item, check)
        return
    if hint is bool:
        if not isinstance(value, bool):
            raise DiagError(f"{where} must be true or false, got {_show(value)}")
    elif hint is int or hint is float:
        _check_number(where, hint, value, check)
    elif hint is str:
        _check_text(where, value, check)


def _check_number(where: str, hint: type, value: Any, check: Check) -> None:
    kind = numbers.Integral if hint is int else numbers.Real
    if isinstance(value, bool) or not isinstance(value, kind):
        raise DiagError(f"{where} must be {_describe(hint)}, got {_show(value)}")
    if not math.isfinite(value):
        raise DiagError(f"{where} must be a finite number, got {value}")
    below = check.low is not None and value < check.low
    at_or_below = check.above is not None and value <= check.above
    if below or at_or_below or (check.high is not None and value > check.high):
        raise DiagError(f"{where} {_num(value)} out of range: must be {_range_text(check, hint is int)}")


def _range_text(check: Check, integral: bool) -> str:
    if integral and check.low is not None and check.high is not None:
        return f"{_num(check.low)}..{_num(check.high)}"
    bounds = ((">=", check.low), (">", check.above), ("<=", check.high))
    parts = [f"{sign} {_num(bound)}" for sign, bound in bounds if bound is not None]
    return " and ".join(parts)


def _num(value: float) -> str:
    return str(value) if isinstance(value, numbers.Integral) else f"{value:g}"


def _check_text(where: str, value: Any, check: Check) -> None:
    if not isinstance(value, str):
        raise DiagError(f"{where} must be a string, got {_show(value)}")
    if not value.strip():
        if check.empty and value == "":
            return
        raise DiagError(f"{where} must not be empty")
    if check.kind == "device" and not _DEVICE.fullmatch(value):
        raise DiagError(f"{where}: unknown device {value!r}: use auto, cpu or cuda[:N]")
    if check.kind == "model":
        from diag.zoo.sources import resolve_lm_source

        resolve_lm_source(value)
    if check.kind == "file" and value not in check.names:
        choices = f"; use a text file or one of {', '.join(check.names)}" if check.names else ""
        check_text_file(Path(value), f"{where}: {value}", choices)


def check_text_file(path: Path, what: str, hint: str = "") -> None:
    """One line unless ``path`` is an existing UTF-8 text file: missing, a directory, special or binary."""
    if not path.exists():
        raise DiagError(f"{what} does not exist{hint}")
    if path.is_dir():
        raise DiagError(f"{what} is a directory, not a file{hint}")
    if not path.is_file():
        raise DiagError(f"{what} is not a regular file{hint}")
    with open(path, "rb") as fh:
        head = fh.read(_TEXT_SNIFF)
    nul = head.find(b"\0")
    if nul >= 0:  # valid UTF-8, but no text file holds NUL bytes
        raise DiagError(f"{what} is not a UTF-8 text file (binary data at byte {nul})")
    try:
        # a full sniff may end inside a character: only a complete file must decode to its last byte
        codecs.getincrementaldecoder("utf-8")().decode(head, final=len(head) < _TEXT_SNIFF)
    except UnicodeDecodeError as exc:
        line = head.count(b"\n", 0, exc.start) + 1
        raise DiagError(f"{what} is not a UTF-8 text file (line {line}, byte 0x{head[exc.start]:02x}); "
                        "save it as UTF-8") from exc


def read_json_file(path: Path, what: str) -> Any:
    """Parse a JSON file a user wrote; a missing, binary or malformed file is one line saying where."""
    path = Path(path)
    check_text_file(path, f"{what} {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise DiagError(f"{what} {path} is not a UTF-8 text file (binary data at byte {exc.start})") from exc
    except json.JSONDecodeError as exc:
        raise DiagError(f"{what} {path}: invalid JSON at line {exc.lineno}, column {exc.colno}: "
                        f"{json_error_reason(exc)}") from exc


def json_error_reason(exc: json.JSONDecodeError) -> str:
    """json's message without its dangling position words ("Invalid control character at")."""
    return exc.msg.removesuffix(" at").removesuffix(" starting")


_HASHED_FILE_LIMIT = 1 << 30  # bigger files inside a directory (full model weights) count by size and mtime


def fingerprint(path: Path) -> str:
    """sha256 of a file's bytes, or over a directory's files (relative names and bytes, hidden files skipped).

    Analyses put it in their config for the local files they read (checkpoints, adapters, models, data), so a
    replaced file gives a new run id instead of silently reusing a run made from the old one.
    """
    path = Path(path)
    if path.is_file():
        return _hash_into(hashlib.sha256(), path).hexdigest()
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        relative = file.relative_to(path)
        if any(part.startswith(".") for part in relative.parts):
            continue
        digest.update(str(relative).encode() + b"\0")
        stat = file.stat()
        if stat.st_size > _HASHED_FILE_LIMIT:
            digest.update(f"{stat.st_size}:{stat.st_mtime_ns}".encode())
        else:
            _hash_into(digest, file)
    return digest.hexdigest()


def _hash_into(digest: Any, file: Path) -> Any:
    with open(file, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest


def pin_model(config: Any) -> Any:
    """Fill ``model_sha256`` (for configs that have it) from the local model directory ``model`` names, else None."""
    if "model_sha256" not in {f.name for f in dataclasses.fields(config)}:
        return config
    from diag.zoo.sources import resolve_lm_source  # torch-free, so a refused run never waits for torch

    source = resolve_lm_source(config.model)  # the embedded model and hub ids are fixed by their name
    # a local directory, or the committed adapter an embedded-adapter model merges in (retraining it = new runs)
    sha = fingerprint(Path(source.location)) if source.kind in ("local", "embedded-adapter") else None
    return dataclasses.replace(config, model_sha256=sha)


def pinned(module: types.ModuleType, config: Any) -> Any:
    """The config with the fingerprints of the local files it reads filled in (the module's ``pin_inputs``).

    Every place that derives a run id from a config goes through here, so it names the same run ``run()`` does.
    """
    pin = getattr(module, "pin_inputs", None)
    config = pin_model(config)
    return pin(config) if pin is not None else config


def read_json_lines(path: Path, what: str) -> list[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line of a JSONL file a user wrote, all or nothing.

    The first bad line raises ``DiagError`` as ``PATH:LINE: problem``, so callers that validate fields use the
    same prefix and an import never stops half-way.
    """
    path = Path(path)
    check_text_file(path, f"{what} {path}")
    records = []
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DiagError(f"{path}:{number}: invalid JSON at column {exc.colno}: "
                                f"{json_error_reason(exc)}") from exc
            if not isinstance(record, dict):
                raise DiagError(f"{path}:{number}: expected a JSON object, got {type(record).__name__}")
            records.append((number, record))
    if not records:
        raise DiagError(f"{what} {path} is empty")
    return records


def load_config_file(path: Path) -> tuple[str, dict[str, Any]]:
    """Read ``{"analysis": NAME, ...fields}`` from a JSON file."""
    data = read_json_file(path, "config file")
    if not isinstance(data, dict) or "analysis" not in data:
        raise DiagError(f"config file {path}: expected an object with an \"analysis\" field")
    analysis = data.pop("analysis")
    return analysis, data


def execute(
    analysis: str,
    config: Any,
    compute: Callable[[Run, Progress], R],
    result_type: type[R],
    *,
    store: RunStore | None = None,
    progress: Progress = no_progress,
    group: str | None = None,
) -> R:
    """Reuse the finished run for this config, or compute it (resuming from its checkpoint) and save it.

    ``compute`` may call ``run.save_checkpoint``/``run.load_checkpoint`` to survive kills. Nothing marks the
    run finished until the result has been saved completely. A finished run is reused only if its files match
    their hashes; a corrupt one is said so in one warning line and computed again, which repairs it.
    """
    store = store or RunStore()
    run = store.open(analysis, config_to_dict(pin_model(config)), group=group)
    if run.finished:
        problem = run.problem(full=True)
        if problem is None:
            store.last_run_id = run.run_id
            return result_type.load(run)
        log.warning("run %s is corrupt: %s; computing it again", run.run_id, problem)
        run.reset()
    try:
        result = compute(run, progress)
        result.save(run)
    except DiagError as exc:
        # Bad input: nothing worth keeping, and no half-written run left behind. A run that checkpointed before
        # stopping is kept (running its config again resumes it) and marked failed, so it never reads as running.
        if run.load_checkpoint() is None:
            store.remove(run.run_id)
        else:
            run.fail(f"{type(exc).__name__}: {exc}")
        raise
    except BaseException as exc:
        run.fail(f"{type(exc).__name__}: {exc}")
        raise
    run.finish(result.summary())
    store.last_run_id = run.run_id  # set after compute, so an analysis that runs others still names its own run
    return result
