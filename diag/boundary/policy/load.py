"""Load an Atari Q-network in the formats people have; the format is detected from the file, never asked for.

Accepted files:

* ``diag-qnet-v1`` (ours): ``torch.save`` of ``{"format": "diag-qnet-v1", "game": str, "n_actions": int,
  "state_dict": {...}, "meta": {...}}`` (written by ``export_policy``; what ``diag/zoo/assets/atari/*.pt`` holds),
  or the bare ``state_dict`` of ``QNetwork`` (keys ``trunk.*``, ``value.*``, ``advantage.*``);
* ``cleanrl-dqn``: CleanRL ``dqn_atari``'s ``torch.save(q_network.state_dict())``, keys ``network.{0,2,4,7,9}``
  (non-dueling Nature CNN, frames scaled by 1/255 inside ``forward``);
* ``cleanrl-c51``: CleanRL ``c51_atari``'s state dict, the same ``network.*`` keys plus its ``atoms`` support
  (Q-values are the expectation over atoms, as ``get_action`` computes them);
* ``cleanrl-ppo``: CleanRL ``ppo_atari``'s ``torch.save(agent.state_dict())``: ``network.{0,2,4,7}``, ``actor``
  and ``critic`` (the critic is not used);
* ``cleanrl-dqn-jax`` / ``cleanrl-c51-jax`` / ``cleanrl-ppo-jax``: the JAX scripts' ``.cleanrl_model`` files
  (``dqn_atari_jax``, ``c51_atari_jax``, ``ppo_atari_envpool_xla_jax_scan``), flax msgpack read without JAX and
  rewritten into the layouts above (see ``flax_import``); c51 and ppo record their ``env_id``;
* ``sb3-dqn`` / ``sb3-qrdqn`` / ``sb3-actor-critic``: a Stable-Baselines3 (rl-zoo) DQN, sb3-contrib QR-DQN, or
  PPO / A2C (any ``ActorCriticCnnPolicy``) ``.zip``. Its ``policy.pth`` state dict (``q_net.*``,
  ``quantile_net.*``, or ``pi_features_extractor.*`` + ``mlp_extractor.policy_net.*`` + ``action_net``) and its
  ``data`` JSON (action and observation spaces, ``policy_kwargs``) are read without importing SB3 and without
  unpickling anything: only the JSON's readable fields are used.

An actor-critic policy's outputs are its actor's logits, not Q-values: the greedy action (argmax), the softmax
the boundary analysis differentiates (then the policy's own action probabilities) and the attacks apply as they
are. ``diag-qnet-v1`` wrappers and the c51/ppo JAX files record their game; for the others it must be given
(``game``).
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from diag.boundary.policy.flax_import import cleanrl_jax_state, is_flax_msgpack, read_flax
from diag.boundary.policy.network import OBS_SHAPE, ImportedNetwork, QNetwork
from diag.errors import DiagError

if TYPE_CHECKING:
    from diag.boundary.games import ActionSet

ASSETS = Path(__file__).resolve().parents[2] / "zoo" / "assets" / "atari"
FORMAT = "diag-qnet-v1"
FORMATS = (FORMAT, "cleanrl-dqn", "cleanrl-c51", "cleanrl-ppo", "cleanrl-dqn-jax", "cleanrl-c51-jax",
           "cleanrl-ppo-jax", "sb3-dqn", "sb3-qrdqn", "sb3-actor-critic")
# formats whose outputs are action logits
ACTOR_CRITIC = frozenset({"cleanrl-ppo", "cleanrl-ppo-jax", "sb3-actor-critic"})


def output_name(fmt: str) -> str:
    """What a policy of this format outputs per action, for labels: Q-values, or an actor's logits."""
    return "actor logit" if fmt in ACTOR_CRITIC else "Q"


@dataclass
class Policy:
    network: nn.Module  # maps [B, 4, 84, 84] frames (uint8, or floats in [0, 1]) to Q-values [B, n_actions]
    game: str  # ale-py ROM id
    meta: dict[str, Any]
    format: str  # one of FORMATS

    @property
    def n_actions(self) -> int:
        return int(self.network.n_actions)


def known_policies() -> list[str]:
    return sorted(p.stem for p in ASSETS.glob("*.pt"))


def policy_path(source: str) -> Path:
    """The file a shipped name or a user's path refers to (it may not exist)."""
    return ASSETS / f"{source}.pt" if (ASSETS / f"{source}.pt").exists() else Path(source)


def policy_fingerprint(source: str) -> str | None:
    """Content hash of the policy's file (None when it does not exist: loading then fails with its own message)."""
    from diag.files import fingerprint

    path = policy_path(source)
    return fingerprint(path) if path.is_file() else None


def load_policy(source: str, game: str | None = None) -> Policy:
    """``source``: a shipped name (see ``known_policies``) or a policy file in one of ``FORMATS``.

    ``game`` (any spelling ``resolve_game`` accepts) is required for files that do not record their game and must
    agree with the game a ``diag-qnet-v1`` file records.
    """
    from diag.boundary.games import resolve_game

    path = policy_path(source)
    if not path.is_file():
        raise DiagError(f"unknown policy {source!r}: not a file and not one of {', '.join(known_policies())}")
    recorded, meta = None, {}
    if _is_sb3_zip(path):
        network, fmt, meta = _load_sb3(path)
    elif is_flax_msgpack(path):
        state, fmt, recorded = cleanrl_jax_state(path, read_flax(path))
        network = _load_cleanrl_ppo(path, state) if fmt in ACTOR_CRITIC else _load_cleanrl(path, state)
    else:
        blob = _torch_load(path, path)
        if blob.get("format") == FORMAT:
            network, fmt = _load_ours(path, blob["state_dict"]), FORMAT
            recorded, meta = blob["game"], blob.get("meta", {})
        elif "advantage.weight" in blob:
            network, fmt = _load_ours(path, blob), FORMAT
        elif "actor.weight" in blob:
            network, fmt = _load_cleanrl_ppo(path, blob), "cleanrl-ppo"
        elif any(isinstance(k, str) and k.startswith("network.") for k in blob):
            network, fmt = _load_cleanrl(path, blob), "cleanrl-c51" if "atoms" in blob else "cleanrl-dqn"
        else:
            keys = ", ".join(map(str, list(blob)[:4]))
            raise DiagError(f"policy file {path}: unrecognised layout (keys {keys}, ...): expected a {FORMAT} file, "
                            "a CleanRL dqn_atari / c51_atari / ppo_atari state dict (or their JAX .cleanrl_model) or "
                            "a Stable-Baselines3 DQN, QR-DQN, PPO or A2C .zip")
    if game is None and recorded is None:
        raise DiagError(f"policy file {path} ({fmt}) does not record its game: pass the game it was trained on "
                        "(--game / game, e.g. pong or PongNoFrameskip-v4)")
    resolved = resolve_game(game if game is not None else recorded)
    if recorded is not None and resolve_game(recorded) != resolved:
        raise DiagError(f"policy file {path} was trained on {recorded}, not {resolved}")
    for name, tensor in network.state_dict().items():
        if not torch.isfinite(tensor).all():
            raise DiagError(f"policy file {path} has non-finite values in {name}")
    return Policy(network.eval(), resolved, meta, fmt)


def load_for_play(sources: tuple[str, ...] | list[str], game: str | None,
                  full_action_space: bool = False) -> tuple[dict[str, Policy], ActionSet]:
    """Load every policy and check all against one game's action set, before any episode is played.

    Policies of different games in one analysis are refused: the summary, the paper's reference values and the
    pixel overlap all assume one game.
    """
    from diag.boundary.games import action_set, check_actions

    policies = {source: load_policy(source, game) for source in sources}
    games = {p.game for p in policies.values()}
    if len(games) > 1:
        listing = ", ".join(f"{s} plays {p.game}" for s, p in policies.items())
        raise DiagError(f"policies of different games in one analysis ({listing}): analyse each game separately")
    actions = action_set(games.pop(), full_action_space)
    for source, policy in policies.items():
        check_actions(source, policy.n_actions, actions)
    return policies, actions


def _is_sb3_zip(path: Path) -> bool:
    """SB3 saves a zip with ``data`` and ``policy.pth`` at its root (``torch.save`` files are zips too)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return "policy.pth" in archive.namelist()


def _torch_load(path: Path, data: Path | io.BytesIO) -> dict[str, Any]:
    """``torch.load`` of tensors only (``weights_only``); anything else is one line naming ``path``."""
    try:
        blob = torch.load(data, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a corrupt or foreign file
        raise DiagError(f"policy file {path} is not a readable torch checkpoint ({type(exc).__name__})") from exc
    if not isinstance(blob, dict):
        raise DiagError(f"policy file {path} holds a {type(blob).__name__}, expected a dict")
    return blob


def _fill(path: Path, network: nn.Module, state: dict[str, Any], layout: str) -> nn.Module:
    try:
        network.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        raise DiagError(f"policy file {path} does not fit the {layout}: {first[-1].strip()}") from exc
    return network


def _load_ours(path: Path, state: dict[str, Any]) -> QNetwork:
    advantage = state.get("advantage.weight")
    if not isinstance(advantage, torch.Tensor) or advantage.ndim != 2:
        raise DiagError(f"policy file {path} has no advantage.weight matrix: not a Nature-CNN dueling Q-network")
    return _fill(path, QNetwork(advantage.shape[0]), state, "Nature-CNN dueling Q-network")


def _linear_indices(path: Path, state: dict[str, Any], prefix: str, required: bool = True) -> list[int]:
    """Indices ``i`` of ``prefix.{i}.weight`` matrices in order (a Sequential of Linear and activation layers);
    none is an error unless not ``required`` (an actor-critic's policy branch may have no hidden layer)."""
    found = sorted(int(k[len(prefix) + 1:].split(".")[0]) for k in state
                   if k.startswith(prefix + ".") and k.endswith(".weight"))
    if (required and not found) or any(state[f"{prefix}.{i}.weight"].ndim != 2 for i in found):
        raise DiagError(f"policy file {path} has no linear layers under {prefix}.*")
    return found


def _load_cleanrl(path: Path, state: dict[str, Any]) -> ImportedNetwork:
    """dqn_atari's Q-network, or c51_atari's (the same layers and an ``atoms`` support)."""
    atoms = state.get("atoms")
    expected = {f"network.{i}.{p}" for i in (0, 2, 4, 7, 9) for p in ("weight", "bias")}
    expected |= {"atoms"} & set(state)
    if set(state) != expected:
        extra = sorted(set(state) ^ expected)[:3]
        raise DiagError(f"policy file {path} looks like a CleanRL state dict but its keys differ from dqn_atari's "
                        f"network.{{0,2,4,7,9}} (e.g. {', '.join(extra)})")
    out = state["network.9.weight"]
    n_atoms = atoms.numel() if isinstance(atoms, torch.Tensor) and atoms.ndim == 1 else 0
    if "atoms" in state and (not n_atoms or out.shape[0] % n_atoms):
        raise DiagError(f"policy file {path}: c51_atari's atoms must be a vector dividing the {out.shape[0]} "
                        "outputs of its head")
    network = ImportedNetwork(out.shape[0] // max(n_atoms, 1), features_dim=out.shape[1], n_atoms=n_atoms)
    renamed = {k.replace("network.9.", "head.0.").replace("network.", "features."): v for k, v in state.items()}
    return _fill(path, network, renamed, f"CleanRL {'c51' if n_atoms else 'dqn'}_atari Q-network")


def _load_cleanrl_ppo(path: Path, state: dict[str, Any]) -> ImportedNetwork:
    expected = {f"{m}.{p}" for m in ("network.0", "network.2", "network.4", "network.7", "actor", "critic")
                for p in ("weight", "bias")}
    if set(state) != expected:
        extra = sorted(set(state) ^ expected)[:3]
        raise DiagError(f"policy file {path} looks like a CleanRL agent but its keys differ from ppo_atari's "
                        f"network.{{0,2,4,7}}, actor and critic (e.g. {', '.join(extra)})")
    out = state["actor.weight"]
    network = ImportedNetwork(out.shape[0], features_dim=out.shape[1])
    renamed = {k.replace("actor.", "head.0.").replace("network.", "features."): v for k, v in state.items()
               if not k.startswith("critic.")}
    return _fill(path, network, renamed, "CleanRL ppo_atari actor")


def _readable(entry: Any) -> dict[str, Any]:
    """An SB3 ``data`` entry: a plain JSON value, or a cloudpickled object whose readable fields sit beside it."""
    return entry if isinstance(entry, dict) else {}


def _load_sb3(path: Path) -> tuple[ImportedNetwork, str, dict[str, Any]]:
    with zipfile.ZipFile(path) as archive:
        names = set(archive.namelist())
        if "data" not in names:
            raise DiagError(f"policy file {path} is a zip with policy.pth but no data: not a Stable-Baselines3 save")
        try:
            data = json.loads(archive.read("data"))
        except json.JSONDecodeError as exc:
            raise DiagError(f"policy file {path}: its data entry is not JSON ({exc.msg})") from exc
        state = _torch_load(path, io.BytesIO(archive.read("policy.pth")))
        version = archive.read("_stable_baselines3_version").decode().strip() \
            if "_stable_baselines3_version" in names else None
    kwargs = _readable(data.get("policy_kwargs"))
    if any(k.startswith("quantile_net.") for k in state):
        fmt, features, head = "sb3-qrdqn", "quantile_net.features_extractor", "quantile_net.quantile_net"
    elif any(k.startswith("q_net.") for k in state):
        fmt, features, head = "sb3-dqn", "q_net.features_extractor", "q_net.q_net"
    elif "action_net.weight" in state:
        fmt, head = "sb3-actor-critic", "mlp_extractor.policy_net"
        features = "pi_features_extractor" if any(k.startswith("pi_features_extractor.") for k in state) \
            else "features_extractor"
    else:
        raise DiagError(f"policy file {path} is a Stable-Baselines3 save without q_net.*, quantile_net.* or "
                        "action_net.* weights: not a DQN, QR-DQN or actor-critic (PPO, A2C) policy")
    # SB3's default activations: ReLU in DQN's head, Tanh in an actor-critic's mlp_extractor
    activation = str(kwargs.get("activation_fn", "Tanh" if fmt == "sb3-actor-critic" else "ReLU"))
    supported = {"ReLU": nn.ReLU, "Tanh": nn.Tanh} if fmt == "sb3-actor-critic" else {"ReLU": nn.ReLU}
    layer = next((cls for name, cls in supported.items() if name in activation), None)
    if layer is None:
        raise DiagError(f"policy file {path} uses activation_fn {activation}; only {' or '.join(supported)} "
                        "is supported")
    if "features_extractor_class" in kwargs and "NatureCNN" not in str(kwargs["features_extractor_class"]):
        raise DiagError(f"policy file {path} uses features_extractor_class {kwargs['features_extractor_class']}; "
                        "only NatureCNN is supported")
    shape = _readable(data.get("observation_space")).get("_shape")
    if shape is not None and tuple(shape) != OBS_SHAPE:
        raise DiagError(f"policy file {path} was trained on observations of shape {tuple(shape)}; the ALE "
                        f"environment here gives {OBS_SHAPE} (grey 84x84, 4 stacked frames, channels first)")
    if fmt == "sb3-actor-critic":  # the policy branch's hidden layers (maybe none), then action_net
        indices = _linear_indices(path, state, head, required=False)
        out = state["action_net.weight"].shape[0]
        head_keys = {**{f"{head}.{i}.": f"head.{2 * n}." for n, i in enumerate(indices)},
                     "action_net.": f"head.{2 * len(indices)}."}
    else:
        *indices, last = _linear_indices(path, state, head)
        out = state[f"{head}.{last}.weight"].shape[0]
        head_keys = {f"{head}.": "head."}
    hidden = tuple(state[f"{head}.{i}.weight"].shape[0] for i in indices)
    n_actions = int(_readable(data.get("action_space")).get("n", 0))
    if n_actions <= 0:  # a save without the readable space: the head's size and sb3-contrib's default tell
        n_actions = out // (int(kwargs.get("n_quantiles", 200)) if fmt == "sb3-qrdqn" else 1)
    if n_actions <= 0 or out % n_actions:
        raise DiagError(f"policy file {path}: its action space ({n_actions} actions) does not divide the "
                        f"{out} outputs of its head")
    n_quantiles = out // n_actions
    if fmt != "sb3-qrdqn" and n_quantiles != 1:
        raise DiagError(f"policy file {path}: a head with {out} outputs for {n_actions} actions")
    if f"{features}.linear.0.weight" not in state:
        raise DiagError(f"policy file {path} has no {features}.linear layer: not a NatureCNN CnnPolicy")
    network = ImportedNetwork(n_actions, hidden, state[f"{features}.linear.0.weight"].shape[0], n_quantiles,
                              bool(kwargs.get("normalize_images", True)), layer)
    renamed = {}
    for key, value in state.items():
        if key.startswith(f"{features}.cnn."):
            renamed["features." + key[len(features) + 5:]] = value
        elif key.startswith(f"{features}.linear.0."):
            renamed["features.7." + key[len(features) + 10:]] = value
        else:
            renamed.update({new + key[len(old):]: value for old, new in head_keys.items() if key.startswith(old)})
    meta = {"sb3_version": version, "num_timesteps": data.get("num_timesteps"),
            **({"n_quantiles": n_quantiles} if fmt == "sb3-qrdqn" else {})}
    return _fill(path, network, renamed, f"Stable-Baselines3 {fmt[4:]} Nature-CNN policy"), fmt, meta


def export_policy(train_state: Path, target: Path, meta: dict[str, Any]) -> None:
    """Write the online network of a training state as a shipped policy file (fp32 weights only)."""
    saved = torch.load(train_state, map_location="cpu", weights_only=False)
    blob = {"format": FORMAT, "game": saved["args"]["game"], "n_actions": int(saved["n_actions"]),
            "state_dict": saved["q_network"],
            "meta": {"global_step": int(saved["global_step"]), "updates": int(saved["updates"]), **meta}}
    target.parent.mkdir(parents=True, exist_ok=True)
    torch.save(blob, target)
