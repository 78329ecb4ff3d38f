"""``diag audit``: run every registered analysis on its audit budget, then write one HTML report.

Each analysis declares what an audit of it costs through ``audit_config(scale)`` (scale 1 fits 2 CPU cores;
larger scales are for GPUs). Runs go through ``diag.contract.run``, which reuses a finished run of the same config
and resumes a killed one: a second audit only renders the report. One analysis failing does not stop the
others; the report then says which failed and why, and the command exits 1.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from diag.report.render import Execution
    from diag.runs import RunStore


@dataclass(frozen=True)
class AuditOutcome:
    report: Path
    execution: list[Execution]
    wall_seconds: float

    @property
    def failed(self) -> list[str]:
        return [e.analysis for e in self.execution if e.status == "failed"]

    def summary(self) -> dict[str, Any]:
        return {
            "report": str(self.report.resolve()),
            "wall_seconds": round(self.wall_seconds, 1),
            "runs": [{"analysis": e.analysis, "run_id": e.run_id, "status": e.status,
                      "seconds": round(e.seconds, 1), "cpu_seconds": round(e.cpu_seconds, 1), "note": e.note}
                     for e in self.execution],
        }


def _cpu_seconds() -> float:
    import resource

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


def audit(
    scale: float = 1.0,
    out: Path | str | None = None,
    only: list[str] | None = None,
    store: RunStore | None = None,
    show_progress: bool = True,
) -> AuditOutcome:
    """Run (or reuse) each analysis's ``audit_config(scale)`` and write the report; returns where it went."""
    import datetime as dt

    from tqdm import tqdm

    from diag.config_checks import config_to_dict
    from diag.contract import run as run_analysis
    from diag.errors import DiagError
    from diag.progress import TqdmProgress, no_progress
    from diag.registry import ANALYSES, get
    from diag.report.render import Execution, write_report
    from diag.run_files import CHECKPOINT_FILE, CONFIG_FILE
    from diag.runs import RunStore

    if not scale > 0:
        raise DiagError(f"--scale must be positive, got {scale}")
    names = list(only) if only else list(ANALYSES)
    analyses = {name: get(name) for name in names}  # unknown names fail here, before any work
    store = store or RunStore()
    started, cpu_started = time.monotonic(), _cpu_seconds()
    execution, runs = [], []
    bar = tqdm(names, desc="audit", unit="analysis", disable=not show_progress)
    for name in bar:
        bar.set_postfix_str(name)
        analysis = analyses[name]
        run, how, note = None, "computed", ""
        progress = TqdmProgress() if show_progress else no_progress
        t0, cpu0 = time.monotonic(), _cpu_seconds()
        try:
            config = analysis.pin(analysis.audit_config(scale))
            run = store.open(analysis.name, config_to_dict(config))  # to say below whether it is reused or resumed
            if run.finished and run.problem(full=True) is None:
                how = "reused"
            elif run.finished:
                note = "recomputed: its stored files were corrupt"
            elif (run.dir / CHECKPOINT_FILE).exists():
                note = "resumed from its checkpoint"
            run_analysis(analysis, config, progress=progress, store=store)
        except Exception as exc:  # noqa: BLE001 -- an audit reports every analysis it can and names failures
            how, note = "failed", _one_line(exc)
        finally:
            if isinstance(progress, TqdmProgress):
                progress.close()
        kept = run is not None and (run.dir / CONFIG_FILE).exists()
        execution.append(Execution(name, run.run_id if kept else None, how, time.monotonic() - t0,
                                   _cpu_seconds() - cpu0, note))
        if kept:
            runs.append(run)
    bar.close()
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
    target = Path(out) if out is not None else Path("reports") / f"audit-{stamp}.html"
    notes = [
        (f"diag audit at scale {scale:g}: each analysis ran its audit budget, audit_config({scale:g}); runs already "
        "finished in the store with the same configuration were reused, not recomputed."),
        (f"Audit wall time {time.monotonic() - started:.0f} s, CPU time {_cpu_seconds() - cpu_started:.0f} s "
         f"(user + system, all threads), including model loading; rendering excluded. Analyses: {', '.join(names)}."),
    ]
    path = write_report(runs, target, title="diag audit report", notes=notes, execution=execution)
    return AuditOutcome(path, execution, time.monotonic() - started)


def audit_command(
    scale: Annotated[float, typer.Option(help="Multiply every audit budget (1 fits 2 CPU cores in 20 min).")] = 1.0,
    out: Annotated[Path | None, typer.Option(help="Report file (default reports/audit-TIMESTAMP.html).")] = None,
    only: Annotated[list[str] | None, typer.Option(help="Audit only this analysis (repeatable).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the outcome as one JSON object.")] = False,
) -> None:
    """Run every analysis on its audit budget (reusing finished runs) and write one self-contained report."""
    from diag.commands import emit

    outcome = audit(scale=scale, out=out, only=only)
    emit(outcome.summary(), as_json)
    if outcome.failed:
        typer.echo(f"error: {len(outcome.failed)} analysis run(s) failed: {', '.join(outcome.failed)} "
                   f"(see {outcome.report})", err=True)
        raise typer.Exit(1)
