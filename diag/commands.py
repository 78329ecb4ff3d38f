"""The ``diag`` commands that run an analysis, generated from its declared ``Analysis``; and how results print.

Each option comes from a Config field (``diag.fields``): its type, its help (the field's comment) and its
default, read from the Config: an option left at it is not passed, so the Config's default applies and the CLI
never declares one of its own. A command that does more with its result than print it (``credit train --export``)
registers that step with ``after_run``; its keyword parameters become extra options. Imports only typer.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from diag.contract import Analysis
    from diag.fields import FieldSpec

JsonFlag = Annotated[bool, typer.Option("--json", help="Print the result summary as one JSON object.")]
After = Callable[..., dict[str, Any]]  # (result, **extra options) -> keys added to the printed summary
AFTER: dict[str, After] = {}


def after_run(name: str) -> Callable[[After], After]:
    """Decorator: what ``diag <command>`` of analysis ``name`` does with the finished result beyond printing it."""

    def register(function: After) -> After:
        AFTER[name] = function
        return function

    return register


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
    from diag.config_checks import config_from_dict
    from diag.contract import run
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


def _flag(spec: FieldSpec) -> str:
    return spec.cli.option or "--" + spec.name.replace("_", "-")


def _default(spec: FieldSpec) -> Any:
    """What the option holds when not given: the Config's default as a user would type it (shown in --help)."""
    from diag.fields import show

    if spec.kind == "flag" or spec.default is None:
        return spec.default
    return spec.default if spec.inner in (int, float) else show(spec, spec.default)


def _parameter(spec: FieldSpec) -> inspect.Parameter:
    """The typer parameter of one field."""
    python_type = bool if spec.kind == "flag" else spec.inner if spec.inner in (int, float) else str
    if spec.cli.argument == "required":
        info: Any = typer.Argument(help=spec.doc, show_default=False)
        return inspect.Parameter(spec.name, inspect.Parameter.KEYWORD_ONLY, annotation=Annotated[python_type, info])
    if spec.cli.argument == "optional":
        info = typer.Argument(help=spec.doc)
    elif spec.kind == "flag":
        info = typer.Option(help=spec.doc)
    else:
        info = typer.Option(_flag(spec), help=spec.doc)
    annotation = Annotated[python_type | None if spec.default is None else python_type, info]
    return inspect.Parameter(spec.name, inspect.Parameter.KEYWORD_ONLY, default=_default(spec), annotation=annotation)


def analysis_command(analysis: Analysis) -> Callable[..., None]:
    """``diag <analysis.command>``: one option per Config field (``*_sha256`` excepted), ``--json``, and the
    options of the analysis' ``after_run`` step if it has one."""
    from diag.fields import describe, parse_text

    specs = describe(analysis.config)
    after = AFTER.get(analysis.name)
    extra = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY)  # annotations evaluated: typer reads them as types
             for p in list(inspect.signature(after, eval_str=True).parameters.values())[1:]] if after else []
    as_json = inspect.Parameter("as_json", inspect.Parameter.KEYWORD_ONLY, default=False, annotation=JsonFlag)

    def command(**values: Any) -> None:
        options = {p.name: values.pop(p.name) for p in extra}
        fields = {}
        for spec in specs:
            value = values[spec.name]
            if value == _default(spec):
                continue  # as good as not given: the Config's own default applies
            fields[spec.name] = parse_text(spec, value, _flag(spec)) if spec.kind in ("list", "json") else value
        finish = (lambda result: after(result, **options)) if after is not None else None
        run_and_emit(analysis, fields, values["as_json"], after=finish)

    command.__signature__ = inspect.Signature([*map(_parameter, specs), *extra, as_json])  # type: ignore[attr-defined]
    command.__doc__ = analysis.description
    command.__name__ = analysis.command[-1].replace("-", "_")
    return command


def add_analysis_commands(app: typer.Typer, analyses: list[Analysis], groups: dict[str, typer.Typer]) -> None:
    """Add ``diag [GROUP] NAME`` for each analysis; a group not in ``groups`` is created (a plugin's own)."""
    for analysis in analyses:
        *path, name = analysis.command
        target = app
        for part in path:
            if part not in groups:
                groups[part] = typer.Typer(no_args_is_help=True, help=f"Commands of {part}.")
                target.add_typer(groups[part], name=part)
            target = groups[part]
        target.command(name)(analysis_command(analysis))
