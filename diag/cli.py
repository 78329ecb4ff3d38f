"""The ``diag`` command line. Bad input exits 2 with one line; ``--json`` prints one JSON object."""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from apps.cli import serve as serve_command
from diag.audit import audit_command
from diag.boundary.cli import app as boundary_app
from diag.cdas.cli import app as cdas_app
from diag.credit.cli import app as credit_app
from diag.errors import DiagError
from diag.report.cli import report_command
from diag.tir.cli import app as tir_app

if TYPE_CHECKING:
    from diag.contract import Analysis

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Interpretability and policy diagnostics.")
zoo_app = typer.Typer(no_args_is_help=True, help="Named model sources.")
runs_app = typer.Typer(no_args_is_help=True, help="The run store.")
app.add_typer(zoo_app, name="zoo")
app.add_typer(runs_app, name="runs")
app.add_typer(boundary_app, name="boundary")
app.add_typer(cdas_app, name="cdas")
app.add_typer(credit_app, name="credit")
app.add_typer(tir_app, name="tir")
app.command("report")(report_command)
app.command("audit")(audit_command)
app.command("serve")(serve_command)

JsonFlag = Annotated[bool, typer.Option("--json", help="Print the result summary as one JSON object.")]


def emit(summary: dict[str, Any], as_json: bool, run_id: str | None = None) -> None:
    """Print a summary: one JSON object with ``--json``, readable lines otherwise."""
    if run_id is not None:
        summary = {"run_id": run_id, **summary}
    if as_json:
        typer.echo(json.dumps(summary, default=str))
        return
    for key, value in summary.items():
        typer.echo(f"{key}: {json.dumps(value, default=str) if isinstance(value, dict | list) else value}")


def run_and_emit(
    analysis: Analysis,
    config: Any,
    as_json: bool,
    after: Callable[[Any], dict[str, Any]] | None = None,
) -> None:
    """Run an analysis into the store with a tqdm bar and print its summary (a "warning" in it also goes to stderr).

    ``config`` is the analysis' Config, or a dict of its fields validated here; ``after`` acts on the finished
    result (an export, say) and returns keys to add to the printed summary.
    """
    from diag.contract import config_from_dict, run
    from diag.progress import TqdmProgress

    if not dataclasses.is_dataclass(config):
        config = config_from_dict(analysis.config, config)
    progress = TqdmProgress()
    try:
        run_id, result = run(analysis, config, progress=progress)
    finally:
        progress.close()
    summary = result.summary() | (after(result) if after is not None else {})
    if summary.get("warning"):
        typer.echo(summary["warning"], err=True)
    emit(summary, as_json, run_id)


def parse_ints(text: str, what: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError as exc:
        raise DiagError(f"{what} must be comma-separated integers, got {text!r}") from exc


@zoo_app.command("list")
def zoo_list(as_json: JsonFlag = False) -> None:
    """List named models."""
    from diag.zoo import KNOWN_LMS

    emit({"models": KNOWN_LMS}, as_json)


def check_analysis_name(store: Any, analysis: str | None) -> None:
    """A ``--analysis`` filter must name a registered analysis or one the store holds runs of."""
    from diag.registry import ANALYSES

    known = set(ANALYSES) | store.stored_analyses()
    if analysis is not None and analysis not in known:
        raise DiagError(f"unknown analysis {analysis!r}: choose one of {', '.join(sorted(known))}")


@runs_app.command("list")
def runs_list(
    analysis: Annotated[str | None, typer.Option(help="Only runs of this analysis.")] = None,
    status: Annotated[str | None, typer.Option(
        help="running, interrupted (its process is gone), finished, corrupt (files changed since) or failed.")] = None,
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
    from diag.runs import MANIFEST_FILE, RunStore

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


@app.command()
def capture(
    model: str,
    prompt: Annotated[str, typer.Option(help="Text to run through the model.")] = "The capital of France is",
    layers: Annotated[str, typer.Option(help="Comma-separated layer indices.")] = "0",
    component: Annotated[str, typer.Option(help="resid_pre, resid_post, attn_out or mlp_out.")] = "resid_post",
    backend: Annotated[str, typer.Option(help="torch, transformer_lens or nnsight.")] = "torch",
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    dtype: Annotated[str, typer.Option(help="float32, bfloat16 or float16 (measured against float32).")] = "float32",
    as_json: JsonFlag = False,
) -> None:
    """Capture activations of PROMPT at LAYERS; prints shapes and norms and saves a run."""
    from diag.capture import ANALYSIS

    run_and_emit(ANALYSIS, {
        "model": model, "prompt": prompt, "layers": list(parse_ints(layers, "--layers")),
        "component": component, "backend": backend, "device": device, "dtype": dtype,
    }, as_json)


@app.command("run")
def run_config(config_file: Path, as_json: JsonFlag = False) -> None:
    """Run the analysis described by a JSON config file ({"analysis": NAME, ...fields})."""
    from diag.contract import load_config_file
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
