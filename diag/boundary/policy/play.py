"""Play greedy episodes with ALE's vector environment, one episode per env, optionally through a perturbation."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from diag.progress import Progress, no_progress

Perturb = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class Episodes:
    """Episodes played in parallel; per-step arrays are concatenated episode after episode."""

    returns: np.ndarray  # [E] raw (unclipped) game score
    lengths: np.ndarray  # [E] agent steps
    capped: np.ndarray  # [E] True where the episode hit max_steps before the game ended
    episode: np.ndarray  # [N] episode index of each recorded step
    frames: np.ndarray  # [N, 84, 84] uint8 newest clean frame of each step's stack
    actions: np.ndarray  # [N]
    q_values: np.ndarray  # [N, A] Q-values of the observation the agent saw
    rewards: np.ndarray  # [N]
    states: torch.Tensor | None  # [N, 4, 84, 84] float observations the agent saw (if kept)


def play(network: nn.Module, game: str, n_episodes: int, max_steps: int, seed: int,
         perturb: Perturb | None = None, keep_states: bool = False, progress: Progress = no_progress,
         message: str = "episodes") -> Episodes:
    """Greedy play (no exploration; 30 random no-ops at the start give the episodes their diversity)."""
    from ale_py.vector_env import AtariVectorEnv

    envs = AtariVectorEnv(game, n_episodes, num_threads=1, reward_clipping=False, repeat_action_probability=0.0)
    obs, _ = envs.reset(seed=seed)
    running = np.ones(n_episodes, dtype=bool)
    returns = np.zeros(n_episodes)
    lengths = np.zeros(n_episodes, dtype=np.int64)
    per_env: list[list[tuple]] = [[] for _ in range(n_episodes)]
    kept: list[list[torch.Tensor]] = [[] for _ in range(n_episodes)]
    for t in range(max_steps):
        seen = torch.from_numpy(obs).float() / 255.0
        if perturb is not None:
            seen = perturb(seen)
        with torch.no_grad():
            q = network(seen)
        actions = q.argmax(dim=1).numpy()
        next_obs, rewards, terminated, truncated, _ = envs.step(actions)
        for e in np.flatnonzero(running):
            per_env[e].append((obs[e, -1], actions[e], q[e].numpy(), rewards[e]))
            if keep_states:
                kept[e].append(seen[e])
        returns += np.where(running, rewards, 0.0)
        lengths += running
        running &= ~(terminated | truncated)
        obs = next_obs
        progress(t + 1, max_steps, message)
        if not running.any():
            break
    envs.close()
    steps = [row for rows in per_env for row in rows]
    return Episodes(
        returns=returns, lengths=lengths, capped=running.copy(),
        episode=np.concatenate([np.full(len(rows), e) for e, rows in enumerate(per_env)]),
        frames=np.stack([s[0] for s in steps]), actions=np.array([s[1] for s in steps]),
        q_values=np.stack([s[2] for s in steps]), rewards=np.array([s[3] for s in steps], dtype=np.float32),
        states=torch.stack([s for rows in kept for s in rows]) if keep_states else None,
    )


def random_returns(game: str, n_episodes: int, max_steps: int, seed: int) -> np.ndarray:
    """Scores of a uniformly random policy under the same environment settings, for the baseline."""
    from ale_py.vector_env import AtariVectorEnv

    envs = AtariVectorEnv(game, n_episodes, num_threads=1, reward_clipping=False, repeat_action_probability=0.0)
    envs.reset(seed=seed)
    rng = np.random.default_rng(seed)
    running = np.ones(n_episodes, dtype=bool)
    returns = np.zeros(n_episodes)
    for _ in range(max_steps):
        _, rewards, terminated, truncated, _ = envs.step(rng.integers(0, envs.single_action_space.n, n_episodes))
        returns += np.where(running, rewards, 0.0)
        running &= ~(terminated | truncated)
        if not running.any():
            break
    envs.close()
    return returns


def mean_interval(values: np.ndarray) -> dict[str, float]:
    """Mean with a 95% Student-t interval over episodes."""
    from scipy import stats

    values = np.asarray(values, dtype=np.float64)
    mean = float(values.mean())
    if len(values) < 2:
        return {"value": mean, "low": mean, "high": mean, "n": len(values)}
    half = float(stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values)))
    return {"value": mean, "low": mean - half, "high": mean + half, "n": len(values)}
