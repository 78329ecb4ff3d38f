"""CleanRL's JAX Atari agents (``*.cleanrl_model``, written by ``flax.serialization.to_bytes``), read without JAX.

The file is msgpack: nested maps of parameters whose arrays are msgpack extension type 1 holding
``(shape, dtype name, raw bytes)`` (type 3: a numpy scalar), large arrays split into ``__msgpack_chunked_array__``
maps, and lists and tuples stored as maps keyed "0", "1", ... Nothing in it is executed. Three layouts are recognised:

* ``dqn_atari_jax``: ``to_bytes(q_state.params)`` = ``{"params": {Conv_0, Conv_1, Conv_2, Dense_0, Dense_1}}``;
* ``c51_atari_jax``: ``{"model_weights": <the same>, "args": {n_atoms, v_min, v_max, env_id, ...}}``, whose
  support is ``linspace(v_min, v_max, n_atoms)`` as float32 (what the script builds its atoms from);
* ``ppo_atari_envpool_xla_jax_scan``: ``[vars(args), [network, actor, critic]]``, the network's
  ``{Conv_0, Conv_1, Conv_2, Dense_0}`` and the actor's ``Dense_0``.

Flax works channels-last: its conv kernels are ``(h, w, in, out)`` and the first dense layer reads the last conv's
output flattened as (row, column, channel). Each is rewritten into the PyTorch CleanRL layout (``network.{0,2,4,7,
9}``, ``actor``, ``critic``), so the loader's CleanRL networks, which flatten (channel, row, column), compute the
same outputs.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from diag.errors import DiagError

CHUNKED = "__msgpack_chunked_array__"
_NDARRAY, _NPSCALAR = 1, 3  # flax.serialization's msgpack extension codes


def is_flax_msgpack(path: Path) -> bool:
    """A msgpack map at the start: 0x81..0x8f (small map) or 0xde/0xdf; torch files start with PK or 0x80 0x0N."""
    with path.open("rb") as handle:
        first = handle.read(1)
    return bool(first) and (0x81 <= first[0] <= 0x8F or first[0] in (0xDE, 0xDF))


def read_flax(path: Path) -> dict[str, Any]:
    """The file's nested dict with numpy arrays as leaves; one line naming the file when it is not one."""
    import msgpack

    def ext(code: int, data: bytes) -> Any:
        if code not in (_NDARRAY, _NPSCALAR):
            raise DiagError(f"policy file {path}: msgpack extension type {code} is not a flax array")
        shape, dtype, raw = msgpack.unpackb(data, raw=False)
        array = np.frombuffer(raw, dtype=np.dtype(dtype)).reshape(shape)
        return array if code == _NDARRAY else array[()]

    try:
        tree = msgpack.unpackb(path.read_bytes(), ext_hook=ext, raw=False, strict_map_key=False)
    except DiagError:
        raise
    except Exception as exc:  # msgpack raises several types for truncated or foreign data
        raise DiagError(f"policy file {path} is not a readable flax msgpack file ({type(exc).__name__})") from exc
    if not isinstance(tree, dict):
        raise DiagError(f"policy file {path} holds a msgpack {type(tree).__name__}, expected a map")
    return _unchunk(tree)


def _unchunk(tree: Any) -> Any:
    """Arrays flax split into chunks, joined again (flax stores both the shape and the chunks as index maps)."""
    if isinstance(tree, dict):
        if tree.get(CHUNKED):
            shape, chunks = _as_tuple(tree["shape"]), _as_tuple(tree["chunks"])
            return np.concatenate([np.ravel(chunk) for chunk in chunks]).reshape(shape)
        return {key: _unchunk(value) for key, value in tree.items()}
    return tree


def _as_tuple(value: Any) -> tuple:
    return tuple(value[str(i)] for i in range(len(value))) if isinstance(value, dict) else tuple(value)


def cleanrl_jax_state(path: Path, tree: dict[str, Any]) -> tuple[dict[str, torch.Tensor], str, str | None]:
    """(state dict in CleanRL's PyTorch layout, format, the env id its args record or None)."""
    if set(tree) == {"params"}:
        return _q_network(path, tree["params"], None), "cleanrl-dqn-jax", None
    if {"model_weights", "args"} <= set(tree):
        args = tree["args"]
        state = _q_network(path, _params(path, tree["model_weights"], "model_weights"), args)
        return state, "cleanrl-c51-jax", args.get("env_id")
    if set(tree) == {"0", "1"} and isinstance(tree["1"], dict) and set(tree["1"]) == {"0", "1", "2"}:
        args, parts = tree["0"], tree["1"]
        state = {**_trunk(path, _params(path, parts["0"], "network")),
                 **_dense(path, _params(path, parts["1"], "actor"), "Dense_0", "actor"),
                 **_dense(path, _params(path, parts["2"], "critic"), "Dense_0", "critic")}
        return state, "cleanrl-ppo-jax", args.get("env_id") if isinstance(args, dict) else None
    raise DiagError(f"policy file {path} is a flax msgpack file of an unknown layout (top-level keys "
                    f"{', '.join(sorted(map(str, tree))[:4])}): expected CleanRL's dqn_atari_jax, c51_atari_jax or "
                    "ppo_atari_envpool_xla_jax_scan")


def _params(path: Path, variables: Any, what: str) -> dict[str, Any]:
    if not isinstance(variables, dict) or not isinstance(variables.get("params"), dict):
        raise DiagError(f"policy file {path}: {what} has no flax 'params' collection")
    return variables["params"]


def _q_network(path: Path, params: dict[str, Any], args: dict[str, Any] | None) -> dict[str, torch.Tensor]:
    state = {**_trunk(path, params), **_dense(path, params, "Dense_1", "network.9")}
    if args is not None:  # c51: the support the script builds from its args
        try:
            n_atoms, v_min, v_max = int(args["n_atoms"]), float(args["v_min"]), float(args["v_max"])
        except (KeyError, TypeError, ValueError) as exc:
            raise DiagError(f"policy file {path}: c51_atari_jax args lack n_atoms, v_min or v_max") from exc
        state["atoms"] = torch.from_numpy(np.linspace(v_min, v_max, num=n_atoms).astype(np.float32))
    return state


def _array(path: Path, params: dict[str, Any], layer: str, name: str, ndim: int) -> np.ndarray:
    value = params.get(layer, {}).get(name) if isinstance(params.get(layer), dict) else None
    if not isinstance(value, np.ndarray) or value.ndim != ndim:
        raise DiagError(f"policy file {path}: no {ndim}-d {layer}.{name} (layers found: "
                        f"{', '.join(sorted(params)) or 'none'})")
    return value.astype(np.float32)


def _trunk(path: Path, params: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The Nature CNN, as every CleanRL JAX script names it: three convs ``Conv_0..2`` (HWIO -> OIHW) and
    ``Dense_0`` reading their (h, w, c) flattening."""
    state: dict[str, torch.Tensor] = {}
    dense = "Dense_0"
    for index, name in zip((0, 2, 4), ("Conv_0", "Conv_1", "Conv_2"), strict=True):
        kernel = _array(path, params, name, "kernel", 4)
        state[f"network.{index}.weight"] = torch.from_numpy(kernel.transpose(3, 2, 0, 1).copy())
        state[f"network.{index}.bias"] = torch.from_numpy(_array(path, params, name, "bias", 1))
    kernel = _array(path, params, dense, "kernel", 2)
    channels = state["network.4.weight"].shape[0]
    side = math.isqrt(kernel.shape[0] // channels)
    if side * side * channels != kernel.shape[0]:
        raise DiagError(f"policy file {path}: {dense} reads {kernel.shape[0]} features, not a square map of "
                        f"{channels} channels")
    chw = kernel.reshape(side, side, channels, -1).transpose(2, 0, 1, 3).reshape(kernel.shape[0], -1)
    state["network.7.weight"] = torch.from_numpy(chw.T.copy())
    state["network.7.bias"] = torch.from_numpy(_array(path, params, dense, "bias", 1))
    return state


def _dense(path: Path, params: dict[str, Any], layer: str, prefix: str) -> dict[str, torch.Tensor]:
    return {f"{prefix}.weight": torch.from_numpy(_array(path, params, layer, "kernel", 2).T.copy()),
            f"{prefix}.bias": torch.from_numpy(_array(path, params, layer, "bias", 1))}
