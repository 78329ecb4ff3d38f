"""The contract every analysis follows: ``Config -> run() -> Result``, cached in the run store.

A ``Config`` is a frozen dataclass of JSON-able fields (it is hashed into the run id). A ``Result`` knows how
to save itself into a run directory, load itself back, summarise itself as one JSON object (what ``--json``
prints) and draw its figures. ``execute`` is the one place that decides between reusing a finished run,
resuming a killed one, and computing a new one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

from diag.errors import DiagError
from diag.progress import Progress, no_progress
from diag.runs import Run, RunStore

C = TypeVar("C")
R = TypeVar("R", bound="Result")


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
    """Build a config dataclass from a dict, rejecting unknown keys and wrong types with one clear line."""
    if not isinstance(data, dict):
        raise DiagError(f"{cls.__name__}: expected a mapping of fields, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise DiagError(f"{cls.__name__}: unknown field(s) {', '.join(unknown)}; known: {', '.join(fields)}")
    hints = typing.get_type_hints(cls)
    values = {}
    for name, value in data.items():
        values[name] = _coerce(cls.__name__, name, hints[name], value)
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        raise DiagError(f"{cls.__name__}: {exc}") from exc


def _coerce(owner: str, name: str, hint: Any, value: Any) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        for option in args:
            try:
                return _coerce(owner, name, option, value)
            except DiagError:
                continue
        raise DiagError(f"{owner}.{name}: {value!r} does not match {hint}")
    if hint is type(None):
        if value is None:
            return None
        raise DiagError(f"{owner}.{name}: expected null, got {value!r}")
    if origin is typing.Literal:
        if value in args:
            return value
        raise DiagError(f"{owner}.{name}: {value!r} is not one of {', '.join(map(repr, args))}")
    if origin in (tuple, list):
        if not isinstance(value, list | tuple):
            raise DiagError(f"{owner}.{name}: expected a list, got {value!r}")
        item = args[0] if args else Any
        items = [_coerce(owner, name, item, v) for v in value]
        return tuple(items) if origin is tuple else items
    if hint is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if hint in (int, str, bool) and not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        raise DiagError(f"{owner}.{name}: expected {hint.__name__}, got {value!r}")
    return value


def read_json_file(path: Path, what: str) -> Any:
    """Parse a JSON file a user wrote; a missing file or bad JSON is one line naming the file and the line."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError as exc:
        raise DiagError(f"{what} {path} does not exist") from exc
    except json.JSONDecodeError as exc:
        raise DiagError(f"{what} {path}: invalid JSON at line {exc.lineno}: {exc.msg}") from exc


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
    from diag.zoo.lm import local_model_fingerprint

    return dataclasses.replace(config, model_sha256=local_model_fingerprint(config.model))


def pinned(module: types.ModuleType, config: Any) -> Any:
    """The config with the fingerprints of the local files it reads filled in (the module's ``pin_inputs``).

    Every place that derives a run id from a config goes through here, so it names the same run ``run()`` does.
    """
    pin = getattr(module, "pin_inputs", None)
    config = pin_model(config)
    return pin(config) if pin is not None else config


def check_text_file(path: Path, what: str) -> None:
    """One line for what is not a readable UTF-8 text file: missing, a directory, binary, or another encoding."""
    path = Path(path)
    if path.is_dir():
        raise DiagError(f"{what} {path} is a directory; give a JSONL file")
    if not path.is_file():
        raise DiagError(f"{what} {path} does not exist")
    data = path.read_bytes()
    if b"\0" in data[:65536]:
        raise DiagError(f"{path}: a binary file, not JSONL text")
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise DiagError(f"{path}:{line}: not UTF-8 text (byte 0x{data[exc.start]:02x}); save the file as "
                        "UTF-8") from None


def read_json_lines(path: Path, what: str) -> list[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line of a JSONL file a user wrote, all or nothing.

    The first bad line raises ``DiagError`` as ``PATH:LINE: problem``, so callers that validate fields use the
    same prefix and an import never stops half-way.
    """
    path = Path(path)
    check_text_file(path, what)
    records = []
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DiagError(f"{path}:{number}: invalid JSON ({exc.msg} at column {exc.colno})") from exc
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
    run finished until the result has been saved completely.
    """
    store = store or RunStore()
    run = store.open(analysis, config_to_dict(pin_model(config)), group=group)
    if run.finished:
        store.last_run_id = run.run_id
        return result_type.load(run)
    try:
        result = compute(run, progress)
        result.save(run)
    except DiagError:
        # Bad input: nothing worth keeping, and no half-written run left behind.
        if run.load_checkpoint() is None:
            store.remove(run.run_id)
        raise
    except BaseException as exc:
        run.fail(f"{type(exc).__name__}: {exc}")
        raise
    run.finish(result.summary())
    store.last_run_id = run.run_id  # set after compute, so an analysis that runs others still names its own run
    return result
