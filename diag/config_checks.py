"""Config values: how a JSON mapping becomes a Config, and what each field accepts.

A Config field declares its ``Check`` next to it (``diag.contract.checked``); ``check_fields`` runs on every
construction (``diag.contract.validated``), so the CLI, ``diag run``, sweeps, the app's forms and notebooks refuse
the same values with the same one-line ``DiagError``, before any run is opened. Torch-free.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar

from diag.errors import DiagError
from diag.files import check_text_file

C = TypeVar("C")
OWNERS: dict[type, str] = {}  # Config class -> analysis name, for error lines ("tir.temperature ..."); set by Analysis
_DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


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


def config_to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def config_from_dict(cls: type[C], data: dict[str, Any]) -> C:
    """Build a config dataclass from a dict, rejecting unknown keys and wrong types with one clear line.

    Construction then runs the field checks of ``diag.contract.validated`` (ranges, files, ...), so nothing that passes here
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


def load_config_file(path: Path) -> tuple[str, dict[str, Any]]:
    """Read ``{"analysis": NAME, ...fields}`` from a JSON file."""
    from diag.files import read_json_file

    data = read_json_file(path, "config file")
    if not isinstance(data, dict) or "analysis" not in data:
        raise DiagError(f"config file {path}: expected an object with an \"analysis\" field")
    analysis = data.pop("analysis")
    return analysis, data


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
    """The analysis a Config belongs to (the ``Analysis`` declared with it), which is what a user typed."""
    return OWNERS.get(cls, cls.__name__)


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
