"""``diag report RUN...``: one self-contained HTML file from finished runs (heavy imports inside the command)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer


def report_command(
    runs: Annotated[list[str] | None, typer.Argument(help="Run ids (or unique prefixes) from `diag runs list`.")] = None,
    group: Annotated[list[str] | None, typer.Option(help="A sweep group: its runs plus a table over its axes.")] = None,
    out: Annotated[Path | None, typer.Option(help="Output .html file (default reports/RUN_ID.html).")] = None,
    title: Annotated[str, typer.Option(help="Report title.")] = "diag report",
    as_json: Annotated[bool, typer.Option("--json", help="Print the report path as one JSON object.")] = False,
) -> None:
    """Write an HTML report of RUNS: question, provenance, config, metrics, figures, baselines, limitations."""
    from diag.report.render import sweep_section, write_report
    from diag.runs import RunStore

    store = RunStore()
    found = [store.get(run_id) for run_id in runs or []]
    sweeps = []
    for name in group or []:
        group_runs, table = sweep_section(store, name)
        found += [run for run in group_runs if run.run_id not in {r.run_id for r in found}]
        sweeps.append(table)
    path = write_report(found, out, title=title, sweeps=sweeps)
    if as_json:
        typer.echo(json.dumps({"report": str(path), "runs": [r.run_id for r in found]}))
    else:
        typer.echo(f"report: {path}")
