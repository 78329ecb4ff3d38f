"""``diag credit train|score|show|tabular``: train our DPO adapter, score per-token credit, show a run's views."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

JsonFlag = Annotated[bool, typer.Option("--json", help="Print the result summary as one JSON object.")]
app = typer.Typer(no_args_is_help=True, help="DPO implicit reward as token-level credit assignment.")


@app.command()
def train(
    steps: Annotated[int, typer.Option(help="DPO steps.")] = 200,
    n_train: Annotated[int, typer.Option(help="Training preference pairs.")] = 320,
    beta: Annotated[float, typer.Option(help="DPO beta.")] = 0.1,
    lr: Annotated[float, typer.Option(help="AdamW learning rate for the LoRA weights.")] = 8e-4,
    nll_weight: Annotated[float, typer.Option(help="Weight of the NLL term on the chosen answer (0: plain DPO).")] = 1.0,
    token_kl_weight: Annotated[float, typer.Option(
        help="Weight of the per-token KL(reference || policy) over both answers (0: none).")] = 0.0,
    anchor_weight: Annotated[float, typer.Option(
        help="Weight of the squared per-token log-ratio on the reference's own answers (0: none).")] = 1.0,
    seed: Annotated[int, typer.Option(help="Seed (data, initialisation, batches).")] = 0,
    export: Annotated[Path | None, typer.Option(help="Copy the trained adapter to this directory.")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    as_json: JsonFlag = False,
) -> None:
    """Train a LoRA DPO adapter on SmolLM2 (resumes a killed run from its checkpoint)."""
    import shutil

    from diag.cli import run_and_emit
    from diag.credit.config import TRAIN

    def export_adapter(result: Any) -> dict[str, str]:
        if export is None:
            return {}
        shutil.copytree(result.adapter_dir, export, dirs_exist_ok=True)
        return {"exported_to": str(export)}

    run_and_emit(TRAIN, {"steps": steps, "n_train": n_train, "beta": beta, "lr": lr, "seed": seed,
                       "nll_weight": nll_weight, "token_kl_weight": token_kl_weight,
                       "anchor_weight": anchor_weight, "device": device}, as_json,
                 after=export_adapter)


@app.command()
def score(
    policy: Annotated[str, typer.Argument(help="Adapter dir or name (reference = adapter off), a model, or a TRL "
                                               "DPOTrainer output dir (final model, else latest checkpoint-N) or "
                                               "one checkpoint-N dir.")] = "smollm2-dpo-credit",
    reference: Annotated[str | None, typer.Option(help="Reference model or adapter dir (needed when POLICY is a full "
                                                       "model; for an adapter, default: its base, adapter off).")
                         ] = None,
    beta: Annotated[float | None, typer.Option(help="Beta; default: the one recorded (TRL's training_args.bin, or "
                                                    "our adapter metadata).")] = None,
    data: Annotated[str, typer.Option(help="'heldout' or 'train' (generated pairs), or a JSONL file.")] = "heldout",
    n_pairs: Annotated[int, typer.Option(help="Generated pairs per seed.")] = 32,
    seeds: Annotated[str, typer.Option(help="Comma-separated seeds (data and bootstrap).")] = "0,1,2",
    captum_steps: Annotated[int, typer.Option(help="Integrated-gradients steps; 0 skips captum.")] = 8,
    captum_pairs: Annotated[int, typer.Option(help="Pairs per seed that also get the captum baseline.")] = 4,
    n_boot: Annotated[int, typer.Option(help="Bootstrap resamples.")] = 1000,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    dtype: Annotated[str, typer.Option(help="float32, bfloat16 or float16 (measured against float32).")] = "float32",
    as_json: JsonFlag = False,
) -> None:
    """Per-token implicit rewards of POLICY vs its reference, with localisation scores and baselines."""
    from diag.cli import parse_ints, run_and_emit
    from diag.credit.config import SCORE

    run_and_emit(SCORE, {
        "policy": policy, "reference": reference, "beta": beta, "data": data, "n_pairs": n_pairs,
        "seeds": list(parse_ints(seeds, "--seeds")), "captum_steps": captum_steps,
        "captum_pairs": captum_pairs, "n_boot": n_boot, "device": device, "dtype": dtype}, as_json)


@app.command()
def show(run_id: str, as_json: JsonFlag = False) -> None:
    """Where a scored run's views are (heatmap HTML, figures), plus its aggregates by token type."""
    from diag.cli import emit
    from diag.credit.config import SCORE
    from diag.errors import DiagError
    from diag.runs import RunStore

    run = RunStore().get(run_id)
    if run.analysis != SCORE.name or not run.finished:
        raise DiagError(f"run {run.run_id} is not a finished credit scoring run")
    aggregates = run.read_json("aggregates.json")
    emit({"heatmap": str(run.path("heatmap.html")), "figures": [str(p) for p in run.figure_paths()],
          "mean_reward_by_token_type": aggregates["by_type"], "summary": run.summary}, as_json, run.run_id)


@app.command()
def tabular(
    seeds: Annotated[str, typer.Option(help="Comma-separated seeds (one MDP each).")] = "0,1,2",
    n_pairs: Annotated[int, typer.Option(help="Bradley-Terry preference pairs per seed.")] = 200_000,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    as_json: JsonFlag = False,
) -> None:
    """Ground truth: DPO's per-token log-ratio vs the optimal advantage A* in a tabular token MDP."""
    from diag.cli import parse_ints, run_and_emit
    from diag.credit.config import TABULAR

    run_and_emit(TABULAR, {"seeds": list(parse_ints(seeds, "--seeds")), "n_pairs": n_pairs, "device": device},
                 as_json)
