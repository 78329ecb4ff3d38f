"""``diag tir``: ``sample`` is generated from the Config (``diag.tir.config``); ``import`` runs the same analysis on
rollouts from JSONL, ``analyse`` reads a finished run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from diag.commands import JsonFlag
from diag.tir.config import Config

app = typer.Typer(no_args_is_help=True, help="TIR support expansion: pass@k and support sets, tool vs text.")


@app.command("import")
def import_rollouts(
    path: Path,
    problems: Annotated[Path | None, typer.Option(help="Problems JSONL (problem_id, question, answer): grades "
                                                       "lines without 'correct', matches chats to problems.")] = None,
    n_bootstrap: Annotated[int | None, typer.Option(help="Bootstrap replicates over problems.",
                                                    show_default=str(Config.n_bootstrap))] = None,
    as_json: JsonFlag = False,
) -> None:
    """Import rollouts from JSONL and analyse them; all or nothing.

    Our graded schema, chat transcripts (messages with tool_calls and role: tool results, or <code> tags) and
    vLLM run-batch / OpenAI Batch output (custom_id = PROBLEM_ID, then optionally /tool or /text, then /LABEL);
    see diag/tir/importer.py.
    """
    from diag.commands import run_and_emit
    from diag.tir.config import TIR

    fields = {"rollouts_file": str(path), "problems_file": None if problems is None else str(problems)}
    run_and_emit(TIR, fields | ({} if n_bootstrap is None else {"n_bootstrap": n_bootstrap}), as_json)


@app.command()
def analyse(
    run_id: str,
    problem: Annotated[str | None, typer.Option(help="Show this problem's rollouts.")] = None,
    drill: Annotated[str | None, typer.Option(help="expansion, shrinkage, preserved or jointly_unsolved: "
                                                    "per-problem counts and one correct rollout each.")] = None,
    export_jsonl: Annotated[Path | None, typer.Option(help="Write the rollouts in the import schema; works on "
                                                           "an unfinished run's checkpoint too.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Read a finished tir run: its summary, a support set with its rollouts, or one problem's rollouts."""
    from diag.commands import emit
    from diag.errors import DiagError
    from diag.runs import RunStore
    from diag.tir.analysis import ANALYSIS, Result
    from diag.tir.analysis import export_jsonl as export

    run = RunStore().get(run_id)
    if run.analysis == ANALYSIS.name and export_jsonl is not None:
        emit({"exported": str(export_jsonl), **export(run, export_jsonl)}, as_json, run.run_id)
        return
    if run.analysis != ANALYSIS.name or not run.finished:
        raise DiagError(f"run {run_id} is not a finished {ANALYSIS.name} run")
    result = Result.load(run)
    if problem is not None:
        rollouts = result.rollouts_of(problem)
        if not rollouts:
            raise DiagError(f"run {run.run_id} has no problem {problem!r}")
        emit({"problem_id": problem, "rollouts": [r.to_dict() for r in rollouts]}, as_json, run.run_id)
        return
    if drill is not None:
        sets = result.support_sets()
        if drill not in sets:
            raise DiagError(f"unknown set {drill!r}: choose one of {', '.join(sets)}")
        meta = {p["problem_id"]: p for p in result.problems}
        rows = []
        for pid in sets[drill]:
            rollouts = result.rollouts_of(pid)
            correct = next((r.response for r in rollouts if r.correct), None)
            rows.append({**meta[pid], **{f"correct_{m}": sum(r.correct for r in rollouts if r.mode == m)
                                         for m in ("tool", "text")}, "a_correct_response": correct})
        emit({"set": drill, "problems": rows}, as_json, run.run_id)
        return
    summary = run.summary
    if summary.get("warning"):
        typer.echo(summary["warning"], err=True)
    emit(summary, as_json, run.run_id)
