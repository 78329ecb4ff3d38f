"""Policy plumbing: shifts, loading (and its one-line failures), the frame replay buffer against the real env."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diag.boundary import shifts
from diag.boundary.policy.load import load_policy
from diag.boundary.policy.network import QNetwork
from diag.boundary.policy.train_dqn import FrameReplay
from diag.errors import DiagError


def test_shifts_keep_shape_and_range_and_are_identities_at_zero_strength() -> None:
    torch.manual_seed(0)
    obs = torch.rand(2, 4, 84, 84)
    for name, shift in shifts.SHIFTS.items():
        out = shift(obs)
        assert out.shape == obs.shape, name
        assert out.min() >= 0 and out.max() <= 1, name
        assert float((out - obs).abs().mean()) > 0.01, name  # the default strength really changes the screen
    for out in (shifts.brightness(obs, 0.0), shifts.contrast(obs, 1.0), shifts.rotation(obs, 0.0),
                shifts.perspective(obs, 0.0)):
        torch.testing.assert_close(out, obs, atol=1e-5, rtol=0)


def test_rotation_by_90_degrees_is_an_exact_pixel_permutation() -> None:
    obs = torch.rand(1, 4, 84, 84)
    rotated = shifts.rotation(obs, 90.0)
    matches = [torch.allclose(rotated, torch.rot90(obs, k, dims=(-2, -1)), atol=1e-5) for k in (1, 3)]
    assert any(matches)


def test_blur_preserves_constant_images_and_jpeg_is_near_lossless_on_them() -> None:
    obs = torch.full((1, 4, 84, 84), 0.5)
    torch.testing.assert_close(shifts.blur(obs), obs)
    assert float((shifts.jpeg(obs) - obs).abs().max()) <= 2 / 255


def test_shipped_vanilla_policy_loads_and_plays_a_legal_action() -> None:
    policy = load_policy("roadrunner-vanilla")
    assert policy.game == "road_runner"
    assert policy.network(torch.zeros(1, 4, 84, 84, dtype=torch.uint8)).shape == (1, 18)


def test_plain_state_dicts_load_with_a_game_and_bad_files_fail_with_one_line(tmp_path) -> None:
    torch.manual_seed(0)
    net = QNetwork(6)
    plain = tmp_path / "plain.pt"
    torch.save(net.state_dict(), plain)
    loaded = load_policy(str(plain), game="pong")
    x = torch.rand(2, 4, 84, 84)
    torch.testing.assert_close(loaded.network(x), net(x))
    with pytest.raises(DiagError, match="pass the game"):
        load_policy(str(plain))
    wrong = net.state_dict()
    wrong["trunk.0.weight"] = torch.zeros(16, 4, 8, 8)
    torch.save(wrong, tmp_path / "wrong.pt")
    with pytest.raises(DiagError, match="does not fit"):
        load_policy(str(tmp_path / "wrong.pt"), game="pong")
    (tmp_path / "corrupt.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(DiagError, match="not a readable"):
        load_policy(str(tmp_path / "corrupt.pt"), game="pong")
    with pytest.raises(DiagError, match="unknown policy"):
        load_policy("no-such-policy")
    nan = net.state_dict()
    nan["value.bias"] = torch.tensor([float("nan")])
    torch.save(nan, tmp_path / "nan.pt")
    with pytest.raises(DiagError, match="non-finite"):
        load_policy(str(tmp_path / "nan.pt"), game="pong")


def test_replay_rebuilds_exactly_the_stacks_the_env_returned() -> None:
    """Feed the buffer the way train_dqn does; every rebuilt 4-frame stack must equal the env's own stack."""
    from ale_py.vector_env import AtariVectorEnv

    envs = AtariVectorEnv("road_runner", 2, num_threads=1, reward_clipping=False)
    rng = np.random.default_rng(0)
    rb = FrameReplay(2 * 400, 2)
    obs, _ = envs.reset(seed=0)
    first, reset_step = np.ones(2, dtype=bool), np.zeros(2, dtype=bool)
    seen = []
    for _ in range(400):
        actions = rng.integers(0, envs.single_action_space.n, 2)
        next_obs, rewards, terminated, truncated, _ = envs.step(actions)
        ended = (terminated | truncated) & ~reset_step
        rb.add(obs[:, -1], actions, np.sign(rewards), ended, first, ~reset_step)
        seen.append(obs)
        first, reset_step = reset_step.copy(), ended
        obs = next_obs
    envs.close()
    assert rb.dones.any(), "random play should end an episode within 400 steps"
    for t in range(3, 400):
        for e in range(2):
            np.testing.assert_array_equal(rb._stack(np.array([t]), np.array([e]))[0], seen[t][e])


def test_a_replaced_checkpoint_is_a_new_run(tmp_path) -> None:
    import shutil

    from diag.boundary import analysis, episodes
    from diag.boundary.policy.load import policy_path

    checkpoint = tmp_path / "policy.pt"
    shutil.copy(policy_path("roadrunner-vanilla"), checkpoint)
    before = episodes.pin_inputs(episodes.Config(policy=str(checkpoint)))
    assert before.policy_sha256 == episodes.pin_inputs(episodes.Config()).policy_sha256  # same bytes, same run
    shutil.copy(policy_path("roadrunner-robust"), checkpoint)
    assert episodes.pin_inputs(episodes.Config(policy=str(checkpoint))).policy_sha256 != before.policy_sha256
    pinned = analysis.pin_inputs(analysis.Config(policies=("roadrunner-vanilla", str(checkpoint))))
    assert pinned.policies_sha256 == (before.policy_sha256, episodes.pin_inputs(episodes.Config(
        policy="roadrunner-robust")).policy_sha256)
