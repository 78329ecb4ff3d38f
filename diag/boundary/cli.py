"""``diag boundary train|export``: train ALE policies and ship them (``record`` and ``analyse`` are generated
from their Configs in ``diag.boundary.config``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from diag.commands import JsonFlag

GameOption = Annotated[str | None, typer.Option(
    help="Game of policy files that do not record it (CleanRL, SB3): pong, Pong, ALE/Pong-v5, PongNoFrameskip-v4.")]
FullActionsFlag = Annotated[bool, typer.Option(help="Play with all 18 ALE actions, not the game's minimal set.")]
DeviceOption = Annotated[str, typer.Option(help="auto (CUDA when present), cpu or cuda[:N].")]
Tf32Flag = Annotated[bool, typer.Option(help="Allow TF32 for gradients on CUDA (off: exact float32).")]
app = typer.Typer(no_args_is_help=True, help="Decision-boundary instability of ALE policies (RA-NLD).")


@app.command()
def train(
    out: Annotated[Path, typer.Option(help="Directory for train_state.pt and train.jsonl (resumes if present).")],
    game: Annotated[str, typer.Option(help="ALE game: road_runner, pong, Pong, ALE/Pong-v5, ...")] = "road_runner",
    seed: int = 1,
    total_steps: Annotated[int, typer.Option(help="Agent steps to train for.")] = 1_000_000,
    max_minutes: Annotated[float, typer.Option(help="Stop with a checkpoint after this many minutes.")] = 1e9,
    init_from: Annotated[str, typer.Option(help="train_state.pt to fine-tune from.")] = "",
    adv_eps: Annotated[float, typer.Option(help="PGD radius for adversarial fine-tuning (0: vanilla).")] = 0.0,
    eps_start: Annotated[float, typer.Option(help="Initial exploration epsilon.")] = 1.0,
    learning_starts: int = 5_000,
    device: DeviceOption = "auto",
    as_json: JsonFlag = False,
) -> None:
    """Train (or adversarially fine-tune) a double + dueling DQN; resumable, see policy/train_dqn.py."""
    import torch

    from diag.boundary.policy.train_dqn import Args, main
    from diag.commands import emit

    main(Args(out=str(out), game=game, seed=seed, total_steps=total_steps, max_minutes=max_minutes,
              init_from=init_from, adv_eps=adv_eps, eps_start=eps_start, eps_end=min(eps_start, 0.01),
              learning_starts=learning_starts, device=device))
    state = torch.load(out / "train_state.pt", map_location="cpu", weights_only=False)
    recent = [r for _, r in state["episodes"][-20:]]
    emit({"agent_steps": int(state["global_step"]), "updates": int(state["updates"]),
          "training_return_last20": sum(recent) / len(recent) if recent else None}, as_json)


@app.command()
def export(
    train_state: Annotated[Path, typer.Argument(help="train_state.pt written by `diag boundary train`.")],
    target: Annotated[Path, typer.Argument(help="Policy file to write (e.g. diag/zoo/assets/atari/NAME.pt).")],
    as_json: JsonFlag = False,
) -> None:
    """Write the online Q-network of a training state as a policy file that `--policy` accepts."""
    from diag.boundary.policy.load import export_policy, load_policy
    from diag.commands import emit
    from diag.errors import DiagError

    if not train_state.exists():
        raise DiagError(f"no training state at {train_state}")
    export_policy(train_state, target, {})
    policy = load_policy(str(target))
    emit({"policy": str(target), "game": policy.game, **policy.meta}, as_json)


