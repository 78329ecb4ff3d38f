"""``diag credit``: ``train``, ``score`` and ``tabular`` are generated from their Configs (``diag.credit.config``);
``train --export`` copies the adapter, ``show`` says where a scored run's views are."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from diag.commands import JsonFlag, after_run

app = typer.Typer(no_args_is_help=True, help="DPO implicit reward as token-level credit assignment.")


@app.command()
def show(run_id: str, as_json: JsonFlag = False) -> None:
    """Where a scored run's views are (heatmap HTML, figures), plus its aggregates by token type."""
    from diag.commands import emit
    from diag.credit.config import SCORE
    from diag.errors import DiagError
    from diag.runs import RunStore

    run = RunStore().get(run_id)
    if run.analysis != SCORE.name or not run.finished:
        raise DiagError(f"run {run.run_id} is not a finished credit scoring run")
    aggregates = run.read_json("aggregates.json")
    emit({"heatmap": str(run.path("heatmap.html")), "figures": [str(p) for p in run.figure_paths()],
          "mean_reward_by_token_type": aggregates["by_type"], "summary": run.summary}, as_json, run.run_id)


@after_run("credit-train")
def export_adapter(
    result: Any,
    export: Annotated[Path | None, typer.Option(help="Copy the trained adapter to this directory.")] = None,
) -> dict[str, str]:
    """``credit train --export DIR``: a copy of the trained adapter where the user wants it."""
    import shutil

    if export is None:
        return {}
    shutil.copytree(result.adapter_dir, export, dirs_exist_ok=True)
    return {"exported_to": str(export)}
