"""Resumable step loops: checkpoint state and RNG every few steps so a killed run continues exactly."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from diag.progress import Progress, no_progress
from diag.run_dir import Run

State = dict[str, Any]


def _rng_state() -> dict[str, Any]:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


def _restore_rng(saved: dict[str, Any]) -> None:
    torch.set_rng_state(saved["torch"])
    np.random.set_state(saved["numpy"])
    random.setstate(saved["python"])


def run_steps(
    run: Run,
    n_steps: int,
    state: State,
    step: Callable[[State, int], State],
    *,
    every: int = 1,
    progress: Progress = no_progress,
    message: str = "steps",
) -> State:
    """Apply ``step`` for steps 0..n_steps-1, resuming from the run's checkpoint if there is one.

    ``state`` must be picklable by ``torch.save`` (tensors, state dicts, numbers). The global RNG states are
    checkpointed with it, so an interrupted and resumed loop produces the same numbers as an uninterrupted one.
    """
    start = 0
    saved = run.load_checkpoint()
    if saved is not None and "loop_step" in saved:
        start, state = saved["loop_step"], saved["state"]
        _restore_rng(saved["rng"])
    for i in range(start, n_steps):
        state = step(state, i)
        done = i + 1
        if done % every == 0 or done == n_steps:
            run.save_checkpoint({"loop_step": done, "state": state, "rng": _rng_state()})
        progress(done, n_steps, message)
    return state
