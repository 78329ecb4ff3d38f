"""A finished run out of the store in plain formats: tables as CSV and JSON, arrays as NPZ and CSV, figures as
PNG (and SVG where the Result draws matplotlib figures), and the summary as JSON.

One implementation for every front end: ``diag runs export`` writes a directory, the app's download buttons
serve the same bytes (``table_csv``, ``table_json``, ``arrays_npz``, ``export_zip``). Tables and arrays are
found in the run's own files, so every analysis, present or future, exports without code of its own:

- a table is a list of JSON objects (records) anywhere in a result ``.json`` file (nested up to three keys deep),
  a ``.jsonl`` file, or an object whose values are all objects of scalars (one row per key);
- arrays are the ``.npz`` and ``.safetensors`` files; a 1-D or 2-D array also becomes a CSV.
"""

from __future__ import annotations

import io
import json
import re
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from diag.atomic import atomic_dir, json_default
from diag.errors import DiagError
from diag.run_dir import Run
from diag.run_files import CONFIG_FILE, MANIFEST_FILE, RESULT_FILE
from diag.runs import RunStore

_BOOKKEEPING = {CONFIG_FILE, MANIFEST_FILE, RESULT_FILE}
_MAX_DEPTH = 3
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def _safe(name: str) -> str:
    return _UNSAFE.sub("_", name).strip("._") or "table"


def _files(run: Run, suffix: str) -> list[Path]:
    """The run's own files ending in ``suffix`` (sorted, bookkeeping and hidden files left out)."""
    return sorted(p for p in run.dir.rglob(f"*{suffix}") if p.is_file() and not p.is_symlink()
                  and p.name not in _BOOKKEEPING and not any(part.startswith(".") for part in
                                                             p.relative_to(run.dir).parts))


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def _records_in(value: Any, name: str, depth: int = 0) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        yield name, value
    elif isinstance(value, dict) and value:
        rows = list(value.values())
        if all(isinstance(r, dict) and r and all(_scalar(x) for x in r.values()) for r in rows):
            yield name, [{"key": k, **r} for k, r in value.items()]
        elif depth < _MAX_DEPTH:
            for key, inner in value.items():
                yield from _records_in(inner, f"{name}.{key}", depth + 1)


def _frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    """Records as a frame; a nested value (a list of token rewards, say) is kept as its JSON text."""
    rows = [{k: v if _scalar(v) else json.dumps(v) for k, v in r.items()} for r in records]
    return pd.DataFrame(rows)


def tables(run: Run) -> dict[str, pd.DataFrame]:
    """Every table in the run's JSON and JSONL files, named FILE[.KEY...] (file stem, then the keys to it)."""
    out: dict[str, pd.DataFrame] = {}
    for path in _files(run, ".json"):
        stem = path.relative_to(run.dir).with_suffix("").as_posix()
        for name, records in _records_in(run.read_json(path.relative_to(run.dir).as_posix()), stem):
            out[_safe(name)] = _frame(records)
    for path in _files(run, ".jsonl"):
        try:
            records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DiagError(f"run {run.run_id} is corrupt: {path.name} is not JSON lines ({exc})") from exc
        if records and all(isinstance(r, dict) for r in records):
            out[_safe(path.relative_to(run.dir).with_suffix("").as_posix())] = _frame(records)
    return out


def arrays(run: Run) -> dict[str, dict[str, np.ndarray]]:
    """Every array file of the run, by name (path without suffix): ``.npz`` archives and ``.safetensors``."""
    out: dict[str, dict[str, np.ndarray]] = {}
    for path in _files(run, ".npz"):
        out[_safe(path.relative_to(run.dir).with_suffix("").as_posix())] = run.read_arrays(
            path.relative_to(run.dir).as_posix())
    for path in _files(run, ".safetensors"):
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        try:
            out[_safe(path.relative_to(run.dir).with_suffix("").as_posix())] = load_file(path)
        except (SafetensorError, TypeError, ValueError) as exc:  # bf16 has no numpy dtype, say
            raise DiagError(f"run {run.run_id}: {path.name} does not load as numpy arrays ({exc})") from exc
    return out


def table_csv(frame: pd.DataFrame) -> bytes:
    return frame.to_csv(index=False).encode()


def table_json(frame: pd.DataFrame) -> bytes:
    """Records, one object per row (missing as null), with every float's full precision."""
    records = frame.astype(object).where(frame.notna(), None).to_dict("records")
    return json.dumps(records, indent=1, ensure_ascii=False, default=json_default).encode()


def arrays_npz(named: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **named)
    return buf.getvalue()


def array_csv(array: np.ndarray) -> bytes | None:
    """A 1-D array as one column, a 2-D one as rows x columns; None for other shapes (NPZ only)."""
    if array.ndim not in (1, 2) or array.dtype.kind not in "biufcUS":
        return None
    frame = pd.DataFrame(array if array.ndim == 2 else {"value": array})
    return frame.to_csv(index=array.ndim == 1, index_label="index").encode()


def summary_json(run: Run, store: RunStore | None = None) -> bytes:
    """What the run is (id, analysis, config, label) and its summary, as one JSON object."""
    label = store.info(run.run_id).label.as_dict() if store is not None else None
    return json.dumps({"run_id": run.run_id, "analysis": run.analysis, "config": run.config,
                       **({"label": label} if label else {}), "summary": run.summary},
                      indent=2, sort_keys=True, default=str).encode()


def _write_all(run: Run, out: Path, store: RunStore | None) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from diag.registry import find

    written: dict[str, bytes] = {"summary.json": summary_json(run, store)}
    for name, frame in tables(run).items():
        written[f"tables/{name}.csv"] = table_csv(frame)
        written[f"tables/{name}.json"] = table_json(frame)
    for name, named in arrays(run).items():
        written[f"arrays/{name}.npz"] = arrays_npz(named)
        for key, array in named.items():
            data = array_csv(array)
            if data is not None:
                written[f"arrays/{name}/{_safe(key)}.csv"] = data
    for path in run.figure_paths():
        written[f"figures/{path.name}"] = path.read_bytes()
    analysis = find(run.analysis)
    if analysis is not None:
        result = analysis.result.load(run)
        for name, fig in (result.figures() if hasattr(result, "figures") else {}).items():
            buf = io.BytesIO()
            fig.savefig(buf, format="svg", bbox_inches="tight")
            plt.close(fig)
            written[f"figures/{_safe(name)}.svg"] = buf.getvalue()
    for relative, data in written.items():
        (out / relative).parent.mkdir(parents=True, exist_ok=True)
        (out / relative).write_bytes(data)
    return sorted(written)


def export_run(run: Run, out: Path, store: RunStore | None = None) -> list[str]:
    """Write the run's export into ``out`` (which must not exist, or be empty); returns the files' relative paths.

    Only a finished run exports (``store.get`` has checked its hashes); the files are written into a temporary
    directory beside ``out`` and renamed into place, so a failure leaves no half-written export.
    """
    if not run.finished:
        raise DiagError(f"run {run.run_id} is not finished: nothing to export yet")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DiagError(f"{out} already exists and is not an empty directory: choose another --out")
    with atomic_dir(out) as staging:
        names = _write_all(run, staging, store)
    return names


def export_zip(run: Run, store: RunStore | None = None) -> bytes:
    """The whole export as one ZIP archive (the app's "everything" download)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / run.run_id
        names = export_run(run, out, store)
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as archive:
            for name in names:
                archive.write(out / name, f"{run.run_id}/{name}")
    return buf.getvalue()
