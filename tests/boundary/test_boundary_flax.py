"""CleanRL's JAX Atari agents (``dqn_atari_jax``, ``c51_atari_jax``, ``ppo_atari_envpool_xla_jax_scan``).

Files in flax's exact msgpack layout (``flax_layout``; JAX is not a test dependency). The layout was checked once
against flax 0.12.8 itself: files it wrote for the three scripts' networks loaded with outputs within 1.5e-7,
1.1e-6 and 2.5e-7 of ``Module.apply``, and an array it chunked was read back exactly. The reference computes what
flax computes, channels-last: the dense layer reads the last conv's output flattened as (row, column, channel),
the order the loader must undo for PyTorch's (channel, row, column).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import msgpack
import numpy as np
import pytest
import torch
from flax_layout import flax_bytes, flax_forward, trunk_params

from diag.boundary.policy.load import load_policy
from diag.errors import DiagError


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    return np.random.default_rng(1).integers(0, 256, (6, 4, 84, 84), dtype=np.uint8)


# float32 sums over 3,136 and 512 features in another order: rounding, ~1e-7 of outputs of ~0.2
TOLERANCE = 1e-5


def test_dqn_atari_jax_gives_flaxs_q_values(tmp_path: Path, frames: np.ndarray) -> None:
    params = trunk_params(np.random.default_rng(0), with_head=4)
    path = tmp_path / "dqn_atari_jax.cleanrl_model"
    path.write_bytes(flax_bytes({"params": params}, chunk="kernel"))  # every kernel chunked, as for big arrays
    policy = load_policy(str(path), game="BreakoutNoFrameskip-v4")
    assert (policy.format, policy.game, policy.n_actions) == ("cleanrl-dqn-jax", "breakout", 4)
    with torch.no_grad():
        ours = policy.network(torch.from_numpy(frames))
    theirs = flax_forward(params, frames, "Dense_1")
    assert float((ours - theirs).abs().max()) < TOLERANCE
    assert (ours.argmax(1) == theirs.argmax(1)).all()


def test_c51_atari_jax_gives_the_expectation_over_its_args_atoms_and_records_its_game(
        tmp_path: Path, frames: np.ndarray) -> None:
    n_actions, n_atoms = 4, 21
    params = trunk_params(np.random.default_rng(2), with_head=n_actions * n_atoms)
    args = {"env_id": "BreakoutNoFrameskip-v4", "n_atoms": n_atoms, "v_min": -5.0, "v_max": 5.0, "seed": 1,
            "wandb_entity": None, "capture_video": False}
    path = tmp_path / "c51_atari_jax.cleanrl_model"
    path.write_bytes(flax_bytes({"model_weights": {"params": params}, "args": args}))
    policy = load_policy(str(path))  # no game given: the file's args record it
    assert (policy.format, policy.game, policy.n_actions) == ("cleanrl-c51-jax", "breakout", n_actions)
    logits = flax_forward(params, frames, "Dense_1").view(len(frames), n_actions, n_atoms)
    atoms = torch.from_numpy(np.linspace(-5.0, 5.0, num=n_atoms).astype("f4"))
    theirs = (torch.softmax(logits, -1) * atoms).sum(-1)  # get_action's q_vals
    with torch.no_grad():
        assert float((policy.network(torch.from_numpy(frames)) - theirs).abs().max()) < TOLERANCE
    with pytest.raises(DiagError, match="was trained on BreakoutNoFrameskip-v4, not pong"):
        load_policy(str(path), game="pong")


def test_ppo_envpool_jax_gives_its_actors_logits(tmp_path: Path, frames: np.ndarray) -> None:
    rng = np.random.default_rng(3)
    network = trunk_params(rng, with_head=None)
    actor = {"Dense_0": {"kernel": rng.normal(0, 0.05, (512, 4)).astype("f4"), "bias": np.zeros(4, "f4")}}
    critic = {"Dense_0": {"kernel": rng.normal(0, 0.05, (512, 1)).astype("f4"), "bias": np.zeros(1, "f4")}}
    path = tmp_path / "ppo_atari_envpool_xla_jax_scan.cleanrl_model"
    path.write_bytes(flax_bytes([{"env_id": "Breakout-v5", "num_envs": 8},
                                 [{"params": network}, {"params": actor}, {"params": critic}]]))
    policy = load_policy(str(path))
    assert (policy.format, policy.game, policy.n_actions) == ("cleanrl-ppo-jax", "breakout", 4)
    hidden = flax_forward(network, frames, None)
    theirs = hidden @ torch.from_numpy(actor["Dense_0"]["kernel"]) + torch.from_numpy(actor["Dense_0"]["bias"])
    with torch.no_grad():
        assert float((policy.network(torch.from_numpy(frames)) - theirs).abs().max()) < TOLERANCE


def test_broken_and_foreign_flax_files_fail_with_one_line(tmp_path: Path) -> None:
    params = trunk_params(np.random.default_rng(4), with_head=4)
    whole = flax_bytes({"params": params})
    cases = {
        "truncated": (whole[: len(whole) // 2], "not a readable flax msgpack file"),
        "unknown layout": (flax_bytes({"opt_state": {"count": np.zeros(1, "i4")}}), "unknown layout"),
        "missing layer": (flax_bytes({"params": {k: v for k, v in params.items() if k != "Conv_1"}}),
                          "no 4-d Conv_1.kernel"),
        "c51 without atoms": (flax_bytes({"model_weights": {"params": params}, "args": {"env_id": "Pong-v5"}}),
                              "lack n_atoms"),
        "other extension": (msgpack.packb({"params": msgpack.ExtType(2, b"xx")}), "extension type 2"),
    }
    for name, (content, message) in cases.items():
        path = tmp_path / f"{name.replace(' ', '_')}.cleanrl_model"
        path.write_bytes(content)
        with pytest.raises(DiagError, match=message) as caught:
            load_policy(str(path), game="pong")
        assert "\n" not in str(caught.value), name


def test_cli_records_a_jax_policy_without_a_game_flag(tmp_path: Path, diag_home: Path) -> None:
    params = trunk_params(np.random.default_rng(5), with_head=4 * 11)
    args = {"env_id": "BreakoutNoFrameskip-v4", "n_atoms": 11, "v_min": -10, "v_max": 10}
    path = tmp_path / "c51.cleanrl_model"
    path.write_bytes(flax_bytes({"model_weights": {"params": params}, "args": args}))
    out = subprocess.run([sys.executable, "-m", "diag.cli", "boundary", "record", "--policy", str(path),
                          "--episodes", "2", "--max-steps", "5", "--no-random-baseline", "--no-keep-frames",
                          "--device", "cpu", "--json"], capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 0, out.stderr
    recorded = json.loads(out.stdout)
    assert (recorded["format"], recorded["game"], recorded["episodes"]) == ("cleanrl-c51-jax", "breakout", 2)
