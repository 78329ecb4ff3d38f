"""The directions ``cdas-steer`` compares: DiffMean, and rank-1 DIIs trained with DAS (cross-entropy) or CDAS (JSD).

Where a direction is read (``read``): ``"token"`` takes the residual at the last assistant-header token of the
prompt (the DII source position of DESIGN 2.1); ``"response"`` averages it over every position that predicts a
response token of the teacher-forced pair (x_c + y_c for the concept side, x + y for the neutral side), so the
direction sees the concept while it is being written, not only before. The same states give DiffMean (difference
of means), m+ / m- (mean projections) and the DII source states.
"""

from __future__ import annotations

import random
import zlib
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch

from diag.cdas.concepts import Pair
from diag.cdas.config import Read
from diag.progress import Progress, report_metrics
from diag.run_dir import Run


@dataclass
class Directions:
    """Unit vectors per "concept/method", their mean projections m+ / m-, rho and the DII loss curves."""

    vectors: dict[str, torch.Tensor]
    projections: dict[str, dict[str, float]]
    residual_norm: float
    curves: dict[str, list[float]]


def response_states(model: torch.nn.Module, tokenizer: object, instructions: list[str], responses: list[str],
                    layer: int) -> torch.Tensor:
    """Mean residual at ``layer`` over the positions that predict each row's response tokens: [n, d]."""
    from diag.cdas.lm import encode, residual_at

    device = next(model.parameters()).device
    batch = encode(tokenizer, instructions, responses, device)
    h = residual_at(model, layer, input_ids=batch.input_ids, attention_mask=batch.attention_mask).float()
    mask = batch.response_mask().unsqueeze(-1).float()
    return ((h * mask).sum(1) / mask.sum(1).clamp(min=1)).cpu()


def read_states(model: torch.nn.Module, tokenizer: object, pairs: list[Pair], layer: int,
                read: Read) -> tuple[torch.Tensor, torch.Tensor]:
    """(concept-side, neutral-side) states [n, d] of the train pairs, read as ``read`` says."""
    from diag.cdas.train import source_states

    if read == "token":
        return (source_states(model, tokenizer, [p.concept_instruction for p in pairs], layer),
                source_states(model, tokenizer, [p.instruction for p in pairs], layer))
    return (response_states(model, tokenizer, [p.concept_instruction for p in pairs],
                            [p.concept_response for p in pairs], layer),
            response_states(model, tokenizer, [p.instruction for p in pairs], [p.response for p in pairs], layer))


def diffmean(pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    diff = pos.mean(0) - neg.mean(0)
    return diff / diff.norm()


def _train_step(state: dict[str, Any], i: int, *, model: torch.nn.Module, tokenizer: object, layer: int,
                modules: dict[str, Any], optimiser: torch.optim.Optimizer, train: dict[str, list[Pair]],
                states: dict[str, tuple[torch.Tensor, torch.Tensor]], pairs_per_step: int, train_tokens: int,
                allow_tf32: bool, seed: int, progress: Progress) -> dict[str, Any]:
    """One Adam step on every concept's DIIs at once (per-row bases in one batch); checkpointable state.

    Each DII draws its pairs from its own seeded stream (seed, name, step), so training DAS alongside CDAS, or not,
    leaves CDAS's direction unchanged (a shared stream made a method's direction depend on the methods compared).
    """
    from diag.cdas.train import examples_for, intervened_losses
    from diag.device import exact_matmul

    for name, m in modules.items():
        m.load_state_dict(state["modules"][name])
    optimiser.load_state_dict(state["optimiser"])
    rows = []  # (module name, objective, interchange)
    for name in modules:
        concept, objective = name.split("/")
        draw = random.Random(f"{seed}/{name}/{i}")
        picked = draw.sample(range(len(train[concept])), min(pairs_per_step, len(train[concept])))
        chosen = [train[concept][j] for j in picked]
        pos, neg = states[concept]
        rows += [(name, objective, e) for e in examples_for(chosen, pos[picked], neg[picked])]
    objectives = [r[1] for r in rows]
    bases = torch.stack([modules[r[0]].basis() for r in rows])
    with exact_matmul(allow_tf32):
        per_row = intervened_losses(model, tokenizer, layer, [r[2] for r in rows], bases, objectives, train_tokens)
        losses = {o: per_row[[k for k, ob in enumerate(objectives) if ob == o]].mean() for o in set(objectives)}
        optimiser.zero_grad()
        sum(losses.values()).backward()  # type: ignore[union-attr]
        optimiser.step()
    for o, loss in losses.items():
        state["curves"][o].append(float(loss.detach()))
    report_metrics(progress, i + 1, **{f"{o} loss": curve[-1] for o, curve in state["curves"].items()})
    state["modules"] = {n: {k: v.detach().clone() for k, v in m.state_dict().items()} for n, m in modules.items()}
    state["optimiser"] = optimiser.state_dict()
    return state


def train_diis(model: torch.nn.Module, tokenizer: object, config: Any, objectives: tuple[str, ...],
               train: dict[str, list[Pair]], states: dict[str, tuple[torch.Tensor, torch.Tensor]], run: Run,
               progress: Progress) -> tuple[dict[str, torch.Tensor], dict[str, list[float]]]:
    """Train one rank-1 DII per concept and objective (resumable); their unit vectors and loss curves."""
    from diag.cdas.dii import RotatedSubspace
    from diag.checkpoint import run_steps

    names = [f"{c}/{o}" for c in config.concepts for o in objectives]
    if not names:
        return {}, {}
    # Seeds by name, like the pair draws: the orthogonal parametrisation keeps a completion of the basis drawn from
    # torch's global RNG (seeded here before ``set_basis`` completes the DiffMean start), so a seed by position in
    # ``names`` would tie one method's direction to the methods and concepts trained beside it.
    modules = {}
    for n in names:
        seed = zlib.crc32(f"{config.seed}/{n}".encode())
        modules[n] = RotatedSubspace(model.config.hidden_size, 1, seed=seed)
        if config.init == "diffmean":
            torch.manual_seed(seed)
            modules[n].set_basis(diffmean(*states[n.split("/")[0]]).unsqueeze(1))
    optimiser = torch.optim.Adam([p for m in modules.values() for p in m.parameters()], lr=config.lr)
    step = partial(_train_step, model=model, tokenizer=tokenizer, layer=config.layer, modules=modules,
                   optimiser=optimiser, train=train, states=states, pairs_per_step=config.pairs_per_step,
                   train_tokens=config.train_tokens, allow_tf32=config.allow_tf32, seed=config.seed,
                   progress=progress)
    state = {"modules": {n: m.state_dict() for n, m in modules.items()}, "optimiser": optimiser.state_dict(),
             "curves": {o: [] for o in objectives}}
    state = run_steps(run, config.steps, state, step, every=5, progress=progress, message="train rank-1 DII")
    for n, m in modules.items():
        m.load_state_dict(state["modules"][n])
    return {n: m.basis()[:, 0].detach().float() for n, m in modules.items()}, state["curves"]


def build_directions(model: torch.nn.Module, tokenizer: object, config: Any, objectives: tuple[str, ...],
                     train: dict[str, list[Pair]], run: Run, progress: Progress) -> Directions:
    """Read the states, train the DIIs, and project: every vector method's direction per concept."""
    states = {c: read_states(model, tokenizer, train[c], config.layer, config.read) for c in config.concepts}
    residual_norm = float(torch.cat([h for pair in states.values() for h in pair]).norm(dim=-1).mean())
    learned, curves = train_diis(model, tokenizer, config, objectives, train, states, run, progress)
    vectors = {f"{c}/diffmean": diffmean(*states[c]) for c in config.concepts} | learned
    projections = {}
    for key, v in vectors.items():
        pos, neg = states[key.split("/")[0]]
        projections[key] = {"m_plus": float((pos @ v).mean()), "m_minus": float((neg @ v).mean())}
    return Directions(vectors, projections, residual_norm, curves)
