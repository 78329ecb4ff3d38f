"""The ``diag`` command line. Bad input exits 2 with one line; ``--json`` prints one JSON object.

One command per registered analysis is generated from its Config (``diag.commands``); the package CLIs add the
commands that do more than run (``cdas export``, ``tir import``, ...). Front ends above ``diag`` (the app's
``diag serve``) plug in through the ``diag.commands`` entry-point group, so ``diag`` imports nothing of them.
"""

from __future__ import annotations

import json
import sys
from importlib.metadata import entry_points
from pathlib import Path
from typing import Annotated, Any

import typer

from diag.audit import audit_command
from diag.boundary.cli import app as boundary_app
from diag.cdas.cli import app as cdas_app
from diag.commands import JsonFlag, add_analysis_commands, emit, run_and_emit
from diag.credit.cli import app as credit_app
from diag.errors import DiagError
from diag.registry import ANALYSES
from diag.report.cli import report_command
from diag.tir.cli import app as tir_app

COMMAND_ENTRY_POINTS = "diag.commands"

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Interpretability and policy diagnostics.")
zoo_app = typer.Typer(no_args_is_help=True, help="Named model sources.")
runs_app = typer.Typer(no_args_is_help=True, help="The run store.")
GROUPS = {"zoo": zoo_app, "runs": runs_app, "boundary": boundary_app, "cdas": cdas_app, "credit": credit_app,
          "tir": tir_app}
for _name, _group in GROUPS.items():
    app.add_typer(_group, name=_name)
app.command("report")(report_command)
app.command("audit")(audit_command)
add_analysis_commands(app, list(ANALYSES.values()), GROUPS)
for _point in entry_points(group=COMMAND_ENTRY_POINTS):  # e.g. serve = "apps.cli:serve"
    app.command(_point.name)(_point.load())


@zoo_app.command("list")
def zoo_list(as_json: JsonFlag = False) -> None:
    """List named models."""
    from diag.zoo import KNOWN_LMS

    emit({"models": KNOWN_LMS}, as_json)


def check_analysis_name(store: Any, analysis: str | None) -> None:
    """A ``--analysis`` filter must name a registered analysis or one the store holds runs of."""
    from diag.registry import ANALYSES, RENAMED

    known = set(ANALYSES) | set(RENAMED) | store.stored_analyses()
    if analysis is not None and analysis not in known:
        raise DiagError(f"unknown analysis {analysis!r}: choose one of {', '.join(sorted(known))}")


@runs_app.command("list")
def runs_list(
    analysis: Annotated[str | None, typer.Option(help="Only runs of this analysis.")] = None,
    status: Annotated[str | None, typer.Option(
        help="running, interrupted (its process is gone), finished, corrupt (files changed since), failed or "
        "cancelled (stopped on request; running its config again resumes it).")] = None,
    search: Annotated[str | None, typer.Option(
        help="Only runs whose id, analysis, group, name, tags or note contain every word of TEXT (any case).")] = None,
    as_json: JsonFlag = False,
) -> None:
    """List runs in the store, newest first (file sizes are checked here; `diag runs verify` checks hashes)."""
    from diag.runs import RunStore

    store = RunStore()
    check_analysis_name(store, analysis)
    rows = store.list(analysis=analysis, status=status, search=search)
    if as_json:
        typer.echo(json.dumps({"runs": [{"run_id": r.run_id, "analysis": r.analysis, "status": r.status,
                                         "note": r.note, "label": r.label.as_dict(),
                                         "group": r.group_name, "summary": r.summary} for r in rows]}))
        return
    for r in rows:
        label = " ".join(filter(None, (f'"{r.label.name}"' if r.label.name else "",
                                       " ".join(f"#{t}" for t in r.label.tags))))
        typer.echo(f"{r.run_id}  {r.status:11s}  {r.path}" + (f"  {label}" if label else "")
                   + (f"  ({r.note})" if r.note else ""))


@runs_app.command("show")
def runs_show(run_id: str, as_json: JsonFlag = False) -> None:
    """Show a run's config and summary (a finished run's files are checked against their hashes first)."""
    from diag.runs import RunStore

    store = RunStore()
    run = store.get(run_id)
    info = store.info(run.run_id)
    summary = run.summary if run.finished else {"status": info.status, **({"note": info.note} if info.note else {})}
    label = {k: v for k, v in info.label.as_dict().items() if v}
    emit({"analysis": run.analysis, **({"label": label} if label else {}), "config": run.config,
          "summary": summary}, as_json, run.run_id)


@runs_app.command("label")
def runs_label(
    run_id: str,
    name: Annotated[str | None, typer.Option(help="A short name for the run (\"\" clears it).")] = None,
    tag: Annotated[list[str] | None, typer.Option(help="Add a tag (repeat for several).")] = None,
    untag: Annotated[list[str] | None, typer.Option(help="Remove a tag (repeat for several).")] = None,
    note: Annotated[str | None, typer.Option(
        help="A free-text note: why it ran, what it showed (\"\" clears).")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Name, tag and annotate a run (kept in the store's index; `diag runs list --search` finds them)."""
    from diag.runs import RunStore

    info = RunStore().label(run_id, name=name, add_tags=tuple(tag or ()), remove_tags=tuple(untag or ()), note=note)
    emit(info.label.as_dict(), as_json, info.run_id)


@runs_app.command("export")
def runs_export(
    run_id: str,
    out: Annotated[Path | None, typer.Option(help="Directory to create (default ./RUN_ID-export).")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Write a finished run's tables (CSV, JSON), arrays (NPZ; CSV if 1-D/2-D), figures (PNG, SVG) and summary."""
    from diag.export import export_run
    from diag.runs import RunStore

    store = RunStore()
    run = store.get(run_id)  # a corrupt run is refused here, with the file that fails its hash
    target = out if out is not None else Path.cwd() / f"{run.run_id}-export"
    names = export_run(run, target, store)
    emit({"out": str(target), "files": len(names),
          **{kind: [n for n in names if n.startswith(f"{kind}/")] for kind in ("tables", "arrays", "figures")}},
         as_json, run.run_id)


@runs_app.command("verify")
def runs_verify(
    run_ids: Annotated[list[str] | None, typer.Argument(help="Run ids (or unique prefixes); default every finished run.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Check finished runs' files against the sha256 in their manifests; exit 1 if any run is corrupt."""
    from diag.run_files import MANIFEST_FILE
    from diag.runs import RunStore

    store = RunStore()
    runs = [store.get(run_id, verify=False) for run_id in run_ids or []]  # all resolved before any is hashed
    if not run_ids:
        runs = [store.get(r.run_id, verify=False) for r in store.list() if r.status in ("finished", "corrupt")]
    rows = []
    for run in runs:
        if not run.finished:
            rows.append({"run_id": run.run_id, "status": store.info(run.run_id).status, "problem": None})
            continue
        problem = run.problem(full=True)
        checked = "sha256" if (run.dir / MANIFEST_FILE).exists() else "structure"
        rows.append({"run_id": run.run_id, "status": "corrupt" if problem else "finished", "checked": checked,
                     "problem": problem})
    corrupt = [row["run_id"] for row in rows if row["status"] == "corrupt"]
    if as_json:
        typer.echo(json.dumps({"runs": rows, "corrupt": corrupt}))
    else:
        for row in rows:
            detail = row["problem"] or (f"checked by {row['checked']}" if "checked" in row else "not finished")
            typer.echo(f"{row['run_id']}  {row['status']:11s}  {detail}")
    if corrupt:
        sys.exit(1)  # not typer.Exit: with standalone_mode=False click returns its code instead of exiting


@runs_app.command("rm")
def runs_rm(
    run_ids: Annotated[list[str] | None, typer.Argument(help="Run ids (or unique prefixes).")] = None,
    analysis: Annotated[str | None, typer.Option(help="Every run of this analysis.")] = None,
    status: Annotated[str | None, typer.Option(help="Every run with this status (with --analysis: both).")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Delete runs: their directories and index rows (e.g. runs made by an older version of an analysis)."""
    from diag.runs import RunStore

    store = RunStore()
    check_analysis_name(store, analysis)
    if not run_ids and analysis is None and status is None:
        raise DiagError("name the runs to delete, or select them with --analysis and/or --status")
    targets = [store.get(run_id, verify=False).run_id for run_id in run_ids or []]  # all resolved before any rm
    if analysis is not None or status is not None:
        targets += [r.run_id for r in store.list(analysis=analysis, status=status)]
    removed = list(dict.fromkeys(targets))
    for run_id in removed:
        store.remove(run_id)
    emit({"removed": removed}, as_json)


@app.command("run")
def run_config(config_file: Path, as_json: JsonFlag = False) -> None:
    """Run the analysis described by a JSON config file ({"analysis": NAME, ...fields})."""
    from diag.config_checks import load_config_file
    from diag.registry import get

    name, fields = load_config_file(config_file)
    run_and_emit(get(name), fields, as_json)


@app.command()
def sweep(
    sweep_file: Path,
    backend: Annotated[str, typer.Option(help="serial, or ray (pip install '.[scale]').")] = "serial",
    address: Annotated[str | None, typer.Option(help="Join this Ray cluster instead of starting a local one.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Run every point of a sweep file ({"analysis", "base", "axes"}); finished points are reused."""
    from diag.progress import TqdmProgress
    from diag.sweep import load_sweep, run_sweep

    spec = load_sweep(sweep_file)
    progress = TqdmProgress()
    outcome = run_sweep(spec, backend, address=address, progress=progress)  # type: ignore[arg-type]
    progress.close()
    emit(outcome.summary(), as_json)


def main(argv: list[str] | None = None) -> None:
    """Entry point: a usage error or bad input is one line on stderr and exit code 2, never a traceback."""
    # typer 0.29 raises its own copy of click's exceptions, not click's
    from typer._click import exceptions as click_errors

    try:
        code = app(args=argv, prog_name="diag", standalone_mode=False)  # a command's typer.Exit(n) returns n
    except click_errors.NoArgsIsHelpError as exc:  # a bare group: its help is already on stdout
        fail(f"{exc.ctx.command_path}: missing command (listed above)")
    except click_errors.UsageError as exc:
        message = exc.format_message().strip()
        message += "" if message.endswith((".", "?", "!")) else "."
        fail(message + (f" Try '{exc.ctx.command_path} --help'." if exc.ctx is not None else ""))
    except click_errors.ClickException as exc:
        fail(exc.format_message())
    except typer.Abort:
        typer.echo("aborted", err=True)
        sys.exit(130)
    except (DiagError, FileNotFoundError) as exc:
        fail(str(exc))
    except Exception as exc:
        if _is_probe_error(exc):
            fail(str(exc))
        raise
    if isinstance(code, int) and code:
        sys.exit(code)


def fail(message: str) -> None:
    """Print one line (whitespace runs collapsed) and exit 2: the CLI's answer to bad input."""
    typer.echo(f"error: {' '.join(message.split())}", err=True)
    sys.exit(2)


def _is_probe_error(exc: Exception) -> bool:
    """A ProbeError (bad site, no backend), told without importing probes: its package loads torch."""
    probe_errors = sys.modules.get("probes.errors")
    return probe_errors is not None and isinstance(exc, probe_errors.ProbeError)


if __name__ == "__main__":
    main()
