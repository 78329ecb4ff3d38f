"""Sweeps: one base config plus axes to vary, expanded into run configs and executed serially or on Ray.

A run is a pure function of its config and lands in the content-addressed run store, so a sweep needs no
bookkeeping of its own to survive faults: finished runs are reused when the sweep is re-issued, a killed run
resumes from its checkpoint, and a Ray task whose worker dies is retried by Ray. The sweep itself is recorded
as a group in the store index, plus a manifest (axes and run ids) that front ends turn into a table.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from diag.atomic import write_json_atomic
from diag.config_checks import config_from_dict, config_to_dict
from diag.contract import run
from diag.errors import DiagError
from diag.files import read_json_file
from diag.progress import Progress, no_progress
from diag.registry import get
from diag.runs import RunStore

Backend = Literal["serial", "ray"]
RAY_MISSING = "the ray backend needs Ray: pip install '.[scale]' (or pip install 'ray>=2.30')"
SWEEP_DIR = "sweeps"


@dataclass(frozen=True)
class SweepSpec:
    """``{"analysis": NAME, "base": {...}, "axes": {"field": [values...]}, "name": optional, "num_cpus": 1}``."""

    analysis: str
    base: dict[str, Any]
    axes: dict[str, list[Any]]
    name: str | None = None
    num_cpus: float = 1.0

    @property
    def group(self) -> str:
        """The store group of this sweep: its name, or a hash of what it varies (stable across re-issues)."""
        if self.name:
            return self.name
        text = json.dumps({"analysis": self.analysis, "base": self.base, "axes": self.axes}, sort_keys=True)
        return f"sweep-{self.analysis}-{hashlib.sha256(text.encode()).hexdigest()[:10]}"

    def points(self) -> list[dict[str, Any]]:
        """Every combination of axis values, in a fixed order (the cartesian product of the axes)."""
        names = list(self.axes)
        return [dict(zip(names, values, strict=True)) for values in itertools.product(*self.axes.values())]

    def configs(self) -> list[Any]:
        """The validated run configs, one per point; a bad field fails here, before anything runs."""
        config = get(self.analysis).config
        return [config_from_dict(config, {**self.base, **point}) for point in self.points()]


def load_sweep(path: Path) -> SweepSpec:
    """Read and validate a sweep file; every problem is one line naming the file and the field."""
    return sweep_from_dict(read_json_file(path, "sweep file"), source=str(path))


def sweep_from_dict(data: Any, source: str = "sweep") -> SweepSpec:
    if not isinstance(data, dict):
        raise DiagError(f"{source}: expected an object with analysis, base and axes")
    unknown = sorted(set(data) - {"analysis", "base", "axes", "name", "num_cpus"})
    if unknown:
        raise DiagError(f"{source}: unknown field(s) {', '.join(unknown)}; known: analysis, base, axes, name, num_cpus")
    if not isinstance(data.get("analysis"), str):
        raise DiagError(f"{source}: \"analysis\" must name an analysis")
    base, axes = data.get("base", {}), data.get("axes")
    if not isinstance(base, dict):
        raise DiagError(f"{source}: \"base\" must be an object of config fields")
    if not isinstance(axes, dict) or not axes:
        raise DiagError(f"{source}: \"axes\" must map at least one config field to a list of values")
    for name, values in axes.items():
        if not isinstance(values, list) or not values:
            raise DiagError(f"{source}: axis {name!r} must be a non-empty list of values")
    num_cpus = data.get("num_cpus", 1.0)
    if not isinstance(num_cpus, int | float) or num_cpus <= 0:
        raise DiagError(f"{source}: \"num_cpus\" must be a positive number")
    spec = SweepSpec(data["analysis"], base, axes, data.get("name"), float(num_cpus))
    spec.configs()  # validate every point now
    return spec


@dataclass
class SweepOutcome:
    """What a sweep produced: one entry per point, in the order of ``SweepSpec.points``."""

    group: str
    points: list[dict[str, Any]]
    run_ids: list[str]
    summaries: list[dict[str, Any]]
    reused: list[bool]
    wall_s: float

    def summary(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "runs": len(self.run_ids),
            "computed": self.reused.count(False),
            "reused": self.reused.count(True),
            "wall_s": round(self.wall_s, 3),
            "run_ids": self.run_ids,
        }


def run_sweep(
    spec: SweepSpec,
    backend: Backend = "serial",
    *,
    store: RunStore | None = None,
    address: str | None = None,
    progress: Progress = no_progress,
) -> SweepOutcome:
    """Execute every point of the sweep that is not already finished in the store, then write the manifest."""
    store = store or RunStore()
    analysis = get(spec.analysis)
    configs = [analysis.pin(c) for c in spec.configs()]
    runs = [store.open(analysis.name, config_to_dict(c), group=spec.group) for c in configs]
    reused = [run.finished and run.problem(full=True) is None for run in runs]  # a corrupt point is redone
    _write_manifest(store, spec, [run.run_id for run in runs])
    todo = [i for i, done in enumerate(reused) if not done]
    started = time.perf_counter()
    progress(len(runs) - len(todo), len(runs), f"sweep {spec.group}")
    if backend == "serial":
        for n, i in enumerate(todo, start=1):
            run(analysis, configs[i], store=store, group=spec.group)
            progress(len(runs) - len(todo) + n, len(runs), f"sweep {spec.group}")
    elif backend == "ray":
        _run_on_ray(spec, [config_to_dict(configs[i]) for i in todo], store, address, progress, len(runs) - len(todo))
    else:
        raise DiagError(f"unknown sweep backend {backend!r}: choose serial or ray")
    wall = time.perf_counter() - started
    summaries = [store.get(run.run_id).summary for run in runs]
    return SweepOutcome(spec.group, spec.points(), [r.run_id for r in runs], summaries, reused, wall)


def _run_on_ray(
    spec: SweepSpec,
    fields: list[dict[str, Any]],
    store: RunStore,
    address: str | None,
    progress: Progress,
    already_done: int,
) -> None:
    try:
        import ray
    except ImportError as exc:
        raise DiagError(RAY_MISSING) from exc
    started_here = not ray.is_initialized()
    if started_here:
        env = {"env_vars": {k: v for k, v in os.environ.items() if k.startswith("DIAG_")}}
        if address:
            ray.init(address=address, runtime_env=env, log_to_driver=False)
        else:
            ray.init(include_dashboard=False, runtime_env=env, log_to_driver=False)
    try:
        task = ray.remote(max_retries=3)(run_one)
        pending = []
        for config in fields:
            gpus = 1 if str(config.get("device", "")).startswith("cuda") else 0
            pending.append(task.options(num_cpus=spec.num_cpus, num_gpus=gpus).remote(
                spec.analysis, config, str(store.root)))
        total, done = already_done + len(pending), already_done
        while pending:
            finished, pending = ray.wait(pending, num_returns=1)
            ray.get(finished)  # re-raises a task's error (a DiagError stays one line)
            done += 1
            progress(done, total, f"sweep {spec.group}")
    finally:
        if started_here:
            ray.shutdown()


def run_one(analysis: str, fields: dict[str, Any], store_root: str) -> str:
    """One sweep point, as a Ray task: rebuild the config, run it into the shared store, return its run id."""
    declared = get(analysis)
    run_id, _ = run(declared, config_from_dict(declared.config, fields), store=RunStore(store_root))
    return run_id


def _write_manifest(store: RunStore, spec: SweepSpec, run_ids: list[str]) -> None:
    write_json_atomic(store.root / SWEEP_DIR / f"{spec.group}.json", {
        "group": spec.group, "analysis": spec.analysis, "base": spec.base, "axes": spec.axes,
        "points": spec.points(), "run_ids": run_ids,
    })


def sweep_table(store: RunStore, group: str) -> list[dict[str, Any]]:
    """One row per point: the axis values, the run id and status, and the run's scalar summary numbers."""
    path = store.root / SWEEP_DIR / f"{group}.json"
    if not path.exists():
        raise DiagError(f"no sweep {group!r} in {store.root} (see `diag runs list`)")
    manifest = json.loads(path.read_text())
    rows = []
    for point, run_id in zip(manifest["points"], manifest["run_ids"], strict=True):
        run = store.get(run_id)
        status = "finished" if run.finished else "unfinished"
        scalars = _scalars(run.summary) if run.finished else {}
        rows.append({**point, "run_id": run_id, "status": status, **scalars})
    return rows


def _scalars(summary: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in summary.items():
        if isinstance(value, dict):
            out.update(_scalars(value, f"{prefix}{key}."))
        elif isinstance(value, bool | int | float) or (isinstance(value, str) and len(value) <= 40):
            out[f"{prefix}{key}"] = value
    return out
