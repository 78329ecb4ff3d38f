"""``diag cdas``: ground truth, rank-k DII training, steering both ways and the layer sweep are generated from
their Configs (``diag.cdas.config``); ``export`` writes a run's directions out to other tools."""

from __future__ import annotations

from typing import Annotated

import typer

from diag.commands import JsonFlag

app = typer.Typer(no_args_is_help=True, help="CDAS: distributed interchange interventions with distribution matching.")


@app.command()
def export(
    run_id: str,
    fmt: Annotated[str, typer.Option("--format", help="gguf (llama.cpp control vector), safetensors or npz.")
                   ] = "gguf",
    out: Annotated[str, typer.Option(help="Output file (default: RUN-CONCEPT-METHOD.FORMAT here).")] = "",
    concept: Annotated[str, typer.Option(help="Concept, when the run holds several.")] = "",
    method: Annotated[str, typer.Option(help="cdas, das or diffmean for steer runs (default cdas).")] = "",
    as_json: JsonFlag = False,
) -> None:
    """Write the directions of a cdas-train, cdas-steer or cdas-steer-sweep run for other tools.

    Layer L is the residual output of decoder block L (0-based); llama.cpp applies direction.L after its layer L,
    the same block (use --control-vector-scaled FILE S). The GGUF holds the stored unit vector; its metadata
    (and the safetensors/npz metadata) gives the site, m+/m- and the additive scale m+ - m-.
    """
    from pathlib import Path

    from diag.cdas.export import export_run
    from diag.commands import emit

    result = export_run(run_id, fmt, Path(out) if out else None, concept or None, method or None)
    emit(result, as_json, run_id)
