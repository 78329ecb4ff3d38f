"""CleanRL's JAX Atari files in flax's exact msgpack layout, and what flax computes with them (channels-last).

``flax.serialization.to_bytes`` stores arrays as msgpack extension type 1 holding ``(shape, dtype name, bytes)``
and lists (and an over-large array's chunks and shape) as maps keyed "0", "1", ..., packed with strict types; the
parameter trees are the scripts' (``nn.Conv`` kernels HWIO, ``nn.Dense`` kernels (in, out), modules ``Conv_0`` ..
``Dense_1``). JAX is not a test dependency; this layout was checked once against flax 0.12.8 itself.
"""

from __future__ import annotations

import msgpack
import numpy as np
import torch
import torch.nn.functional as F

CONVS = (("Conv_0", 8, 4, 4, 32), ("Conv_1", 4, 2, 32, 64), ("Conv_2", 3, 1, 64, 64))  # name, size, stride, in, out


def flax_bytes(tree: object, chunk: str | None = None) -> bytes:
    """``flax.serialization.to_bytes``: lists become maps keyed by index, arrays msgpack extension type 1;
    ``chunk`` names an array stored the way flax stores arrays too large for one msgpack entry."""

    def state(node: object, name: str = "") -> object:
        if isinstance(node, list):
            return {str(i): state(v) for i, v in enumerate(node)}
        if isinstance(node, dict):
            return {k: state(v, k) for k, v in node.items()}
        if name == chunk and isinstance(node, np.ndarray):
            parts = np.array_split(node.ravel(), 3)
            return {"__msgpack_chunked_array__": True, "shape": {str(i): n for i, n in enumerate(node.shape)},
                    "chunks": {str(i): p for i, p in enumerate(parts)}}
        return node

    def ext(x: object) -> object:
        if isinstance(x, np.ndarray):
            return msgpack.ExtType(1, msgpack.packb((x.shape, x.dtype.name, x.tobytes("C")), use_bin_type=True))
        return x

    return msgpack.packb(state(tree), default=ext, strict_types=True)


def trunk_params(rng: np.random.Generator, with_head: int | None) -> dict[str, dict[str, np.ndarray]]:
    """A flax Nature CNN's ``params``: the three convs, Dense_0 (3136 -> 512) and optionally Dense_1."""
    params = {name: {"kernel": rng.normal(0, (size * size * cin) ** -0.5, (size, size, cin, cout)).astype("f4"),
                     "bias": rng.normal(0, 0.01, cout).astype("f4")} for name, size, _, cin, cout in CONVS}
    params["Dense_0"] = {"kernel": rng.normal(0, 3136 ** -0.5, (3136, 512)).astype("f4"),
                         "bias": rng.normal(0, 0.01, 512).astype("f4")}
    if with_head:
        params["Dense_1"] = {"kernel": rng.normal(0, 512 ** -0.5, (512, with_head)).astype("f4"),
                             "bias": rng.normal(0, 0.01, with_head).astype("f4")}
    return params


def flax_forward(params: dict, frames: np.ndarray, head: str | None) -> torch.Tensor:
    """What the scripts' ``__call__`` computes: NHWC convs, (row, column, channel) flattening, dense layers."""
    x = torch.from_numpy(frames).float() / 255.0  # NCHW; each conv below is flax's NHWC conv on the same pixels
    for name, _, stride, _, _ in CONVS:
        kernel = torch.from_numpy(params[name]["kernel"]).permute(3, 2, 0, 1)  # HWIO -> OIHW, same correlation
        x = F.relu(F.conv2d(x, kernel, torch.from_numpy(params[name]["bias"]), stride=stride))
    x = x.permute(0, 2, 3, 1).reshape(len(frames), -1)  # flax flattens channels-last
    x = F.relu(x @ torch.from_numpy(params["Dense_0"]["kernel"]) + torch.from_numpy(params["Dense_0"]["bias"]))
    if head is None:
        return x
    return x @ torch.from_numpy(params[head]["kernel"]) + torch.from_numpy(params[head]["bias"])


def write_jax_policies(folder, n_actions: int, env_id: str) -> dict[str, object]:
    """One untrained file per CleanRL JAX script, saved as the script saves it: {format: path}."""
    from pathlib import Path

    folder, rng, n_atoms = Path(folder), np.random.default_rng(0), 11
    paths = {"cleanrl-dqn-jax": folder / "dqn_atari_jax.cleanrl_model",
             "cleanrl-c51-jax": folder / "c51_atari_jax.cleanrl_model",
             "cleanrl-ppo-jax": folder / "ppo_atari_envpool_xla_jax_scan.cleanrl_model"}
    paths["cleanrl-dqn-jax"].write_bytes(flax_bytes({"params": trunk_params(rng, n_actions)}))
    args = {"env_id": env_id, "n_atoms": n_atoms, "v_min": -10, "v_max": 10}
    c51 = {"model_weights": {"params": trunk_params(rng, n_actions * n_atoms)}, "args": args}
    paths["cleanrl-c51-jax"].write_bytes(flax_bytes(c51))
    head = {name: {"Dense_0": {"kernel": rng.normal(0, 0.05, (512, n)).astype("f4"), "bias": np.zeros(n, "f4")}}
            for name, n in (("actor", n_actions), ("critic", 1))}
    ppo = [{"env_id": env_id}, [{"params": trunk_params(rng, None)}, {"params": head["actor"]},
                                {"params": head["critic"]}]]
    paths["cleanrl-ppo-jax"].write_bytes(flax_bytes(ppo))
    return paths
