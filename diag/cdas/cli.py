"""``diag cdas toy|train|steer|sweep|export``: ground truth, rank-k DII training, steering both ways, layer sweep,
directions out to other tools."""

from __future__ import annotations

from typing import Annotated

import typer

JsonFlag = Annotated[bool, typer.Option("--json", help="Print the result summary as one JSON object.")]

app = typer.Typer(no_args_is_help=True, help="CDAS: distributed interchange interventions with distribution matching.")


def _floats(text: str, what: str) -> list[float]:
    from diag.errors import DiagError

    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError as exc:
        raise DiagError(f"{what} must be comma-separated numbers, got {text!r}") from exc


def _ints(text: str, what: str) -> list[int]:
    from diag.errors import DiagError

    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError as exc:
        raise DiagError(f"{what} must be comma-separated integers, got {text!r}") from exc


def _names(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


@app.command()
def toy(
    seed: Annotated[int, typer.Option(help="Seed for data, MLP and DII initialisation.")] = 0,
    rank: Annotated[int, typer.Option(help="Subspace dimension per variable.")] = 8,
    layer: Annotated[int, typer.Option(help="MLP layer (0..2) to intervene on.")] = 0,
    dii_steps: Annotated[int, typer.Option(help="Training steps per DII.")] = 600,
    objectives: Annotated[str, typer.Option(help="Comma-separated subset of das, cdas, kl.")] = "das,cdas",
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    as_json: JsonFlag = False,
) -> None:
    """Hierarchical-equality ground truth: IIA of DAS/CDAS for aligned variables and for controls."""
    from diag.cdas.config import TOY
    from diag.cli import run_and_emit

    run_and_emit(TOY, {"seed": seed, "rank": rank, "layer": layer, "dii_steps": dii_steps,
                                                "objectives": _names(objectives), "device": device}, as_json)


@app.command()
def train(
    model: Annotated[str, typer.Option(help="Named model, HF id or local directory.")] = "smollm2-135m-instruct",
    concept: Annotated[str, typer.Option(help="Concept from the dataset.")] = "dogs",
    layer: Annotated[int, typer.Option(help="Decoder layer whose residual output is intervened on.")] = 10,
    rank: Annotated[int, typer.Option(help="Subspace rank k.")] = 1,
    objective: Annotated[str, typer.Option(help="cdas (JSD), das (cross-entropy) or kl.")] = "cdas",
    steps: Annotated[int, typer.Option(help="Training steps.")] = 20,
    dataset: Annotated[str, typer.Option(help="JSONL concept dataset (default: the committed one).")] = "",
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    dtype: Annotated[str, typer.Option(help="float32, bfloat16 or float16 (measured against float32).")] = "float32",
    as_json: JsonFlag = False,
) -> None:
    """Train a rank-k DII for one concept on the train pairs; saves the intervention and held-out loss."""
    from diag.cdas.config import TRAIN
    from diag.cli import run_and_emit

    run_and_emit(TRAIN, {"model": model, "concept": concept, "layer": layer, "rank": rank,
                                                "objective": objective, "steps": steps, "dataset": dataset,
                                                "device": device, "dtype": dtype}, as_json)


@app.command()
def steer(
    model: Annotated[str, typer.Option(help="Named model, HF id or local directory.")] = "smollm2-135m-instruct",
    concepts: Annotated[str, typer.Option(help="Comma-separated concepts.")] = "dogs,music,space,ocean",
    layer: Annotated[int, typer.Option(help="Decoder layer to steer at.")] = 10,
    steps: Annotated[int, typer.Option(help="Training steps of the rank-1 DIIs.")] = 8,
    alphas: Annotated[str, typer.Option(help="Comma-separated steering factors to choose from (clamp offset in "
                                               "residual norms at the layer).")] = "0.1,0.2,0.4",
    eval_prompts: Annotated[int, typer.Option(help="Held-out prompts per concept (two halves).")] = 6,
    max_new_tokens: Annotated[int, typer.Option(help="Tokens generated per answer.")] = 20,
    dataset: Annotated[str, typer.Option(help="JSONL concept dataset (default: the committed one).")] = "",
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    dtype: Annotated[str, typer.Option(help="float32, bfloat16 or float16 (measured against float32).")] = "float32",
    as_json: JsonFlag = False,
) -> None:
    """Steer both ways with rank-1 CDAS vs DiffMean, DAS and prompting; prints mean held-out judge scores."""
    from diag.cdas.config import STEER
    from diag.cli import run_and_emit

    run_and_emit(STEER, {
        "model": model, "concepts": _names(concepts), "layer": layer, "steps": steps,
        "alphas": _floats(alphas, "--alphas"), "eval_prompts": eval_prompts, "max_new_tokens": max_new_tokens,
        "dataset": dataset, "device": device, "dtype": dtype,
    }, as_json)


@app.command()
def sweep(
    layers: Annotated[str, typer.Option(help="Comma-separated decoder layers to steer at.")] = "3,6,10,14",
    model: Annotated[str, typer.Option(help="Named model, HF id or local directory.")] = "smollm2-135m-instruct",
    concepts: Annotated[str, typer.Option(help="Comma-separated concepts.")] = "dogs,music,space,ocean",
    steps: Annotated[int, typer.Option(help="Training steps of the rank-1 DIIs per layer.")] = 4,
    alphas: Annotated[str, typer.Option(help="Comma-separated steering factors (residual norms).")] = "0.1,0.25",
    eval_prompts: Annotated[int, typer.Option(help="Held-out prompts per concept (two halves).")] = 4,
    max_new_tokens: Annotated[int, typer.Option(help="Tokens generated per answer.")] = 16,
    dataset: Annotated[str, typer.Option(help="JSONL concept dataset (default: the committed one).")] = "",
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    dtype: Annotated[str, typer.Option(help="float32, bfloat16 or float16 (measured against float32).")] = "float32",
    as_json: JsonFlag = False,
) -> None:
    """Layer sweep: the steer study at each layer (one cdas-steer run per layer); held-out scores per layer."""
    from diag.cdas.config import BY_LAYER
    from diag.cli import run_and_emit

    run_and_emit(BY_LAYER, {
        "layers": _ints(layers, "--layers"), "model": model, "concepts": _names(concepts),
        "steps": steps, "alphas": _floats(alphas, "--alphas"), "eval_prompts": eval_prompts,
        "max_new_tokens": max_new_tokens, "dataset": dataset, "device": device, "dtype": dtype,
    }, as_json)


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
    from diag.cli import emit

    result = export_run(run_id, fmt, Path(out) if out else None, concept or None, method or None)
    emit(result, as_json, run_id)
