"""Steer one new prompt with a stored ``cdas-steer`` run's direction, with and without the edit (the app's panel).

The edit is the run's own: its layer, positions and alpha unit (``steer_edit``); only alpha and the prompt are
the user's. The last model used stays loaded, so repeated prompts do not reload it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from diag.errors import DiagError


@dataclass(frozen=True)
class LiveAnswer:
    plain: str  # greedy answer without the edit
    steered: str  # greedy answer with v^T h clamped to ``target``
    target: float


@functools.lru_cache(maxsize=1)
def _model(name: str, device: str) -> tuple[Any, Any]:
    from diag.zoo import load_lm

    return load_lm(name, device)


def live_target(result: Any, concept: str, method: str, direction: str, alpha: float, factor: str = "norm") -> float:
    """The clamp target a stored run gives for this concept, method, direction and alpha."""
    from diag.cdas.steer_edit import alpha_unit, clamp_target

    key = f"{concept}/{method}"
    if key not in result.projections:
        raise DiagError(f"the run has no {method} direction for {concept!r}")
    m = result.projections[key]
    unit = alpha_unit(factor, m["m_plus"], m["m_minus"], result.residual_norm)  # type: ignore[arg-type]
    return clamp_target(m["m_plus"], m["m_minus"], direction, alpha, unit)


def steer_prompt(config: dict[str, Any], result: Any, concept: str, method: str, direction: str, alpha: float,
                 prompt: str, max_new_tokens: int) -> LiveAnswer:
    """Answer ``prompt`` greedily with the run's model, unsteered and steered, per the run's ``config``."""
    import torch

    from diag.cdas.lm import generate
    from diag.cdas.steer_edit import row_clamp

    if not prompt.strip():
        raise DiagError("empty prompt")
    target = live_target(result, concept, method, direction, alpha, config.get("factor", "norm"))
    model, tokenizer = _model(config["model"], config["device"])
    plain = generate(model, tokenizer, [prompt], max_new_tokens=max_new_tokens)[0]
    first = torch.tensor([-1]) if config.get("positions", "all") == "generated" else None
    clamp = row_clamp(torch.tensor(result.vectors[f"{concept}/{method}"], dtype=torch.float32)[None],
                      torch.tensor([target]), first)
    steered = generate(model, tokenizer, [prompt], max_new_tokens=max_new_tokens, layer=config["layer"], fn=clamp)[0]
    return LiveAnswer(plain, steered, target)
