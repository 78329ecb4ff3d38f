"""The run store: one directory per run, atomic writes, a SQLite index, checkpoints for resume.

A run is a pure function of (analysis, config), so its id is content-addressed: asking for the same
config again finds the finished run instead of recomputing it, and a killed run resumes from its last
checkpoint. ``result.json`` is written last and atomically; its presence is what "finished" means on
disk, so a kill at any point leaves either a complete run or no result at all.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from diag.errors import DiagError

RESULT_FILE = "result.json"
CONFIG_FILE = "config.json"
CHECKPOINT_FILE = "checkpoint.pt"


def diag_home() -> Path:
    """``$DIAG_HOME`` or ``~/.cache/diag``: runs, model caches and app state live under it."""
    return Path(os.environ.get("DIAG_HOME", Path.home() / ".cache" / "diag"))


def config_hash(analysis: str, config: dict[str, Any]) -> str:
    """Stable hash of a config (sorted keys) so equal configs map to the same run."""
    canonical = json.dumps({"analysis": analysis, "config": config}, sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


@contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it over ``target`` only if the block succeeds."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, target)
    finally:
        tmp_path.unlink(missing_ok=True)


def write_bytes_atomic(target: Path, data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def write_json_atomic(target: Path, obj: Any) -> None:
    write_bytes_atomic(target, json.dumps(obj, indent=2, sort_keys=True, default=_json_default).encode())


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


@dataclass(frozen=True)
class RunInfo:
    """One row of the index: enough to list, filter and open a run."""

    run_id: str
    analysis: str
    status: str
    created: float
    updated: float
    group_name: str | None
    summary: dict[str, Any]
    path: Path


class Run:
    """Handle on one run directory. Every write is atomic."""

    def __init__(self, store: RunStore, run_id: str) -> None:
        self.store = store
        self.run_id = run_id
        self.dir = store.root / run_id

    # -- identity -------------------------------------------------------------------------------
    @property
    def config(self) -> dict[str, Any]:
        return json.loads((self.dir / CONFIG_FILE).read_text())["config"]

    @property
    def analysis(self) -> str:
        return json.loads((self.dir / CONFIG_FILE).read_text())["analysis"]

    @property
    def finished(self) -> bool:
        return (self.dir / RESULT_FILE).exists()

    def path(self, name: str) -> Path:
        return self.dir / name

    # -- files ----------------------------------------------------------------------------------
    def write_json(self, name: str, obj: Any) -> Path:
        target = self.dir / name
        write_json_atomic(target, obj)
        return target

    def read_json(self, name: str) -> Any:
        target = self.dir / name
        if not target.exists():
            raise DiagError(f"run {self.run_id} has no {name}")
        return json.loads(target.read_text())

    def write_text(self, name: str, text: str) -> Path:
        target = self.dir / name
        write_bytes_atomic(target, text.encode())
        return target

    def write_arrays(self, name: str, arrays: dict[str, Any]) -> Path:
        """Save named arrays (numpy or torch) as ``.npz``, compressed."""
        target = self.dir / (name if name.endswith(".npz") else f"{name}.npz")
        buf = io.BytesIO()
        np.savez_compressed(buf, **{k: _to_numpy(v) for k, v in arrays.items()})
        write_bytes_atomic(target, buf.getvalue())
        return target

    def read_arrays(self, name: str) -> dict[str, np.ndarray]:
        target = self.dir / (name if name.endswith(".npz") else f"{name}.npz")
        if not target.exists():
            raise DiagError(f"run {self.run_id} has no arrays {target.name}")
        with np.load(target, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}

    def write_figure(self, name: str, fig: Any) -> Path:
        """Save a matplotlib figure as PNG (the report inlines it) and close it."""
        import matplotlib.pyplot as plt

        target = self.dir / "figures" / (name if name.endswith(".png") else f"{name}.png")
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
        plt.close(fig)
        write_bytes_atomic(target, buf.getvalue())
        return target

    def figure_paths(self) -> list[Path]:
        fig_dir = self.dir / "figures"
        return sorted(fig_dir.glob("*.png")) if fig_dir.exists() else []

    # -- checkpoints ----------------------------------------------------------------------------
    def save_checkpoint(self, state: dict[str, Any]) -> None:
        """Persist resumable state (tensors, RNG states, step counters) atomically."""
        import torch

        buf = io.BytesIO()
        torch.save(state, buf)
        write_bytes_atomic(self.dir / CHECKPOINT_FILE, buf.getvalue())

    def load_checkpoint(self) -> dict[str, Any] | None:
        import torch

        target = self.dir / CHECKPOINT_FILE
        if not target.exists():
            return None
        return torch.load(target, map_location="cpu", weights_only=False)

    # -- lifecycle ------------------------------------------------------------------------------
    def finish(self, summary: dict[str, Any]) -> None:
        """Mark the run complete: ``result.json`` last, then the index, then drop the checkpoint."""
        self.write_json(RESULT_FILE, {"summary": summary, "finished": time.time()})
        self.store._set_status(self.run_id, "finished", summary)
        (self.dir / CHECKPOINT_FILE).unlink(missing_ok=True)

    def fail(self, message: str) -> None:
        self.store._set_status(self.run_id, "failed", {"error": message})

    @property
    def summary(self) -> dict[str, Any]:
        return self.read_json(RESULT_FILE)["summary"]


def _to_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value)


class RunStore:
    """All runs under one root, indexed in SQLite for listing and filtering."""

    def __init__(self, root: Path | str | None = None) -> None:
        self.root = Path(root) if root is not None else diag_home() / "runs"
        self.root.mkdir(parents=True, exist_ok=True)
        self.last_run_id: str | None = None  # the run the latest diag.analysis.execute on this store returned
        self._db_path = self.root / "index.sqlite"
        with self._connect() as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS runs (run_id TEXT PRIMARY KEY, analysis TEXT, status TEXT,"
                " created REAL, updated REAL, group_name TEXT, summary TEXT)"
            )

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self._db_path, timeout=30)
        db.execute("PRAGMA journal_mode=WAL")
        return db

    def open(self, analysis: str, config: dict[str, Any], group: str | None = None) -> Run:
        """Return the run for this config, creating its directory and index row if new."""
        run_id = f"{analysis}-{config_hash(analysis, config)}"
        run = Run(self, run_id)
        if not (run.dir / CONFIG_FILE).exists():
            run.dir.mkdir(parents=True, exist_ok=True)
            write_json_atomic(run.dir / CONFIG_FILE, {"analysis": analysis, "config": config, **_provenance()})
        now = time.time()
        with self._connect() as db:
            db.execute(
                "INSERT OR IGNORE INTO runs VALUES (?, ?, ?, ?, ?, ?, ?)",
                (run_id, analysis, "finished" if run.finished else "running", now, now, group, "{}"),
            )
            if group is not None:
                db.execute("UPDATE runs SET group_name=? WHERE run_id=?", (group, run_id))
        return run

    def get(self, run_id: str) -> Run:
        run = Run(self, run_id)
        if not (run.dir / CONFIG_FILE).exists():
            matches = [p.name for p in self.root.iterdir() if p.is_dir() and p.name.startswith(run_id)]
            if len(matches) != 1:
                raise DiagError(f"no run {run_id!r} in {self.root} (see `diag runs list`)")
            run = Run(self, matches[0])
        return run

    def list(
        self, analysis: str | None = None, status: str | None = None, group: str | None = None
    ) -> list[RunInfo]:
        query, args = "SELECT * FROM runs WHERE 1=1", []
        for column, value in (("analysis", analysis), ("status", status), ("group_name", group)):
            if value is not None:
                query += f" AND {column}=?"
                args.append(value)
        with self._connect() as db:
            rows = db.execute(query + " ORDER BY updated DESC", args).fetchall()
        return [
            RunInfo(r[0], r[1], r[2], r[3], r[4], r[5], json.loads(r[6] or "{}"), self.root / r[0])
            for r in rows
        ]

    def remove(self, run_id: str) -> None:
        run = self.get(run_id)
        shutil.rmtree(run.dir)
        with self._connect() as db:
            db.execute("DELETE FROM runs WHERE run_id=?", (run.run_id,))

    def _set_status(self, run_id: str, status: str, summary: dict[str, Any]) -> None:
        with self._connect() as db:
            db.execute(
                "UPDATE runs SET status=?, updated=?, summary=? WHERE run_id=?",
                (status, time.time(), json.dumps(summary, default=_json_default), run_id),
            )


def _provenance() -> dict[str, Any]:
    """Library versions recorded with every run, so numbers can be traced to their software."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for pkg in ("diag", "torch", "transformers", "numpy", "ale-py", "gymnasium", "peft", "captum"):
        try:
            versions[pkg] = version(pkg)
        except PackageNotFoundError:
            continue
    return {"versions": versions, "python": platform.python_version(), "created": time.time()}
