"""Policies in the formats people bring (CleanRL DQN, C51 and PPO, in PyTorch and JAX; Stable-Baselines3 DQN,
QR-DQN, PPO and A2C; ours), game names, action sets.

The SB3 and sb3-contrib models are made by the libraries themselves, on rl-zoo's Atari stack (``make_atari_env`` +
``VecFrameStack(4)``, which SB3 transposes to channels-first), and saved with ``model.save``; the CleanRL networks
are ``dqn_atari.QNetwork``, ``c51_atari.QNetwork`` and ``ppo_atari.Agent`` copied below, saved as those scripts
save them. All are untrained (initial weights in the exact format): what is tested is that our loader computes
the library's Q-values or logits.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from flax_layout import write_jax_policies
from torch import nn

from diag.boundary.games import action_set, resolve_game
from diag.boundary.policy.load import FORMATS, load_for_play, load_policy
from diag.boundary.policy.network import QNetwork
from diag.errors import DiagError


def cleanrl_network(*head: nn.Module) -> nn.Sequential:
    """The ``self.network`` Sequential every CleanRL Atari script spells out (Nature CNN, then ``head``): the
    scripts' state dict keys (``network.{0,2,4,7[,9]}``) come from this exact layer order."""
    return nn.Sequential(
        nn.Conv2d(4, 32, 8, stride=4),
        nn.ReLU(),
        nn.Conv2d(32, 64, 4, stride=2),
        nn.ReLU(),
        nn.Conv2d(64, 64, 3, stride=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(3136, 512),
        nn.ReLU(),
        *head,
    )


class CleanRLQNetwork(nn.Module):
    """CleanRL ``dqn_atari.py``'s QNetwork, but for taking the action count instead of the env."""

    def __init__(self, n_actions: int) -> None:
        super().__init__()
        self.network = cleanrl_network(nn.Linear(512, n_actions))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x / 255.0)


class CleanRLC51Network(nn.Module):
    """CleanRL ``c51_atari.py``'s QNetwork, but for taking the action count instead of the env."""

    def __init__(self, n_actions: int, n_atoms: int = 51, v_min: float = -10, v_max: float = 10) -> None:
        super().__init__()
        self.n_atoms = n_atoms
        self.register_buffer("atoms", torch.linspace(v_min, v_max, steps=n_atoms))
        self.n = n_actions
        self.network = cleanrl_network(nn.Linear(512, self.n * n_atoms))

    def get_action(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.network(x / 255.0)
        pmfs = torch.softmax(logits.view(len(x), self.n, self.n_atoms), dim=2)
        q_values = (pmfs * self.atoms).sum(2)
        return torch.argmax(q_values, 1), q_values


class CleanRLAgent(nn.Module):
    """CleanRL ``ppo_atari.py``'s Agent, but for taking the action count and plain initialisation (its
    ``layer_init`` only sets initial values)."""

    def __init__(self, n_actions: int) -> None:
        super().__init__()
        self.network = cleanrl_network()
        self.actor = nn.Linear(512, n_actions)
        self.critic = nn.Linear(512, 1)

    def get_action_logits(self, x: torch.Tensor) -> torch.Tensor:  # get_action_and_value's Categorical logits
        return self.actor(self.network(x / 255.0))


@pytest.fixture(scope="module")
def atari_env():
    """rl-zoo's Pong stack: AtariWrapper (84x84 grey, frame skip 4, no-op starts) and 4 stacked frames.

    Only its spaces are used (the models are built on it, never stepped: its frame warping needs OpenCV)."""
    gym = pytest.importorskip("gymnasium")
    import ale_py
    from stable_baselines3.common.env_util import make_atari_env
    from stable_baselines3.common.vec_env import VecFrameStack

    gym.register_envs(ale_py)
    env = VecFrameStack(make_atari_env("PongNoFrameskip-v4", n_envs=2, seed=0), n_stack=4)
    yield env
    env.close()


@pytest.fixture(scope="module")
def pong_frames() -> np.ndarray:
    """Real Pong observations from ALE's vector env, [32, 4, 84, 84] uint8: the layout SB3 policies see after
    their channels-first transpose, and what the analysis plays with."""
    from diag.boundary.policy.play import open_envs, step

    rng = np.random.default_rng(0)
    with open_envs("pong", 2) as envs:
        obs, _ = envs.reset(seed=0)
        frames = []
        for _ in range(16):
            obs, *_ = step(envs, rng.integers(0, 6, 2), "pong")
            frames.append(obs)
    return np.concatenate(frames)


@pytest.fixture(scope="module")
def saved_policies(tmp_path_factory: pytest.TempPathFactory, atari_env) -> dict[str, Path]:
    """One untrained Pong policy per format, written by the library that defines the format."""
    from sb3_contrib import QRDQN
    from stable_baselines3 import DQN, PPO

    folder = tmp_path_factory.mktemp("policies")
    torch.manual_seed(0)
    paths = {"cleanrl-dqn": folder / "dqn_atari.cleanrl_model", "sb3-dqn": folder / "dqn-PongNoFrameskip-v4.zip",
             "sb3-qrdqn": folder / "qrdqn-PongNoFrameskip-v4.zip", "diag-qnet-v1": folder / "ours.pt",
             "cleanrl-ppo": folder / "ppo_atari.cleanrl_model", "sb3-actor-critic": folder / "ppo-Pong.zip",
             "cleanrl-c51": folder / "c51_atari.cleanrl_model"}
    torch.save(CleanRLC51Network(6).state_dict(), paths["cleanrl-c51"])
    torch.save(CleanRLQNetwork(6).state_dict(), paths["cleanrl-dqn"])
    torch.save(CleanRLAgent(6).state_dict(), paths["cleanrl-ppo"])
    PPO("CnnPolicy", atari_env, n_steps=8, batch_size=16, seed=0).save(paths["sb3-actor-critic"])
    DQN("CnnPolicy", atari_env, buffer_size=10, seed=0).save(paths["sb3-dqn"])
    QRDQN("CnnPolicy", atari_env, buffer_size=10, seed=0, policy_kwargs={"n_quantiles": 25}).save(paths["sb3-qrdqn"])
    torch.save(QNetwork(6).state_dict(), paths["diag-qnet-v1"])
    paths.update(write_jax_policies(folder, 6, "PongNoFrameskip-v4"))
    return paths


def _max_diff(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    return float((ours - theirs).abs().max())


def test_cleanrl_state_dict_gives_cleanrls_q_values(saved_policies: dict[str, Path], pong_frames: np.ndarray) -> None:
    original = CleanRLQNetwork(6)
    original.load_state_dict(torch.load(saved_policies["cleanrl-dqn"], weights_only=True))
    policy = load_policy(str(saved_policies["cleanrl-dqn"]), game="PongNoFrameskip-v4")
    assert (policy.format, policy.game, policy.n_actions) == ("cleanrl-dqn", "pong", 6)
    with torch.no_grad():
        theirs = original(torch.Tensor(pong_frames))  # how dqn_atari feeds its network
        ours_uint8 = policy.network(torch.from_numpy(pong_frames))
        ours_float = policy.network(torch.from_numpy(pong_frames).float() / 255.0)  # what the analysis feeds
    assert _max_diff(ours_uint8, theirs) == 0.0  # same ops in the same order: bit-identical
    assert _max_diff(ours_float, theirs) == 0.0


@pytest.mark.parametrize("policy_kwargs", [{}, {"net_arch": [64], "normalize_images": False}])
def test_sb3_dqn_zip_gives_sb3s_q_values(tmp_path: Path, atari_env, pong_frames: np.ndarray,
                                         policy_kwargs: dict) -> None:
    from stable_baselines3 import DQN

    path = tmp_path / "dqn.zip"
    DQN("CnnPolicy", atari_env, buffer_size=10, seed=1, policy_kwargs=policy_kwargs).save(path)
    model = DQN.load(path, device="cpu")
    policy = load_policy(str(path), game="pong")
    assert policy.format == "sb3-dqn" and policy.meta["sb3_version"]
    obs = torch.from_numpy(pong_frames)
    with torch.no_grad():
        theirs = model.q_net(obs)  # SB3's own preprocessing (normalize_images) and head
        ours = policy.network(obs)
        ours_float = policy.network(obs.float() / 255.0)
    assert _max_diff(ours, theirs) == 0.0
    torch.testing.assert_close(ours_float, theirs, rtol=1e-6, atol=1e-6)  # x/255*255 may round when not normalised
    actions, _ = model.predict(pong_frames, deterministic=True)
    np.testing.assert_array_equal(ours.argmax(dim=1).numpy(), actions)


def test_cleanrl_c51_gives_the_expectation_over_its_atoms(saved_policies: dict[str, Path],
                                                        pong_frames: np.ndarray) -> None:
    original = CleanRLC51Network(6)
    original.load_state_dict(torch.load(saved_policies["cleanrl-c51"], weights_only=True))
    policy = load_policy(str(saved_policies["cleanrl-c51"]), game="pong")
    assert (policy.format, policy.n_actions) == ("cleanrl-c51", 6)
    with torch.no_grad():
        actions, theirs = original.get_action(torch.Tensor(pong_frames))
        ours = policy.network(torch.from_numpy(pong_frames))
    assert _max_diff(ours, theirs) == 0.0 and torch.equal(ours.argmax(dim=1), actions)


def test_cleanrl_ppo_agent_gives_its_actors_logits(saved_policies: dict[str, Path], pong_frames: np.ndarray) -> None:
    original = CleanRLAgent(6)
    original.load_state_dict(torch.load(saved_policies["cleanrl-ppo"], weights_only=True))
    policy = load_policy(str(saved_policies["cleanrl-ppo"]), game="pong")
    assert (policy.format, policy.n_actions) == ("cleanrl-ppo", 6)
    with torch.no_grad():
        assert _max_diff(policy.network(torch.from_numpy(pong_frames)),
                         original.get_action_logits(torch.Tensor(pong_frames))) == 0.0


@pytest.mark.parametrize(("algorithm", "policy_kwargs"), [
    ("PPO", {}),  # rl-zoo's Atari PPO: shared NatureCNN, no hidden layers, action_net on the features
    ("A2C", {}),
    ("PPO", {"share_features_extractor": False, "net_arch": {"pi": [64, 32], "vf": [64]}}),  # Tanh hidden layers
    ("PPO", {"net_arch": {"pi": [64], "vf": [64]}, "activation_fn": nn.ReLU, "normalize_images": False}),
])
def test_sb3_actor_critic_zip_gives_sb3s_logits_and_actions(tmp_path: Path, atari_env, pong_frames: np.ndarray,
                                                            algorithm: str, policy_kwargs: dict) -> None:
    import stable_baselines3

    cls = getattr(stable_baselines3, algorithm)
    path = tmp_path / f"{algorithm}.zip"
    cls("CnnPolicy", atari_env, n_steps=8, seed=2, policy_kwargs=policy_kwargs,
        **({"batch_size": 16} if algorithm == "PPO" else {})).save(path)
    model = cls.load(path, device="cpu")
    policy = load_policy(str(path), game="pong")
    assert policy.format == "sb3-actor-critic" and policy.n_actions == 6
    obs = torch.from_numpy(pong_frames)
    with torch.no_grad():
        theirs = model.policy.get_distribution(obs.float()).distribution.logits  # SB3 normalises the logits
        ours = policy.network(obs)
    torch.testing.assert_close(ours.log_softmax(-1), theirs, rtol=0, atol=1e-5)
    actions, _ = model.predict(pong_frames, deterministic=True)
    np.testing.assert_array_equal(ours.argmax(dim=1).numpy(), actions)


def test_sb3_contrib_qrdqn_zip_gives_the_mean_over_quantiles(saved_policies: dict[str, Path],
                                                              pong_frames: np.ndarray) -> None:
    from sb3_contrib import QRDQN

    model = QRDQN.load(saved_policies["sb3-qrdqn"], device="cpu")
    policy = load_policy(str(saved_policies["sb3-qrdqn"]), game="ALE/Pong-v5")
    assert policy.format == "sb3-qrdqn" and policy.meta["n_quantiles"] == 25
    obs = torch.from_numpy(pong_frames)
    with torch.no_grad():
        quantiles = model.policy.quantile_net(obs)  # [B, n_quantiles, A]
        ours = policy.network(obs)
    assert quantiles.shape == (len(obs), 25, 6)
    assert _max_diff(ours, quantiles.mean(dim=1)) == 0.0
    actions, _ = model.predict(pong_frames, deterministic=True)
    np.testing.assert_array_equal(ours.argmax(dim=1).numpy(), actions)


def test_unsupported_sb3_heads_and_foreign_files_fail_with_one_line(tmp_path: Path, atari_env) -> None:
    from stable_baselines3 import DQN

    DQN("CnnPolicy", atari_env, buffer_size=10, policy_kwargs={"activation_fn": nn.Tanh}).save(tmp_path / "tanh.zip")
    with pytest.raises(DiagError, match="activation_fn .*Tanh.*only ReLU"):
        load_policy(str(tmp_path / "tanh.zip"), game="pong")
    torch.save({"encoder.weight": torch.zeros(3, 3)}, tmp_path / "other.pt")
    with pytest.raises(DiagError, match="unrecognised layout"):
        load_policy(str(tmp_path / "other.pt"), game="pong")
    state = CleanRLQNetwork(6).state_dict()
    state["network.11.weight"] = torch.zeros(6, 6)
    torch.save(state, tmp_path / "deeper.pt")
    with pytest.raises(DiagError, match="keys differ from dqn_atari"):
        load_policy(str(tmp_path / "deeper.pt"), game="pong")


@pytest.mark.parametrize("name", ["pong", "Pong", "ALE/Pong-v5", "PongNoFrameskip-v4", "PongDeterministic-v4"])
def test_game_names_as_libraries_write_them(name: str) -> None:
    assert resolve_game(name) == "pong"


def test_unknown_games_list_close_matches_and_action_sets_come_from_the_rom() -> None:
    assert resolve_game("RoadRunner") == resolve_game("road_runner") == "road_runner"
    with pytest.raises(DiagError, match=r"unknown game 'Breakot': close matches: breakout"):
        resolve_game("Breakot")
    assert action_set("pong").names == ("NOOP", "FIRE", "RIGHT", "LEFT", "RIGHTFIRE", "LEFTFIRE")
    assert len(action_set("pong", full=True).names) == 18 and len(action_set("breakout").names) == 4


def test_every_policy_is_checked_against_one_game_before_play(saved_policies: dict[str, Path],
                                                              tmp_path: Path) -> None:
    sources = [str(p) for p in saved_policies.values()]
    policies, actions = load_for_play(sources, "Pong")
    assert {p.format for p in policies.values()} == set(saved_policies) == set(FORMATS) and not actions.full
    torch.save(QNetwork(18).state_dict(), tmp_path / "eighteen.pt")
    with pytest.raises(DiagError, match="has 18 actions but pong's minimal action set has 6"):
        load_for_play([*sources, str(tmp_path / "eighteen.pt")], "pong")
    policies, actions = load_for_play([str(tmp_path / "eighteen.pt")], "pong", full_action_space=True)
    assert actions.full and len(actions.names) == 18
    with pytest.raises(DiagError, match="policies of different games"):
        load_for_play(["roadrunner-vanilla", _wrapped(tmp_path, "pong")], None)
    with pytest.raises(DiagError, match="trained on road_runner, not pong"):
        load_policy("roadrunner-vanilla", game="pong")
    with pytest.raises(DiagError, match="does not record its game"):
        load_policy(str(saved_policies["sb3-dqn"]))


def _wrapped(folder: Path, game: str) -> str:
    path = folder / f"{game}.pt"
    torch.save({"format": "diag-qnet-v1", "game": game, "n_actions": 6, "state_dict": QNetwork(6).state_dict(),
                "meta": {}}, path)
    return str(path)


def test_out_of_range_actions_are_refused_and_a_stuck_step_is_abandoned() -> None:
    """ale-py blocks forever on action 17 in Pong: the range check refuses it; the watchdog bounds the real hang."""
    script = (
        "import time, numpy as np\n"
        "from diag.boundary.policy.play import EnvironmentStuck, guarded, open_envs, step\n"
        "from diag.errors import DiagError\n"
        "start = time.perf_counter()\n"
        "try:\n"
        "    with open_envs('pong', 2) as envs:\n"
        "        envs.reset(seed=0)\n"
        "        try:\n"
        "            step(envs, np.array([17, 0]), 'pong')\n"
        "        except DiagError as exc:\n"
        "            print('refused:', exc)\n"
        "        start = time.perf_counter()\n"
        "        guarded(lambda: envs.step(np.array([17, 0])), 'pong: a vector step', timeout_s=1.0)\n"
        "except EnvironmentStuck as exc:  # open_envs leaves the stuck env unclosed (closing would block)\n"
        "    print(f'abandoned after {time.perf_counter() - start:.3f} s:', exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False)
    assert "refused: action 17 is outside pong's 6 actions" in out.stdout, out.stderr
    abandoned = re.search(r"abandoned after ([\d.]+) s: pong: a vector step did not return within 1 s", out.stdout)
    assert abandoned and 1.0 <= float(abandoned.group(1)) < 10.0, (out.stdout, out.stderr)


def diag(*args: str, timeout: float = 120) -> tuple[subprocess.CompletedProcess, float]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # a 2-core CI box runs torch faster on one thread
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "diag.cli", *args], capture_output=True, text=True, env=env,
                         timeout=timeout, check=False)
    return out, time.perf_counter() - start


def _no_runs(diag_home: Path) -> bool:
    runs = diag_home / "runs"
    return not runs.exists() or not [p for p in runs.iterdir() if p.is_dir()]


def test_cli_refuses_mismatched_policies_before_any_episode(saved_policies: dict[str, Path], tmp_path: Path,
                                                             diag_home: Path) -> None:
    """The done-when cases: an 18-action policy on Pong's 6 and two games in one analysis fail at once, exit 2,
    one line, no run left; a big budget makes a late failure impossible to miss (it would play for minutes)."""
    torch.save(QNetwork(18).state_dict(), tmp_path / "eighteen.pt")
    budget = ("--episodes", "10", "--max-steps", "2000", "--conditions", "blur")
    cases = [
        (("boundary", "analyse", "--policies", str(tmp_path / "eighteen.pt"), "--game", "pong", *budget),
         "has 18 actions but pong's minimal action set has 6"),
        (("boundary", "analyse", "--policies", f"roadrunner-vanilla,{_wrapped(tmp_path, 'pong')}", *budget),
         "policies of different games"),
        (("boundary", "analyse", "--policies", str(saved_policies["sb3-dqn"]), "--game", "Pongg"),
         "unknown game 'Pongg': close matches: pong"),
    ]
    if not torch.cuda.is_available():
        cases.append((("boundary", "record", "--device", "cuda"), "CUDA is not available"))
    for args, needle in cases:
        out, seconds = diag(*args, timeout=60)
        lines = [line for line in out.stderr.splitlines() if line.strip()]
        assert out.returncode == 2 and len(lines) == 1 and needle in lines[0], (args, out.stderr)
        assert _no_runs(diag_home), f"{args} left a run behind"
        print(f"{needle}: {seconds:.1f} s")


@pytest.mark.slow  # ~20 s on an idle 2-core machine, 50 s on a loaded one
def test_cli_analyses_a_pong_policy_of_every_format_end_to_end(saved_policies: dict[str, Path],
                                                              diag_home: Path) -> None:
    """Tiniest budget (2 episodes of 4 steps, one shift, 2 attribution states) for every format at once."""
    import json

    policies = ",".join(str(p) for p in saved_policies.values())
    out, _ = diag("boundary", "analyse", "--policies", policies, "--game", "PongNoFrameskip-v4", "--episodes", "2",
                  "--max-steps", "4", "--conditions", "blur", "--attribution-states", "2", "--device", "cpu",
                  "--json", timeout=600)
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["game"] == "pong" and summary["action_set"].startswith("minimal (6 actions")
    assert summary["device"] == "cpu" and summary["tf32"] is False
    for fmt, path in saved_policies.items():
        result = summary[str(path)]
        assert result["format"] == fmt
        assert all(0.0 <= v <= 1.0 + 1e-6 for v in result["lambda"].values())
        assert result["lambda"]["clean"] > 0 and result["oscillation"]["mean_norm"] > 0
    out, _ = diag("boundary", "record", "--policy", str(saved_policies["cleanrl-dqn"]), "--game", "pong",
                  "--episodes", "2", "--max-steps", "5", "--no-random-baseline", "--no-keep-frames", "--json")
    assert out.returncode == 0, out.stderr
    recorded = json.loads(out.stdout)
    assert (recorded["format"], recorded["game"], recorded["episodes"]) == ("cleanrl-dqn", "pong", 2)
    listed = json.loads(diag("runs", "list", "--json")[0].stdout)["runs"]
    assert sorted((r["analysis"], r["status"]) for r in listed) == [("boundary", "finished"),
                                                                     ("boundary-episodes", "finished")]


def test_app_forms_offer_game_device_and_tf32_and_validate_the_game(saved_policies: dict[str, Path]) -> None:
    """The Panel launch forms are generated from Config: the new fields appear, parse, and pin as the CLI's do."""
    pytest.importorskip("panel")
    from apps.forms import ConfigForm
    from diag.boundary import analysis, episodes

    form = ConfigForm(analysis.Config, analysis.audit_config())
    assert {"game", "full_action_space", "device", "allow_tf32"} <= set(form.widgets)
    form.widgets["policies"].value = str(saved_policies["sb3-dqn"])
    form.widgets["game"].value = "PongNoFrameskip-v4"
    form.widgets["device"].value = "cpu"
    form.widgets["allow_tf32"].value = True
    config = analysis.ANALYSIS.pin(form.config())
    assert (config.game, config.device, config.allow_tf32) == ("pong", "cpu", True)
    assert config.policies_sha256[0] is not None
    record = ConfigForm(episodes.Config, episodes.audit_config())
    assert record.config().game is None  # an empty optional field is no game: shipped policies record theirs
    record.widgets["game"].value = "Pongg"
    with pytest.raises(DiagError, match="unknown game 'Pongg': close matches: pong"):
        episodes.ANALYSIS.pin(record.config())
