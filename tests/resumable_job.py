"""A small real training job (SGD on a noisy linear regression), used by the kill-and-resume test (as a script)
and the cancel-and-resume tests (as an analysis).

Usage: python resumable_job.py STORE_ROOT [--sleep SECONDS]. Prints "step N" per step and the result JSON last.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from typing import Any

import torch

from diag.checkpoint import run_steps
from diag.contract import Analysis, run
from diag.device import seed_everything
from diag.progress import Progress, no_progress, report_metrics
from diag.run_dir import Run
from diag.runs import RunStore


@dataclass(frozen=True)
class Config:
    steps: int = 40
    seed: int = 0
    checkpoint_every: int = 5


@dataclass
class Result:
    weights: list[float]
    loss: float

    def summary(self) -> dict[str, Any]:
        return {"weights": self.weights, "loss": self.loss}

    def save(self, run: Run) -> None:
        run.write_json("weights.json", self.summary())

    @classmethod
    def load(cls, run: Run) -> Result:
        data = run.read_json("weights.json")
        return cls(data["weights"], data["loss"])


def compute(config: Config, run: Run, progress: Progress = no_progress, sleep: float = 0.0) -> Result:
    """``sleep`` seconds after each step give a test time to kill the process mid-run."""
    seed_everything(config.seed)
    true_w = torch.tensor([1.5, -2.0, 0.5])

    def step(state: dict, i: int) -> dict:
        x = torch.randn(16, 3)  # fresh random batch each step: resume must restore the RNG to match
        y = x @ true_w + 0.1 * torch.randn(16)
        w = state["w"].clone().requires_grad_(True)
        loss = ((x @ w - y) ** 2).mean()
        loss.backward()
        print(f"step {i + 1}", flush=True)
        report_metrics(progress, i + 1, loss=loss.item())
        time.sleep(sleep)
        return {"w": (w - 0.05 * w.grad).detach(), "loss": float(loss)}

    state = run_steps(run, config.steps, {"w": torch.zeros(3), "loss": 0.0}, step, every=config.checkpoint_every,
                      progress=progress, message="sgd")
    return Result([round(float(v), 12) for v in state["w"]], round(state["loss"], 12))


def analysis(sleep: float = 0.0) -> Analysis:
    """The job declared as an analysis, sleeping ``sleep`` seconds after each step."""
    return Analysis(name="toy-sgd", config=Config, result=Result, audit_config=lambda scale: Config(),
                    compute=lambda config, run, progress: compute(config, run, progress, sleep),
                    description="A resumable SGD.")


if __name__ == "__main__":
    root = sys.argv[1]
    sleep = float(sys.argv[3]) if len(sys.argv) > 3 else 0.0
    _, result = run(analysis(sleep), Config(), store=RunStore(root))
    print(json.dumps(result.summary()), flush=True)
