"""Steering directions out of cdas runs, in files other tools load: llama.cpp control vectors, safetensors, npz.

Sources: a ``cdas-train`` run (its rank-k basis at one layer), a ``cdas-steer`` run (one unit vector per concept
and method at one layer, with the projections m+ / m- and the chosen alphas that set the clamp), or a
``cdas-steer-sweep`` run (the same concept and method at every layer of the sweep: one file, one direction per
layer).

Layer numbering: ``direction.L`` (and layer L everywhere here) is the residual stream leaving decoder block L,
0-based (``model.model.layers[L]`` in transformers, Hugging Face ``hidden_states[L + 1]``). llama.cpp adds
``direction.L`` to the output of its layer L, the same block, and rejects ``direction.0``; repeng's
``export_gguf`` writes ``direction.{layer}`` with its own hidden-state indices, which its ``ControlModel`` applies
to ``model.layers[layer]``: read repeng vectors with that in mind.

The GGUF is written as repeng's ``export_gguf`` writes it (architecture ``controlvector``,
``controlvector.model_hint``, ``controlvector.layer_count``, one float32 ``direction.{layer}`` tensor per layer)
and holds the stored unit vector unscaled: llama.cpp's ``--control-vector-scaled FILE S`` adds ``S * v`` at every
position. Our steering is a clamp (``h + (t - v.h) v``), not an addition; ``diag.additive_scale`` = m+ - m- is
the addition that moves the mean projection of the prompts without the concept to that of the prompts with it.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from diag.atomic import write_bytes_atomic
from diag.errors import DiagError
from diag.run_dir import Run
from diag.runs import RunStore

FORMATS = ("gguf", "safetensors", "npz")
LAYER_CONVENTION = ("direction.L is added to the residual output of decoder block L (0-based: "
                    "model.model.layers[L], Hugging Face hidden_states[L + 1]); llama.cpp applies direction.L after "
                    "its layer L, the same block")


@dataclass
class Direction:
    """One layer's direction (a unit vector, or a [d, k] orthonormal basis) and what sets its strength there."""

    layer: int
    vector: np.ndarray
    scale: dict[str, float] = field(default_factory=dict)  # m_plus, m_minus, additive_scale, clamp targets


@dataclass
class Export:
    model: str
    concept: str
    method: str
    analysis: str
    run_id: str
    directions: list[Direction]

    def metadata(self) -> dict[str, str]:
        """String metadata (safetensors and npz): what, where, and how strong."""
        return {"format": "diag-steering-directions-v1", "model": self.model, "concept": self.concept,
                "method": self.method, "source_run": self.run_id, "source_analysis": self.analysis,
                "component": "resid_post", "sites": json.dumps([f"L{d.layer}.resid_post" for d in self.directions]),
                "layers": json.dumps([d.layer for d in self.directions]),
                "scales": json.dumps({str(d.layer): d.scale for d in self.directions}),
                "layer_convention": LAYER_CONVENTION}


def _pick(available: list[str], given: str | None, what: str, run_id: str) -> str:
    if given is None:
        if len(available) != 1:
            raise DiagError(f"run {run_id} holds {what}s {', '.join(available)}: choose one with --{what}")
        return available[0]
    if given not in available:
        raise DiagError(f"run {run_id} has no {what} {given!r}; it holds {', '.join(available)}")
    return given


def _steer_directions(run: Run, concept: str | None, method: str | None) -> tuple[str, str, Direction]:
    from diag.cdas.steer import clamp_target

    data, vectors = run.read_json("steer.json"), run.read_arrays("vectors")
    keys = sorted(vectors)
    concept = _pick(sorted({k.split("/")[0] for k in keys}), concept, "concept", run.run_id)
    method = _pick(sorted({k.split("/")[1] for k in keys if k.startswith(f"{concept}/")}), method or "cdas",
                   "method", run.run_id)
    key = f"{concept}/{method}"
    m = data["projections"][key]
    scale = {"m_plus": m["m_plus"], "m_minus": m["m_minus"], "additive_scale": m["m_plus"] - m["m_minus"],
             "residual_norm": data["residual_norm"]}
    for direction in ("elicit", "suppress"):
        alpha = data["alphas"].get(f"{key}/{direction}")
        if alpha is not None:
            scale[f"alpha_{direction}"] = alpha
            scale[f"clamp_target_{direction}"] = clamp_target(m["m_plus"], m["m_minus"], direction, alpha,
                                                              data["residual_norm"])
    return concept, method, Direction(int(run.config["layer"]), np.asarray(vectors[key], dtype=np.float32), scale)


def collect(run: Run, concept: str | None = None, method: str | None = None) -> Export:
    """The directions a finished cdas run holds, for one concept and method."""
    from diag.cdas.config import BY_LAYER, STEER, TRAIN

    if not run.finished:
        raise DiagError(f"run {run.run_id} has not finished: nothing to export")
    config = run.config
    if run.analysis == TRAIN.name:
        concept = _pick([config["concept"]], concept, "concept", run.run_id)
        method = _pick([config["objective"]], method, "method", run.run_id)
        basis = run.read_arrays("basis")["basis"].astype(np.float32)
        vector = basis[:, 0] if basis.shape[1] == 1 else basis
        return Export(config["model"], concept, method, run.analysis, run.run_id,
                      [Direction(int(config["layer"]), vector)])
    if run.analysis == STEER.name:
        concept, method, direction = _steer_directions(run, concept, method)
        return Export(config["model"], concept, method, run.analysis, run.run_id, [direction])
    if run.analysis == BY_LAYER.name:
        layers = run.read_json("sweep.json")["runs"]
        directions = []
        for layer in sorted(layers, key=int):
            concept, method, direction = _steer_directions(run.store.get(layers[layer]), concept, method)
            directions.append(direction)
        return Export(config["model"], concept, method, run.analysis, run.run_id, directions)
    raise DiagError(f"run {run.run_id} is a {run.analysis} run; directions come from cdas-train, cdas-steer and "
                    "cdas-steer-sweep runs")


def _write_gguf(export: Export, path: Path) -> None:
    import gguf

    from diag.zoo.sources import lm_config

    if any(d.vector.ndim != 1 for d in export.directions):
        raise DiagError("a control vector holds one direction per layer; this run's subspace has rank > 1: export "
                        "it as safetensors or npz")
    if any(d.layer == 0 for d in export.directions):
        raise DiagError("llama.cpp rejects direction.0 (it cannot steer the output of block 0); export as "
                        "safetensors or npz")
    hint = str(lm_config(export.model).get("model_type") or "llama")
    fd, temp = tempfile.mkstemp(dir=path.parent, suffix=".gguf.tmp")
    os.close(fd)
    try:
        writer = gguf.GGUFWriter(temp, "controlvector")
        writer.add_string("controlvector.model_hint", hint)
        writer.add_uint32("controlvector.layer_count", len(export.directions))
        for key, value in export.metadata().items():
            writer.add_string(f"diag.{key}", value)
        for d in export.directions:
            writer.add_tensor(f"direction.{d.layer}", d.vector)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(temp, path)
    finally:
        if os.path.exists(temp):
            os.unlink(temp)


def write(export: Export, fmt: str, path: Path) -> Path:
    """Write ``export`` as ``fmt`` to ``path`` atomically (a temp file renamed into place)."""
    if fmt not in FORMATS:
        raise DiagError(f"unknown format {fmt!r}: choose one of {', '.join(FORMATS)}")
    path = Path(path)
    if not path.parent.is_dir():
        raise DiagError(f"cannot write {path}: {path.parent} is not a directory")
    tensors = {f"direction.{d.layer}": np.ascontiguousarray(d.vector, dtype=np.float32) for d in export.directions}
    if fmt == "gguf":
        _write_gguf(export, path)
    elif fmt == "safetensors":
        from safetensors.numpy import save

        write_bytes_atomic(path, save(tensors, metadata=export.metadata()))
    else:
        import io

        buf = io.BytesIO()
        np.savez(buf, **tensors, metadata=np.array(json.dumps(export.metadata())))
        write_bytes_atomic(path, buf.getvalue())
    return path


def export_run(run_id: str, fmt: str, out: Path | None = None, concept: str | None = None,
               method: str | None = None, store: RunStore | None = None) -> dict[str, Any]:
    """Export a run's directions; the default file name is ``<run id>-<concept>-<method>.<format>`` here."""
    if fmt not in FORMATS:
        raise DiagError(f"unknown format {fmt!r}: choose one of {', '.join(FORMATS)}")
    run = (store or RunStore()).get(run_id)
    export = collect(run, concept, method)
    target = Path(out) if out is not None else Path(f"{run.run_id}-{export.concept}-{export.method}.{fmt}")
    write(export, fmt, target)
    return {"file": str(target), "format": fmt, "concept": export.concept, "method": export.method,
            "layers": [d.layer for d in export.directions], "model": export.model,
            "layer_convention": LAYER_CONVENTION}
