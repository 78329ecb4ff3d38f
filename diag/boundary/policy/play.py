"""Play greedy episodes with ALE's vector environment, one episode per env, optionally through a perturbation.

ale-py blocks forever on an action outside the game's action set and gives no timeout of its own, so every call
into the environment goes through ``guarded``: actions are range-checked before stepping, and the call runs on a
daemon thread that must return within ``STEP_TIMEOUT_S`` (ale-py releases the GIL while it works).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from diag.errors import DiagError
from diag.progress import Progress, no_progress

Perturb = Callable[[torch.Tensor], torch.Tensor]
STEP_TIMEOUT_S = 60.0  # a vector step takes milliseconds; a minute means ale-py is stuck


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
    states: torch.Tensor | None  # [N, 4, 84, 84] float observations the agent saw (if kept), on the network's device


class EnvironmentStuck(DiagError):
    """ale-py did not return from a call; the environment must not be touched again (closing it would block)."""


def guarded(call: Callable[[], Any], what: str, timeout_s: float = STEP_TIMEOUT_S) -> Any:
    """``call()`` on a daemon thread; a call that has not returned after ``timeout_s`` is abandoned with one line."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = call()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread below
            box["error"] = exc

    worker = threading.Thread(target=target, daemon=True, name="ale-step")
    worker.start()
    worker.join(timeout_s)
    if worker.is_alive():
        raise EnvironmentStuck(f"{what} did not return within {timeout_s:g} s: ale-py is stuck (the environment is "
                        "abandoned; restart the process before playing again)")
    if "error" in box:
        raise box["error"]
    return box["value"]


@contextlib.contextmanager
def open_envs(game: str, n_episodes: int, full_action_space: bool = False) -> Iterator[Any]:
    """ALE's vector env with the settings every recorded episode uses (no sticky actions, raw scores)."""
    from ale_py.vector_env import AtariVectorEnv

    envs = AtariVectorEnv(game, n_episodes, num_threads=1, reward_clipping=False, repeat_action_probability=0.0,
                          full_action_space=full_action_space)
    try:
        yield envs
    except EnvironmentStuck:
        raise  # closing would wait on the stuck call: the env is abandoned with its thread
    except BaseException:
        envs.close()
        raise
    envs.close()


def step(envs: Any, actions: np.ndarray, game: str) -> tuple:
    """One guarded vector step; actions outside the action set are refused before ale-py can block on them."""
    n = int(envs.single_action_space.n)
    outside = actions[(actions < 0) | (actions >= n)]
    if len(outside):
        raise DiagError(f"action {int(outside[0])} is outside {game}'s {n} actions")
    return guarded(lambda: envs.step(actions), f"{game}: a vector step")


def play(network: nn.Module, game: str, n_episodes: int, max_steps: int, seed: int,
         perturb: Perturb | None = None, keep_states: bool = False, progress: Progress = no_progress,
         message: str = "episodes", full_action_space: bool = False) -> Episodes:
    """Greedy play (no exploration; 30 random no-ops at the start give the episodes their diversity).

    Observations go to the network's device; Q-values and actions come back to the host once per step.
    """
    device = next(network.parameters()).device
    with open_envs(game, n_episodes, full_action_space) as envs:
        obs, _ = guarded(lambda: envs.reset(seed=seed), f"{game}: reset")
        running = np.ones(n_episodes, dtype=bool)
        returns = np.zeros(n_episodes)
        lengths = np.zeros(n_episodes, dtype=np.int64)
        per_env: list[list[tuple]] = [[] for _ in range(n_episodes)]
        kept: list[list[torch.Tensor]] = [[] for _ in range(n_episodes)]
        for t in range(max_steps):
            seen = torch.from_numpy(obs).to(device).float() / 255.0
            if perturb is not None:
                seen = perturb(seen)
            with torch.no_grad():
                q = network(seen)
            q_host = q.cpu()
            actions = q_host.argmax(dim=1).numpy()
            next_obs, rewards, terminated, truncated, _ = step(envs, actions, game)
            for e in np.flatnonzero(running):
                per_env[e].append((obs[e, -1], actions[e], q_host[e].numpy(), rewards[e]))
                if keep_states:
                    kept[e].append(seen[e])
            returns += np.where(running, rewards, 0.0)
            lengths += running
            running &= ~(terminated | truncated)
            obs = next_obs
            progress(t + 1, max_steps, message)
            if not running.any():
                break
    steps = [row for rows in per_env for row in rows]
    return Episodes(
        returns=returns, lengths=lengths, capped=running.copy(),
        episode=np.concatenate([np.full(len(rows), e) for e, rows in enumerate(per_env)]),
        frames=np.stack([s[0] for s in steps]), actions=np.array([s[1] for s in steps]),
        q_values=np.stack([s[2] for s in steps]), rewards=np.array([s[3] for s in steps], dtype=np.float32),
        states=torch.stack([s for rows in kept for s in rows]) if keep_states else None,
    )


def random_returns(game: str, n_episodes: int, max_steps: int, seed: int,
                   full_action_space: bool = False) -> np.ndarray:
    """Scores of a uniformly random policy under the same environment settings, for the baseline."""
    with open_envs(game, n_episodes, full_action_space) as envs:
        guarded(lambda: envs.reset(seed=seed), f"{game}: reset")
        rng = np.random.default_rng(seed)
        running = np.ones(n_episodes, dtype=bool)
        returns = np.zeros(n_episodes)
        for _ in range(max_steps):
            _, rewards, terminated, truncated, _ = step(
                envs, rng.integers(0, envs.single_action_space.n, n_episodes), game)
            returns += np.where(running, rewards, 0.0)
            running &= ~(terminated | truncated)
            if not running.any():
                break
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
