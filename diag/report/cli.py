"""``diag report RUN...``: one self-contained HTML file from finished runs (heavy imports inside the command)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer


def report_command(
    runs: Annotated[list[str], typer.Argument(help="Run ids (or unique prefixes) from `diag runs list`.")],
    out: Annotated[Path | None, typer.Option(help="Output .html file (default reports/RUN_ID.html).")] = None,
    title: Annotated[str, typer.Option(help="Report title.")] = "diag report",
    as_json: Annotated[bool, typer.Option("--json", help="Print the report path as one JSON object.")] = False,
) -> None:
    """Write an HTML report of RUNS: question, provenance, config, metrics, figures, baselines, limitations."""
    from diag.report.render import write_report
    from diag.runs import RunStore

    store = RunStore()
    found = [store.get(run_id) for run_id in runs]
    path = write_report(found, out, title=title)
    if as_json:
        typer.echo(json.dumps({"report": str(path), "runs": [r.run_id for r in found]}))
    else:
        typer.echo(f"report: {path}")
