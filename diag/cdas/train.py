"""Train one rank-k DII for one concept on a chat LM (DAS, CDAS or KL objective) and save it.

The losses live here and ``steer`` reuses them. Per pair (x, y, x_c, y_c) there are two interchanges:
elicitation (base x+y_c, source x_c+y_c) and suppression (base x_c+y, source x+y). The source is the last
assistant-header token of the source prompt, swapped into every base position after BOS; the counterfactual
run (what CDAS and KL match) is the source sequence itself, un-intervened, at the shared response tokens.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from diag.cdas.config import TRAIN as ANALYSIS  # noqa: F401 -- the declared value, for callers
from diag.cdas.config import TrainConfig as Config
from diag.errors import DiagError
from diag.progress import Progress, report_metrics
from diag.report.figures import integer_ticks
from diag.report.sections import Guide
from diag.run_dir import Run


@dataclass(frozen=True)
class Example:
    """One interchange: base prompt + response, the source state, and the counterfactual prompt."""

    base_instruction: str
    response: str
    source_state: torch.Tensor  # [d] residual at the source token of the source prompt
    cf_instruction: str


def examples_for(pairs: list[Any], pos_states: torch.Tensor, neg_states: torch.Tensor) -> list[Example]:
    """Elicitation and suppression interchanges for each pair (pos/neg: source states of x_c / x)."""
    out = []
    for j, p in enumerate(pairs):
        out.append(Example(p.instruction, p.concept_response, pos_states[j], p.concept_instruction))
        out.append(Example(p.concept_instruction, p.response, neg_states[j], p.instruction))
    return out


def source_states(model: torch.nn.Module, tokenizer: object, instructions: list[str], layer: int) -> torch.Tensor:
    """Residual output at ``layer`` of the last assistant-header token of each chat prompt: [n, d]."""
    from diag.cdas.lm import encode, residual_at

    device = next(model.parameters()).device
    batch = encode(tokenizer, instructions, [""] * len(instructions), device)
    h = residual_at(model, layer, input_ids=batch.input_ids, attention_mask=batch.attention_mask)
    return h[torch.arange(len(instructions)), batch.source_index().to(device)].float().cpu()


def intervened_losses(model: torch.nn.Module, tokenizer: object, layer: int, examples: list[Example],
                      bases: torch.Tensor, objectives: list[str], max_response_tokens: int | None = None
                      ) -> torch.Tensor:
    """Per-example loss [b] of the intervened base run: CE ("das"), JSD ("cdas") or KL ("kl"), each with its
    own basis ``bases[i]`` (d x k), averaged over the (first ``max_response_tokens``) response tokens."""
    from diag.cdas.dii import jsd_loss, kl_loss
    from diag.cdas.lm import encode, hidden_hook

    device = next(model.parameters()).device
    base = encode(tokenizer, [e.base_instruction for e in examples], [e.response for e in examples], device,
                  max_response_tokens)
    sources = torch.stack([e.source_state for e in examples]).to(device).unsqueeze(1)  # [b, 1, d]
    bases = bases.to(device)

    def dii(h: torch.Tensor) -> torch.Tensor:
        return h + torch.einsum("bsk,bdk->bsd", torch.einsum("bsd,bdk->bsk", sources - h, bases), bases)

    with hidden_hook(model, layer, dii, skip_first=torch.zeros(len(examples), dtype=torch.long)):
        logits = model(input_ids=base.input_ids, attention_mask=base.attention_mask).logits
    mask = base.response_mask()
    losses = []
    need_cf = [i for i, o in enumerate(objectives) if o != "das"]
    cf_logits = None
    if need_cf:
        cf = encode(tokenizer, [examples[i].cf_instruction for i in need_cf], [examples[i].response for i in need_cf],
                    device, max_response_tokens)
        with torch.no_grad():
            out = model(input_ids=cf.input_ids, attention_mask=cf.attention_mask).logits
        cf_mask = cf.response_mask()
        cf_logits = {i: out[k][cf_mask[k]] for k, i in enumerate(need_cf)}
    for i, objective in enumerate(objectives):
        p_logits = logits[i][mask[i]]
        if objective == "das":
            targets = base.input_ids[i][1:][mask[i][:-1]]
            losses.append(F.cross_entropy(p_logits.float(), targets))
        else:
            losses.append((jsd_loss if objective == "cdas" else kl_loss)(p_logits, cf_logits[i]))  # type: ignore
    return torch.stack(losses)


@dataclass
class Result:
    heldout_loss_before: float
    heldout_loss_after: float
    orthonormality_error: float
    curve: list[float]
    basis: np.ndarray
    intervention_state: dict[str, np.ndarray] = field(default_factory=dict)
    numerics: dict[str, Any] = field(default_factory=dict)  # device, dtype (+ faithfulness), TF32 switch

    def summary(self) -> dict[str, Any]:
        return {"heldout_loss_before": self.heldout_loss_before, "heldout_loss_after": self.heldout_loss_after,
                "orthonormality_error": self.orthonormality_error, "final_train_loss": self.curve[-1],
                "rank": int(self.basis.shape[1]), "numerics": self.numerics}

    def save(self, run: Run) -> None:
        run.write_json("train.json", {"before": self.heldout_loss_before, "after": self.heldout_loss_after,
                                      "orthonormality_error": self.orthonormality_error, "curve": self.curve,
                                      "numerics": self.numerics})
        run.write_arrays("basis", {"basis": self.basis, **self.intervention_state})
        run.write_figure("loss_curve", self.loss_figure())

    def loss_figure(self) -> Any:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.plot(self.curve)
        ax.set(xlabel="step", ylabel="train loss", title="DII training loss")
        integer_ticks(ax.xaxis)
        fig.tight_layout()
        return fig

    @classmethod
    def load(cls, run: Run) -> Result:
        data, arrays = run.read_json("train.json"), run.read_arrays("basis")
        basis = arrays.pop("basis")
        return cls(data["before"], data["after"], data["orthonormality_error"], data["curve"], basis, arrays,
                   data.get("numerics", {}))


def compute(config: Config, run: Run, progress: Progress) -> Result:
    from diag.cdas.concepts import concept_specs, load_pairs
    from diag.cdas.dii import RotatedSubspace, orthonormality_error
    from diag.checkpoint import run_steps
    from diag.device import exact_matmul
    from diag.zoo.lm import load_lm_numerics
    pairs = load_pairs(config.dataset or None, (config.concept,), concept_specs(config.concepts_file))
    model, tokenizer, numerics = load_lm_numerics(config.model, config.device, config.dtype, config.allow_tf32)
    model.requires_grad_(False)
    width = model.config.hidden_size
    if not 1 <= config.rank <= width:
        raise DiagError(f"rank {config.rank} out of range: the residual stream has width {width}")

    def interchanges(split: str) -> list[Example]:
        chosen = [p for p in pairs if p.split == split]
        pos = source_states(model, tokenizer, [p.concept_instruction for p in chosen], config.layer)
        neg = source_states(model, tokenizer, [p.instruction for p in chosen], config.layer)
        return examples_for(chosen, pos, neg)

    train, heldout = interchanges("train"), interchanges("heldout")
    torch.manual_seed(config.seed)
    random.seed(config.seed)
    dii = RotatedSubspace(width, config.rank, seed=config.seed)
    optimiser = torch.optim.Adam(dii.parameters(), lr=config.lr)

    def loss_on(examples: list[Example]) -> torch.Tensor:
        bases = dii.basis().unsqueeze(0).expand(len(examples), -1, -1)
        return intervened_losses(model, tokenizer, config.layer, examples, bases,
                                 [config.objective] * len(examples)).mean()

    with torch.no_grad():
        before = float(loss_on(heldout))

    def step(state: dict[str, Any], i: int) -> dict[str, Any]:
        dii.load_state_dict(state["dii"])
        optimiser.load_state_dict(state["optimiser"])
        with exact_matmul(config.allow_tf32):
            loss = loss_on(random.sample(train, min(2 * config.pairs_per_step, len(train))))
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        report_metrics(progress, i + 1, loss=loss.item())
        return {"dii": {k: v.detach().clone() for k, v in dii.state_dict().items()},
                "optimiser": optimiser.state_dict(), "curve": [*state["curve"], float(loss.detach())]}

    state = run_steps(run, config.steps, {"dii": dii.state_dict(), "optimiser": optimiser.state_dict(), "curve": []},
                      step, every=5, progress=progress, message=f"train {config.objective} DII")
    dii.load_state_dict(state["dii"])
    with torch.no_grad():
        after = float(loss_on(heldout))
    basis = dii.basis().detach()
    return Result(before, after, orthonormality_error(basis), state["curve"], basis.cpu().numpy(),
                  {k: v.cpu().numpy() for k, v in dii.state_dict().items()}, numerics)


GUIDE = Guide(
    question="How well does a rank-k DII trained with one objective (DAS, CDAS or KL) make the base run match the "
             "counterfactual on held-out concept pairs?",
    limitations=["Held-out loss only; steering quality is measured by cdas-steer."],
)


def audit_config(scale: float = 1.0) -> Config:
    """A few CDAS steps on one concept at scale 1."""
    return Config(steps=max(2, int(5 * scale)), pairs_per_step=2)
