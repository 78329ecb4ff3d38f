"""Load a Q-network: a named checkpoint we ship, a policy file exported from training, or a plain state dict.

Accepted files (``torch.load`` with ``weights_only=True``):

* our policy file: ``{"format": "diag-qnet-v1", "game": str, "n_actions": int, "state_dict": {...}, "meta": {...}}``
  (written by ``export_policy`` from a training state; what ``diag/zoo/assets/atari/*.pt`` holds);
* a plain ``state_dict`` of ``QNetwork``: keys ``trunk.{0,2,4}.{weight,bias}`` (Nature CNN convolutions
  32x8x8/4, 64x4x4/2, 64x3x3/1), ``trunk.7`` (3136 -> 512), ``value`` (512 -> 1), ``advantage`` (512 -> A).
  A plain state dict carries no game, so ``game`` must then be given.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from diag.boundary.policy.network import QNetwork
from diag.errors import DiagError

ASSETS = Path(__file__).resolve().parents[2] / "zoo" / "assets" / "atari"
FORMAT = "diag-qnet-v1"


@dataclass
class Policy:
    network: QNetwork
    game: str
    meta: dict[str, Any]


def known_policies() -> list[str]:
    return sorted(p.stem for p in ASSETS.glob("*.pt"))


def policy_path(source: str) -> Path:
    """The file a shipped name or a user's path refers to (it may not exist)."""
    return ASSETS / f"{source}.pt" if (ASSETS / f"{source}.pt").exists() else Path(source)


def policy_fingerprint(source: str) -> str | None:
    """Content hash of the policy's file (None when it does not exist: loading then fails with its own message)."""
    from diag.analysis import fingerprint

    path = policy_path(source)
    return fingerprint(path) if path.is_file() else None


def load_policy(source: str, game: str | None = None) -> Policy:
    """``source``: a shipped name (see ``known_policies``) or a path to a checkpoint or state dict."""
    path = policy_path(source)
    if not path.exists():
        raise DiagError(f"unknown policy {source!r}: not a file and not one of {', '.join(known_policies())}")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a corrupt or foreign file
        raise DiagError(f"policy file {path} is not a readable torch checkpoint ({type(exc).__name__})") from exc
    if not isinstance(blob, dict):
        raise DiagError(f"policy file {path} holds a {type(blob).__name__}, expected a dict")
    meta: dict[str, Any] = {}
    if blob.get("format") == FORMAT:
        state, game, meta = blob["state_dict"], blob["game"], blob.get("meta", {})
    else:
        state = blob
    if game is None:
        raise DiagError(f"policy file {path} is a plain state dict: pass the game it was trained on")
    advantage = state.get("advantage.weight")
    if not isinstance(advantage, torch.Tensor) or advantage.ndim != 2:
        raise DiagError(f"policy file {path} has no advantage.weight matrix: not a Nature-CNN dueling Q-network")
    network = QNetwork(advantage.shape[0])
    try:
        network.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        raise DiagError(f"policy file {path} does not fit the Nature-CNN dueling Q-network: {first[-1].strip()}") \
            from exc
    for name, tensor in network.state_dict().items():
        if not torch.isfinite(tensor).all():
            raise DiagError(f"policy file {path} has non-finite values in {name}")
    return Policy(network.eval(), game, meta)


def export_policy(train_state: Path, target: Path, meta: dict[str, Any]) -> None:
    """Write the online network of a training state as a shipped policy file (fp32 weights only)."""
    saved = torch.load(train_state, map_location="cpu", weights_only=False)
    blob = {"format": FORMAT, "game": saved["args"]["game"], "n_actions": int(saved["n_actions"]),
            "state_dict": saved["q_network"],
            "meta": {"global_step": int(saved["global_step"]), "updates": int(saved["updates"]), **meta}}
    target.parent.mkdir(parents=True, exist_ok=True)
    torch.save(blob, target)
