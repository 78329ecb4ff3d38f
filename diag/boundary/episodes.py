"""Record greedy episodes of a policy into the run store: frames, actions, Q-values, rewards, and the score.

Also the evaluation behind the model cards: mean score over parallel episodes with a 95% interval, optionally
under a shift or an attack, beside a uniformly random policy under the same settings.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from diag.boundary.condition import CONDITIONS, perturbation
from diag.boundary.config import EPISODES as ANALYSIS  # noqa: F401 -- the declared value, for callers
from diag.boundary.config import EpisodesConfig as Config
from diag.errors import DiagError
from diag.progress import Progress
from diag.report.figures import integer_ticks
from diag.report.sections import Guide, Metric, Table
from diag.run_dir import Run

if TYPE_CHECKING:
    from matplotlib.figure import Figure


@dataclass
class Result:
    game: str
    condition: str
    returns: np.ndarray
    lengths: np.ndarray
    capped: np.ndarray
    random_returns: np.ndarray | None
    steps: dict[str, np.ndarray]  # episode, frames (if kept), actions, q_values, rewards
    format: str = "diag-qnet-v1"  # the policy file's format
    action_set: str = ""  # which of the game's action sets the policy played with

    def summary(self) -> dict[str, Any]:
        from diag.boundary.policy.play import mean_interval

        out = {"game": self.game, "format": self.format, "action_set": self.action_set,
               "condition": self.condition, "score": mean_interval(self.returns),
               "episodes": len(self.returns), "capped_episodes": int(self.capped.sum()),
               "mean_length": float(self.lengths.mean()), **action_use(self.steps["actions"])}
        if self.random_returns is not None:
            out["random_score"] = mean_interval(self.random_returns)
        return out

    def save(self, run: Run) -> None:
        run.write_arrays("episodes", {"returns": self.returns, "lengths": self.lengths, "capped": self.capped,
                                      **({"random_returns": self.random_returns}
                                         if self.random_returns is not None else {})})
        run.write_arrays("steps", self.steps)
        run.write_json("meta.json", {"game": self.game, "condition": self.condition, "format": self.format,
                                     "action_set": self.action_set})
        run.write_figure("q_values", self.q_value_figure())

    def q_value_figure(self) -> Figure:
        """Greedy Q-value (an actor's greedy logit) and reward over the first episode: where the agent expects and
        gets its score."""
        from matplotlib.figure import Figure

        from diag.boundary.policy.load import output_name

        output = output_name(self.format)

        fig = Figure(figsize=(7, 3.2))
        ax = fig.subplots()
        first = self.steps["episode"] == 0
        ax.plot(self.steps["q_values"][first].max(axis=1), label=f"max {output}")
        twin = ax.twinx()
        twin.plot(np.cumsum(self.steps["rewards"][first]), color="tab:orange", label="score so far")
        ax.set(xlabel="agent step", ylabel=f"max {output}" + (" (clipped-reward units)" if output == "Q" else ""),
               title=f"{self.game}, {self.condition}: episode 0 (score {self.returns[0]:.0f})")
        twin.set_ylabel("score so far")
        integer_ticks(ax.xaxis, twin.yaxis)  # agent steps, and game points (whole numbers)
        fig.legend(loc="upper left", fontsize=8)
        return fig

    @classmethod
    def load(cls, run: Run) -> Result:
        meta, ep = run.read_json("meta.json"), run.read_arrays("episodes")
        return cls(meta["game"], meta["condition"], ep["returns"], ep["lengths"], ep["capped"],
                   ep.get("random_returns"), run.read_arrays("steps"), meta.get("format", "diag-qnet-v1"),
                   meta.get("action_set", ""))


def action_use(actions: np.ndarray) -> dict[str, Any]:
    """How often the most frequent action is pressed, and how many actions take >= 1% of steps.

    A policy that nearly always presses one button scores like that constant action; check this before
    reading its score or its robustness.
    """
    shares = np.bincount(actions) / max(len(actions), 1)
    return {"most_frequent_action": {"action": int(shares.argmax()), "share": float(shares.max())},
            "actions_above_1pct": int((shares >= 0.01).sum())}


def compute(config: Config, run: Run, progress: Progress) -> Result:
    from diag.boundary.policy.load import load_for_play
    from diag.boundary.policy.play import play, random_returns
    from diag.device import exact_matmul, resolve_device

    if config.condition not in CONDITIONS:
        raise DiagError(f"unknown condition {config.condition!r}: choose from {', '.join(CONDITIONS)}")
    device = resolve_device(config.device)
    policies, actions = load_for_play([config.policy], config.game, config.full_action_space)
    policy = policies[config.policy]
    policy.network.to(device)
    torch.manual_seed(config.seed)
    perturb = perturbation(config.condition, policy.network, config.eps, config.pgd_steps)
    with exact_matmul(config.allow_tf32):
        episodes = play(policy.network, policy.game, config.episodes, config.max_steps, config.seed, perturb,
                        progress=progress, message=f"{config.condition} episodes",
                        full_action_space=config.full_action_space)
    rand = random_returns(policy.game, config.episodes, config.max_steps, config.seed, config.full_action_space) \
        if config.random_baseline else None
    steps = {"episode": episodes.episode, "actions": episodes.actions, "q_values": episodes.q_values,
             "rewards": episodes.rewards, **({"frames": episodes.frames} if config.keep_frames else {})}
    return Result(policy.game, config.condition, episodes.returns, episodes.lengths, episodes.capped, rand, steps,
                  policy.format, actions.describe())


def audit_config(scale: float = 1.0) -> Config:
    """Four short clean episodes of the shipped vanilla policy, with the random baseline."""
    return Config(episodes=max(2, int(4 * scale)), max_steps=int(300 * scale))


def _headline(summary: dict[str, Any]) -> list[Metric]:
    s = summary["score"]
    metrics = [Metric(f"mean score ({summary['condition']})", s["value"], s["low"], s["high"]),
               Metric("episodes capped at max_steps", summary["capped_episodes"])]
    if "random_score" in summary:
        r = summary["random_score"]
        metrics.append(Metric("random policy score", r["value"], r["low"], r["high"]))
    return metrics


def _baselines(summary: dict[str, Any]) -> list[Table]:
    if "random_score" not in summary:
        return []
    rows = [[name, f"{v['value']:.1f}", f"[{v['low']:.1f}, {v['high']:.1f}]"]
            for name, v in (("policy", summary["score"]), ("uniform random", summary["random_score"]))]
    return [Table("Score against random play (95% t-interval over episodes)", ["agent", "mean", "95% CI"], rows)]


GUIDE = Guide(
    question="How well does the policy play, on clean screens or under a shift or attack, and what did it see, "
             "do and expect at each step?",
    limitations=[
        "Episodes are capped at max_steps agent steps; a capped episode's score is a lower bound.",
        "Greedy play without sticky actions; diversity comes only from up to 30 random no-ops at the start.",
    ],
    headline=_headline,
    baselines=_baselines,
    captions={"q_values": "Greedy Q-value and cumulative score over the first recorded episode."},
)


def pin_inputs(config: Config) -> Config:
    """Fingerprint the policy file, and spell the game as ale-py does (Pong and pong are one run)."""
    from diag.boundary.games import resolve_game
    from diag.boundary.policy.load import policy_fingerprint

    return dataclasses.replace(config, policy_sha256=policy_fingerprint(config.policy),
                               game=resolve_game(config.game) if config.game is not None else None)

