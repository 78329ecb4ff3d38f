"""``Run``: the handle on one run directory: its files, arrays and figures, checkpoints, integrity, lifecycle.

Every write is atomic. The handle reads and writes its own directory; the store (``diag.runs``) creates it,
indexes it and is told of each change of status.
"""

from __future__ import annotations

import io
import json
import logging
import time
import zipfile
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from diag.atomic import json_default, write_bytes_atomic, write_json_atomic
from diag.errors import DiagError, first_line
from diag.liveness import alive, this_process
from diag.run_files import (
    CHECKPOINT_FILE,
    CONFIG_FILE,
    MANIFEST_FILE,
    PROCESS_FILE,
    RESULT_FILE,
    files_problem,
    result_files,
    write_manifest,
)

if TYPE_CHECKING:
    from diag.runs import RunStore

log = logging.getLogger("diag.runs")


class Run:
    """Handle on one run directory. Every write is atomic."""

    def __init__(self, store: RunStore, run_id: str) -> None:
        self.store = store
        self.run_id = run_id
        self.dir = store.root / run_id
        self._hashes_checked = False

    # -- identity -------------------------------------------------------------------------------
    @property
    def config(self) -> dict[str, Any]:
        return self.read_json(CONFIG_FILE)["config"]

    @property
    def analysis(self) -> str:
        return self.read_json(CONFIG_FILE)["analysis"]

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
        try:
            return json.loads(target.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DiagError(f"run {self.run_id} is corrupt: {name} is not valid JSON ({exc})") from exc

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
        try:
            with np.load(target, allow_pickle=False) as data:
                return {k: data[k] for k in data.files}
        except (zipfile.BadZipFile, EOFError, ValueError, OSError, zlib.error) as exc:
            raise DiagError(f"run {self.run_id} is corrupt: {target.name} does not load ({exc})") from exc

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
        """The saved state, or None; a checkpoint that no longer loads is dropped so the run starts over."""
        import pickle

        import torch

        target = self.dir / CHECKPOINT_FILE
        if not target.exists():
            return None
        try:
            return torch.load(target, map_location="cpu", weights_only=False)
        except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile) as exc:
            log.warning("run %s: %s does not load (%s); starting from scratch", self.run_id, CHECKPOINT_FILE,
                        first_line(exc))
            target.unlink(missing_ok=True)
            return None

    # -- integrity ------------------------------------------------------------------------------
    def problem(self, *, full: bool, only: frozenset[str] | None = None) -> str | None:
        """Why this finished run's files cannot be trusted, or None (``full``: hashes, else sizes only; ``only``:
        hash just these names, relative to the run directory)."""
        return files_problem(self.dir, full=full, only=only)

    def check(self) -> None:
        """Raise one line naming the damaged file if this finished run's files fail their hashes."""
        if self._hashes_checked or not self.finished:
            return
        problem = self.problem(full=True)
        if problem is not None:
            raise DiagError(f"run {self.run_id} is corrupt: {problem} (run its config again to recompute it, "
                            f"or `diag runs rm {self.run_id}`)")
        self._hashes_checked = True

    # -- lifecycle ------------------------------------------------------------------------------
    def claim(self) -> None:
        """Record this process as the one computing the run (so a dead process reads as ``interrupted``)."""
        write_json_atomic(self.dir / PROCESS_FILE, this_process())
        self.store._set_status(self.run_id, "running", {})

    def reset(self) -> None:
        """Drop a damaged result (keeping the config and any checkpoint) so the run is computed again."""
        for name in result_files(self.dir):
            if name != CONFIG_FILE:
                (self.dir / name).unlink()
        (self.dir / MANIFEST_FILE).unlink(missing_ok=True)
        self._hashes_checked = False
        self.claim()

    def finish(self, summary: dict[str, Any]) -> None:
        """Mark the run complete: the manifest, then ``result.json``, then the index, then drop the checkpoint.

        The manifest lists ``result.json``'s bytes before they are written, so a kill between the two leaves an
        unfinished run (no result) that resumes, never a finished run without a manifest.
        """
        result = json.dumps({"summary": summary, "finished": time.time()}, indent=2, sort_keys=True,
                            default=json_default).encode()
        write_manifest(self.dir, result)
        write_bytes_atomic(self.dir / RESULT_FILE, result)
        self.store._set_status(self.run_id, "finished", summary)
        (self.dir / CHECKPOINT_FILE).unlink(missing_ok=True)
        (self.dir / PROCESS_FILE).unlink(missing_ok=True)

    def fail(self, message: str) -> None:
        self.store._set_status(self.run_id, "failed", {"error": message})
        (self.dir / PROCESS_FILE).unlink(missing_ok=True)

    def cancel(self, message: str) -> None:
        """Mark the run stopped on request, keeping its checkpoint (if any) so running its config again resumes."""
        resumes = "resumes from its checkpoint" if (self.dir / CHECKPOINT_FILE).exists() else "starts over"
        self.store._set_status(self.run_id, "cancelled", {"cancelled": f"{message}; running it again {resumes}"})
        (self.dir / PROCESS_FILE).unlink(missing_ok=True)

    def process_problem(self) -> str | None:
        """Why an unfinished run is not running any more (its process is gone), or None while it may be."""
        try:
            owner = json.loads((self.dir / PROCESS_FILE).read_text())
        except FileNotFoundError:
            return "no process is computing it"
        except (json.JSONDecodeError, UnicodeDecodeError):
            return f"{PROCESS_FILE} is unreadable"
        return None if alive(owner) else f"its process {owner.get('pid')} on {owner.get('host')} is gone"

    @property
    def summary(self) -> dict[str, Any]:
        return self.read_json(RESULT_FILE)["summary"]


def _to_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value)
