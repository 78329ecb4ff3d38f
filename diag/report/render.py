"""Render finished runs into one self-contained HTML file: figures inlined as base64, no external URLs.

The report only reads what each run stored (config.json, result.json, figures/); it never recomputes.
File hashes of the models a run names are taken when the report is written, and the report says so.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import platform
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from diag.errors import DiagError
from diag.report.sections import (
    BUDGET_BADGE,
    BUDGET_RULE,
    Guide,
    Metric,
    Table,
    format_value,
    metrics_from_summary,
    read_summary,
    readable,
)
from diag.run_dir import Run
from diag.run_files import CONFIG_FILE, RESULT_FILE
from diag.run_ids import is_run_id
from diag.runs import RunStore

# Config fields that name a model: "model", "policy", "ref_model", "vanilla_policy", "adapter", "policies"...
_MODEL_FIELD = re.compile(r"(^|_)(model|policy|policies|adapter|reference|ref|checkpoint|weights)s?($|_)")
_WEIGHT_SUFFIXES = {".safetensors", ".bin", ".pt", ".pth", ".gguf", ".npz", ".json", ".md"}
_HASH_LIMIT = 512 * 1024 * 1024  # larger files are named but not hashed


@dataclass(frozen=True)
class Figure:
    name: str
    caption: str
    data_uri: str
    too_wide: list[str]  # metrics drawn in it whose intervals are too wide to read (the budget badge)


@dataclass(frozen=True)
class Execution:
    """How the audit obtained one run: computed now, resumed, or reused from the store, and how long it took."""

    analysis: str
    run_id: str | None
    status: str  # "computed", "reused" or "failed"
    seconds: float  # wall clock
    cpu_seconds: float  # user + system time of this process and its children: comparable across busy machines
    note: str = ""


@dataclass(frozen=True)
class Section:
    """Everything the report shows about one run."""

    number: int
    run_id: str
    analysis: str
    status: str
    question: str
    provenance: list[dict[str, Any]]
    versions: dict[str, str]
    config: dict[str, Any]
    headline: list[Metric]
    all_metrics: list[Metric]
    baselines: list[Table]
    figures: list[Figure]
    limitations: list[str]
    error: str | None
    created: str
    compute_seconds: float | None


def guide_for(analysis: str) -> Guide:
    """The analysis' declared guide, or a generic one whose question is its one-line description."""
    from diag.registry import find

    declared = find(analysis)
    if declared is not None and declared.guide is not None:
        return declared.guide
    return Guide(
        question=declared.description if declared is not None else f"A run of the {analysis} analysis.",
        limitations=[(f"The {analysis} analysis records no reading guide: its limitations are not stated here, "
                     "so read its numbers with its source code at hand.")],
    )


def _sha256(path: Path) -> str | None:
    from diag.files import fingerprint

    return fingerprint(path) if path.stat().st_size <= _HASH_LIMIT else None


def _directory_rows(root: Path) -> list[tuple[str, str | None]]:
    return [(p.relative_to(root).as_posix(), _sha256(p)) for p in sorted(root.rglob("*"))
            if p.is_file() and p.suffix in _WEIGHT_SUFFIXES][:50]


def _provenance_row(key: str, value: str, store: RunStore) -> dict[str, Any]:
    from diag.zoo.lm import lm_provenance
    from diag.zoo.sources import model_card, shipped_asset

    row: dict[str, Any] = {"field": key, "name": value, "files": [], "card": None}
    asset, path = shipped_asset(value), Path(value).expanduser()
    produced_by = store.root / value if is_run_id(value) else None
    if produced_by is not None and (produced_by / CONFIG_FILE).exists():
        analysis = json.loads((produced_by / CONFIG_FILE).read_text())["analysis"]
        return {**row, "kind": f"run of {analysis} in the store", "location": str(produced_by), "sha256": None,
                "files": _directory_rows(produced_by)}
    if asset is not None:
        card = model_card(asset)
        return {**row, "kind": "zoo asset (trained in this repository)", "location": str(asset),
                "sha256": None if asset.is_dir() else _sha256(asset),
                "files": _directory_rows(asset) if asset.is_dir() else [],
                "card": card.read_text() if card is not None else None}
    if path.is_file():
        return {**row, "kind": "file", "location": str(path.resolve()), "sha256": _sha256(path)}
    try:
        info = lm_provenance(value)
    except (DiagError, OSError):
        info = None
    if info is not None:
        files = _directory_rows(path) if info["kind"] == "local" else []
        return {**row, **info, "field": key, "files": files}
    if path.is_dir():
        return {**row, "kind": "directory", "location": str(path.resolve()), "sha256": None,
                "files": _directory_rows(path)}
    return {**row, "kind": "named (not found on this machine)", "location": None, "sha256": None}


def model_provenance(config: dict[str, Any], store: RunStore | None = None) -> list[dict[str, Any]]:
    """Source, location and file hashes of every model a config names: zoo names, runs that trained it, paths."""
    store = store or RunStore()
    rows = []
    for key, value in config.items():
        if not _MODEL_FIELD.search(key) or key.endswith("_sha256"):  # a pinned fingerprint, not a model name
            continue
        names = [value] if isinstance(value, str) else value if isinstance(value, list | tuple) else []
        rows += [_provenance_row(key, name, store) for name in names if isinstance(name, str) and name]
    return rows


def _figure(path: Path, guide: Guide, badges: dict[str, list[str]]) -> Figure:
    data = base64.b64encode(path.read_bytes()).decode()
    fallback = path.stem.replace("_", " ").replace("-", " ")
    caption = guide.captions.get(path.stem, fallback[:1].upper() + fallback[1:])
    return Figure(path.stem, caption, f"data:image/png;base64,{data}", badges.get(path.stem, []))


def _utc(timestamp: float) -> str:
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def build_section(run: Run, number: int = 1, failure: str | None = None) -> Section:
    """Collect one run's stored files into a report section (unfinished runs show their error instead).

    ``failure`` is the error the caller saw when the run was attempted (the audit passes it), which the store
    does not record when an analysis stopped on bad input after checkpointing.
    """
    if not (run.dir / CONFIG_FILE).exists():
        raise DiagError(f"run {run.run_id} has no {CONFIG_FILE}: not a run directory")
    meta = json.loads((run.dir / CONFIG_FILE).read_text())
    analysis, config = meta["analysis"], meta["config"]
    guide = guide_for(analysis)
    summary: dict[str, Any] = {}
    error = None
    compute_seconds = None
    if run.finished:
        run.check()  # a corrupt run is refused with one line naming the damaged file
        status = "finished"
        result = json.loads((run.dir / RESULT_FILE).read_text())
        summary = result["summary"]
        compute_seconds = result.get("finished", 0.0) - meta.get("created", 0.0) or None
    elif failure is not None:
        status, error = "failed", failure
    else:
        rows = [r for r in run.store.list(analysis=analysis) if r.run_id == run.run_id]
        status = rows[0].status if rows else "unknown"
        error = (rows[0].summary.get("error") if rows else None) or "the run has not finished: no result stored"
    reading = read_summary(guide, summary)
    every = metrics_from_summary(summary)
    return Section(
        number=number, run_id=run.run_id, analysis=analysis, status=status, question=guide.question,
        provenance=model_provenance(config, run.store),
        versions={**meta.get("versions", {}), "python": meta.get("python", "?")},
        config=config,
        headline=reading.headline, all_metrics=every if guide.headline and reading.unread is None else [],
        baselines=reading.baselines,
        figures=[_figure(p, guide, reading.figure_badges) for p in run.figure_paths()],
        limitations=[*([reading.unread] if reading.unread else []), *_budget_note(reading.unreadable),
                     *guide.limitations],
        error=error, created=_utc(meta.get("created", 0.0)), compute_seconds=compute_seconds,
    )


def _budget_note(unreadable: list[Metric]) -> list[str]:
    """The limitation that names the metrics this run's budget is too small to read (none: no note)."""
    if not unreadable:
        return []
    return [f"{BUDGET_RULE[:1].upper()}{BUDGET_RULE[1:]}: {', '.join(readable(m.name) for m in unreadable)}."]


def _env() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("diag.report", "templates"),
        autoescape=True, trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined,
    )
    env.filters["fmt"] = format_value
    env.filters["label"] = readable
    env.globals["budget_badge"] = BUDGET_BADGE
    env.globals["budget_rule"] = BUDGET_RULE
    env.filters["json"] = lambda v: json.dumps(v, default=str)
    env.filters["duration"] = lambda s: "—" if s is None else f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min"
    return env


def _machine() -> str:
    import torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{platform.node()} · {platform.platform(terse=True)} · {os.cpu_count()} CPU cores · {device}"


def render_report(runs: list[Run], title: str = "diag report", notes: list[str] | None = None,
                  execution: list[Execution] | None = None, sweeps: list[Table] | None = None) -> str:
    """The report as one HTML string: inline CSS and figures, nothing loaded from elsewhere."""
    if not runs and not execution:
        raise DiagError("no runs to report on")
    failures = {e.run_id: e.note for e in execution or [] if e.status == "failed"}
    sections = [build_section(run, number, failures.get(run.run_id)) for number, run in enumerate(runs, start=1)]
    return _env().get_template("report.html.j2").render(
        title=title, sections=sections, notes=notes or [], execution=execution or [], sweeps=sweeps or [],
        generated=_utc(dt.datetime.now(dt.UTC).timestamp()), machine=_machine(),
    )


def default_report_path(runs: list[Run], prefix: str = "report") -> Path:
    """``reports/RUN_ID.html`` for one run, ``reports/PREFIX-TIMESTAMP.html`` for several."""
    if len(runs) == 1:
        return Path("reports") / f"{runs[0].run_id}.html"
    return Path("reports") / f"{prefix}-{dt.datetime.now(dt.UTC).strftime('%Y%m%d-%H%M%S')}.html"


def write_report(runs: list[Run], out: Path | str | None = None, title: str = "diag report",
                 notes: list[str] | None = None, execution: list[Execution] | None = None,
                 sweeps: list[Table] | None = None) -> Path:
    """Render the report and write it atomically to ``out`` (default ``reports/...``); returns the path."""
    from diag.atomic import write_bytes_atomic

    target = Path(out) if out is not None else default_report_path(runs)
    if target.suffix.lower() not in {".html", ".htm"}:
        raise DiagError(f"report path {target} must end in .html")
    write_bytes_atomic(target, render_report(runs, title, notes, execution, sweeps).encode())
    target.chmod(0o644)  # an archive document: readable by whoever it is shared with, unlike the temp file
    return target


def sweep_section(store: RunStore, group: str) -> tuple[list[Run], Table]:
    """A sweep group's runs and its table over the axes (``diag.sweep.sweep_table``), for ``diag report --group``."""
    from diag.sweep import sweep_table

    rows = sweep_table(store, group)
    columns = list(dict.fromkeys(key for row in rows for key in row))
    runs = [store.get(row["run_id"]) for row in rows if row["status"] == "finished"]
    table = Table(f"Sweep {group}", columns, [[_cell(row.get(c)) for c in columns] for row in rows])
    return runs, table


def _cell(value: Any) -> Any:
    return json.dumps(value) if isinstance(value, list | dict) else value
