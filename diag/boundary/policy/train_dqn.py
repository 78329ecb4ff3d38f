"""Double + dueling DQN with n-step returns on ALE, CleanRL style: hyperparameters at the top, one loop below.

Resumable: every ``checkpoint_minutes`` the network, target network, optimiser, step counters, episode log and
RNG states are written atomically to ``<out>/train_state.pt``; a restarted run continues from there. The replay
buffer is not checkpointed (it is ~700 MB); after a resume it is refilled for ``learning_starts`` agent steps with
the current epsilon-greedy policy before updates continue.

The replay buffer stores one 84x84 frame per transition and rebuilds the 4-frame stacks on sampling (ALE's vector
env zero-pads the stack at an episode start, so the rebuild is exact), which cuts memory by 4x.
Usage: ``diag boundary train --out DIR`` or ``python -m diag.boundary.policy.train_dqn --out DIR``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from diag.atomic import atomic_path
from diag.boundary.attacks import pgd
from diag.boundary.policy.network import QNetwork


@dataclass
class Args:
    out: str = "train_out"
    game: str = "road_runner"
    seed: int = 1
    num_envs: int = 4
    total_steps: int = 1_000_000  # agent steps (each = 4 frames), summed over envs
    max_minutes: float = 1e9  # stop (with a checkpoint) after this much wall time in this process
    buffer_size: int = 100_000
    learning_starts: int = 5_000
    updates_per_vector_step: int = 1  # with 4 envs: one update per 4 agent steps, as in the Nature DQN
    batch_size: int = 32
    gamma: float = 0.99
    n_step: int = 3
    learning_rate: float = 1e-4
    adam_eps: float = 1.5e-4
    target_every: int = 2_000  # updates between target-network copies
    eps_start: float = 1.0
    eps_end: float = 0.01
    eps_decay_steps: int = 100_000  # agent steps
    max_grad_norm: float = 10.0
    checkpoint_minutes: float = 3.0
    log_every: int = 5_000  # agent steps
    threads: int = 1
    device: str = "auto"  # auto = CUDA when present; the replay buffer stays in host memory
    # adversarial fine-tuning (SA-DQN-style hinge on PGD states); adv_eps = 0 trains a vanilla agent
    init_from: str = ""  # a train_state.pt to start from (weights only; fresh optimiser and counters)
    adv_eps: float = 0.0  # L-infinity radius in [0, 1] pixel units, e.g. 1/255
    adv_steps: int = 3  # PGD steps used to find the worst state in the ball
    adv_kappa: float = 1.0  # weight of the hinge regulariser
    adv_margin: float = 0.05  # the hinge stops pushing once Q(s+d, a*) beats every other action by this much


class FrameReplay:
    """Ring buffer of shape [rows, num_envs]: one frame, action, clipped reward and flags per env per step."""

    def __init__(self, capacity: int, num_envs: int) -> None:
        self.rows = capacity // num_envs
        self.num_envs = num_envs
        self.frames = np.zeros((self.rows, num_envs, 84, 84), dtype=np.uint8)
        self.actions = np.zeros((self.rows, num_envs), dtype=np.int64)
        self.rewards = np.zeros((self.rows, num_envs), dtype=np.float32)
        self.dones = np.zeros((self.rows, num_envs), dtype=bool)  # episode or life ended after this step
        self.first = np.zeros((self.rows, num_envs), dtype=bool)  # this row's observation starts an episode
        self.valid = np.zeros((self.rows, num_envs), dtype=bool)  # the action really acted (not a reset step)
        self.ptr = 0
        self.size = 0

    def add(self, frame, action, reward, done, first, valid) -> None:
        i = self.ptr
        self.frames[i], self.actions[i], self.rewards[i] = frame, action, reward
        self.dones[i], self.first[i], self.valid[i] = done, first, valid
        self.ptr = (self.ptr + 1) % self.rows
        self.size = min(self.size + 1, self.rows)

    def _physical(self, logical: np.ndarray) -> np.ndarray:
        start = (self.ptr - self.size) % self.rows
        return (start + logical) % self.rows

    def _stack(self, logical: np.ndarray, env: np.ndarray) -> np.ndarray:
        """Frames logical-3..logical, zeroed before an episode start (as the env's own stack is)."""
        out = np.zeros((len(logical), 4, 84, 84), dtype=np.uint8)
        alive = np.ones(len(logical), dtype=bool)
        for k in range(4):
            rows = self._physical(logical - k)
            out[alive, 3 - k] = self.frames[rows[alive], env[alive]]
            alive &= ~self.first[rows, env]
        return out

    def sample(self, batch: int, n_step: int, gamma: float):
        logical = np.empty(0, dtype=np.int64)
        env = np.empty(0, dtype=np.int64)
        while len(logical) < batch:  # rejection-sample starts whose action really acted
            cand = np.random.randint(3, self.size - n_step, size=2 * batch)
            cand_env = np.random.randint(0, self.num_envs, size=2 * batch)
            keep = self.valid[self._physical(cand), cand_env]
            logical, env = np.concatenate([logical, cand[keep]]), np.concatenate([env, cand_env[keep]])
        logical, env = logical[:batch], env[:batch]
        returns = np.zeros(batch, dtype=np.float32)
        running = np.ones(batch, dtype=bool)
        for k in range(n_step):
            rows = self._physical(logical + k)
            returns += running * gamma**k * self.rewards[rows, env]
            running &= ~self.dones[rows, env]
        obs = self._stack(logical, env)
        next_obs = self._stack(logical + n_step, env)
        actions = self.actions[self._physical(logical), env]
        return obs, actions, returns, running, next_obs  # running: bootstrap allowed


def epsilon(args: Args, step: int) -> float:
    frac = min(1.0, step / args.eps_decay_steps)
    return args.eps_start + frac * (args.eps_end - args.eps_start)


def main(args: Args) -> None:
    from ale_py.vector_env import AtariVectorEnv

    from diag.boundary.games import resolve_game
    from diag.device import resolve_device

    args = dataclasses.replace(args, game=resolve_game(args.game))  # before any file is written
    device = resolve_device(args.device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    state_path = out / "train_state.pt"
    log = open(out / "train.jsonl", "a")  # noqa: SIM115 - appended to for the whole run
    torch.set_num_threads(args.threads)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)

    envs = AtariVectorEnv(args.game, args.num_envs, num_threads=1, reward_clipping=False,
                          repeat_action_probability=0.0)
    n_actions = envs.single_action_space.n
    q_network = QNetwork(n_actions).to(device)
    target_network = QNetwork(n_actions).to(device)
    optimizer = torch.optim.Adam(q_network.parameters(), lr=args.learning_rate, eps=args.adam_eps)
    global_step, updates, episodes = 0, 0, []
    if state_path.exists():
        saved = torch.load(state_path, map_location=device, weights_only=False)
        q_network.load_state_dict(saved["q_network"])
        target_network.load_state_dict(saved["target_network"])
        optimizer.load_state_dict(saved["optimizer"])
        global_step, updates, episodes = saved["global_step"], saved["updates"], saved["episodes"]
        torch.set_rng_state(saved["rng"]["torch"])
        np.random.set_state(saved["rng"]["numpy"])
        random.setstate(saved["rng"]["python"])
        print(f"resumed at agent step {global_step}, {updates} updates", flush=True)
    else:
        if args.init_from:
            q_network.load_state_dict(torch.load(args.init_from, map_location=device, weights_only=False)["q_network"])
        target_network.load_state_dict(q_network.state_dict())
    resume_step = global_step
    rb = FrameReplay(args.buffer_size, args.num_envs)

    def save_state() -> None:
        state = {"q_network": q_network.state_dict(), "target_network": target_network.state_dict(),
                 "optimizer": optimizer.state_dict(), "global_step": global_step, "updates": updates,
                 "episodes": episodes, "args": dataclasses.asdict(args), "n_actions": n_actions,
                 "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
                         "python": random.getstate()}}
        with atomic_path(state_path) as tmp:
            torch.save(state, tmp)

    obs, info = envs.reset(seed=args.seed + global_step)
    lives = info["lives"].copy()
    first = np.ones(args.num_envs, dtype=bool)
    reset_step = np.zeros(args.num_envs, dtype=bool)  # next step() call only resets these envs
    episode_return = np.zeros(args.num_envs)
    started = last_save = time.time()
    losses: list[float] = []
    while global_step < args.total_steps and (time.time() - started) < args.max_minutes * 60:
        # act: epsilon-greedy over the online network
        with torch.no_grad():
            actions = q_network(torch.from_numpy(obs).to(device)).argmax(dim=1).cpu().numpy()
        explore = np.random.rand(args.num_envs) < epsilon(args, global_step)
        actions = np.where(explore, np.random.randint(0, n_actions, size=args.num_envs), actions)
        next_obs, rewards, terminated, truncated, info = envs.step(actions)
        ended = (terminated | truncated) & ~reset_step
        life_lost = (info["lives"] < lives) & ~reset_step
        rb.add(obs[:, -1], actions, np.sign(rewards), ended | life_lost, first, ~reset_step)
        episode_return += np.where(reset_step, 0.0, rewards)
        for e in np.flatnonzero(ended):
            episodes.append((global_step, float(episode_return[e])))
            episode_return[e] = 0.0
        first = reset_step.copy()
        reset_step = ended
        lives = info["lives"].copy()
        obs = next_obs
        global_step += args.num_envs

        # learn: double DQN target with n-step returns, Huber loss
        if global_step - resume_step > args.learning_starts:
            for _ in range(args.updates_per_vector_step):
                b_obs, b_act, b_ret, b_boot, b_next = rb.sample(args.batch_size, args.n_step, args.gamma)
                b_obs, b_next = torch.from_numpy(b_obs).to(device), torch.from_numpy(b_next).to(device)
                with torch.no_grad():
                    next_action = q_network(b_next).argmax(dim=1, keepdim=True)
                    next_value = target_network(b_next).gather(1, next_action).squeeze(1)
                    target = torch.from_numpy(b_ret).to(device) + args.gamma**args.n_step * torch.from_numpy(
                        b_boot.astype(np.float32)).to(device) * next_value
                q_taken = q_network(b_obs).gather(1, torch.from_numpy(b_act).to(device)[:, None]).squeeze(1)
                loss = F.smooth_l1_loss(q_taken, target)
                if args.adv_eps > 0:  # keep the clean greedy action best everywhere in the eps-ball
                    clean = b_obs.float() / 255.0
                    with torch.no_grad():
                        greedy = q_network(clean).argmax(dim=1)
                    q_adv = q_network(pgd(q_network, clean, args.adv_eps, steps=args.adv_steps))
                    q_greedy = q_adv.gather(1, greedy[:, None]).squeeze(1)
                    q_other = q_adv.scatter(1, greedy[:, None], float("-inf")).max(dim=1).values
                    loss = loss + args.adv_kappa * F.relu(q_other - q_greedy + args.adv_margin).mean()
                optimizer.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(q_network.parameters(), args.max_grad_norm)
                optimizer.step()
                losses.append(loss.item())
                updates += 1
                if updates % args.target_every == 0:
                    target_network.load_state_dict(q_network.state_dict())

        if global_step % args.log_every < args.num_envs:
            recent = [r for _, r in episodes[-20:]]
            row = {"step": global_step, "updates": updates, "eps": round(epsilon(args, global_step), 3),
                   "episodes": len(episodes), "return_last20": float(np.mean(recent)) if recent else None,
                   "loss": float(np.mean(losses[-500:])) if losses else None,
                   "minutes": round((time.time() - started) / 60, 2)}
            log.write(json.dumps(row) + "\n")
            log.flush()
            print(json.dumps(row), flush=True)
        if time.time() - last_save > args.checkpoint_minutes * 60:
            save_state()
            last_save = time.time()
    save_state()
    print(f"stopped at agent step {global_step}, {updates} updates", flush=True)


def parse_args(argv: list[str] | None = None) -> Args:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for field in dataclasses.fields(Args):
        parser.add_argument(f"--{field.name.replace('_', '-')}", type=type(field.default), default=field.default)
    return Args(**vars(parser.parse_args(argv)))


if __name__ == "__main__":
    main(parse_args())
