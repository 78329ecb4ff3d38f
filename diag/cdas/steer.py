"""Bi-directional concept steering of a chat LM with rank-1 CDAS, against DiffMean, DAS and prompting.

Per concept, a rank-1 DII v is trained at the residual output of one layer on the train pairs (x, y, x_c, y_c):
the source is the last assistant-header token of the source prompt, copied into every base position after BOS.
CDAS minimises the Jensen-Shannon divergence, at every response token, between the intervened base run and the
un-intervened counterfactual run (elicitation: base x+y_c, source x_c+y_c; suppression: base x_c+y, source x+y);
DAS minimises cross-entropy on the counterfactual response tokens instead. At inference
h' = h + (t - v^T h) v with m+ / m- the mean projection of the source token over positive / negative train
prompts and t = c + alpha*rho on neutral prompts (elicit), t = c - alpha*rho on concept prompts (suppress),
c = (m+ + m-)/2, rho = the mean residual norm at the layer (train source tokens). DiffMean uses the same clamp on
the normalised difference of mean source activations. alpha is chosen per concept, method and direction on one
held-out half and reported on the other. Scores come from the offline judge (``judge.py``).

Why alpha is in units of rho, not of each direction's own (m+ - m-): every method's v is a unit vector, so
rho makes one alpha the same edit strength for all of them. In units of (m+ - m-) a learned direction that
separates the prompts less (CDAS's was ~4x less than DiffMean's at layer 10) gets a ~4x weaker edit at the same
alpha, and a shared grid compared DiffMean at full strength with CDAS at a quarter. (DESIGN's alpha*m scales
from 0; when m- > 0 that moves *towards* the concept for alpha > 1, hence the midpoint c.)
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from diag.cdas.config import STEER as ANALYSIS  # noqa: F401 -- the declared value, for callers
from diag.cdas.config import SteerConfig as Config
from diag.errors import DiagError
from diag.progress import Progress, report_metrics
from diag.report.sections import Guide
from diag.run_dir import Run

VECTOR_METHODS = ("diffmean", "das", "cdas")
METHODS = (*VECTOR_METHODS, "prompting")
DIRECTIONS = ("elicit", "suppress")


@dataclass
class Result:
    judge: str
    alphas: dict[str, float]  # "concept/method/direction" -> alpha chosen on half A (vector methods)
    rows: list[dict[str, Any]]  # per concept, method, direction: held-out half-B scores
    alpha_sweep: list[dict[str, Any]]  # half A: concept, method, direction, alpha, score, concept, fluency
    examples: list[dict[str, Any]]  # every half-B generation with its scores
    curves: dict[str, list[float]] = field(default_factory=dict)
    vectors: dict[str, np.ndarray] = field(default_factory=dict)  # "concept/method" -> unit vector
    projections: dict[str, dict[str, float]] = field(default_factory=dict)  # "concept/method" -> m+, m-
    residual_norm: float = 0.0  # rho: mean |h| of the train source tokens at the layer (alpha's unit)
    numerics: dict[str, Any] = field(default_factory=dict)  # device, dtype (+ faithfulness), TF32 switch

    def table(self) -> dict[str, dict[str, float]]:
        """Mean held-out score per method and direction, averaged over concepts."""
        out: dict[str, dict[str, float]] = {}
        for method in METHODS:
            out[method] = {}
            for direction in DIRECTIONS:
                values = [r["score"] for r in self.rows if r["method"] == method and r["direction"] == direction]
                out[method][direction] = float(np.mean(values)) if values else float("nan")
        return out

    def summary(self) -> dict[str, Any]:
        table = self.table()
        out: dict[str, Any] = {"judge": self.judge}
        for method, per_dir in table.items():
            for direction, value in per_dir.items():
                out[f"{method}_{direction}"] = value
        for direction in DIRECTIONS:
            out[f"cdas_minus_diffmean_{direction}"] = table["cdas"][direction] - table["diffmean"][direction]
        out["concepts"] = sorted({r["concept"] for r in self.rows})
        out["residual_norm"] = self.residual_norm
        out["numerics"] = self.numerics
        return out

    def save(self, run: Run) -> None:
        run.write_json("steer.json", {"judge": self.judge, "alphas": self.alphas, "rows": self.rows,
                                      "alpha_sweep": self.alpha_sweep, "curves": self.curves,
                                      "projections": self.projections, "table": self.table(),
                                      "residual_norm": self.residual_norm, "numerics": self.numerics})
        run.write_json("examples.json", self.examples)
        run.write_arrays("vectors", self.vectors)
        for name, fig in self.figures().items():
            run.write_figure(name, fig)

    @classmethod
    def load(cls, run: Run) -> Result:
        data = run.read_json("steer.json")
        if "residual_norm" not in data:
            raise DiagError(f"run {run.run_id} predates alpha in units of the residual norm: rerun it")
        return cls(data["judge"], data["alphas"], data["rows"], data["alpha_sweep"], run.read_json("examples.json"),
                   data["curves"], run.read_arrays("vectors"), data["projections"], data["residual_norm"],
                   data.get("numerics", {}))

    def figures(self) -> dict[str, Any]:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        figs = {}
        fig, ax = plt.subplots(figsize=(7, 4))
        for name, curve in self.curves.items():
            ax.plot(curve, label=name, lw=1)
        ax.set(xlabel="training step", ylabel="loss", title="rank-1 DII training loss")
        ax.legend(fontsize=7)
        fig.tight_layout()
        figs["loss_curves"] = fig
        fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
        for ax, direction in zip(axes, DIRECTIONS, strict=True):
            for method in VECTOR_METHODS:
                points = [r for r in self.alpha_sweep if r["method"] == method and r["direction"] == direction]
                alphas = sorted({r["alpha"] for r in points})
                concept = [np.mean([r["concept_score"] for r in points if r["alpha"] == a]) for a in alphas]
                fluency = [np.mean([r["fluency"] for r in points if r["alpha"] == a]) for a in alphas]
                line = ax.plot(alphas, concept, marker="o", label=f"{method} concept")[0]
                ax.plot(alphas, fluency, marker="x", ls="--", color=line.get_color(), label=f"{method} fluency")
            ax.set(xlabel="alpha (x residual norm)", title=f"{direction} (held-out half A)", xscale="log")
        axes[0].set_ylabel("judge score (0-2)")
        axes[1].legend(fontsize=7)
        fig.tight_layout()
        figs["alpha_sweep"] = fig
        return figs


def clamp_target(m_plus: float, m_minus: float, direction: str, alpha: float, residual_norm: float) -> float:
    """Value of v^T h after the clamp: alpha residual norms above (elicit) or below (suppress) the midpoint."""
    sign = 1.0 if direction == "elicit" else -1.0
    return (m_plus + m_minus) / 2 + sign * alpha * residual_norm


def row_clamp(vectors: torch.Tensor, targets: torch.Tensor) -> Any:
    """Per-row clamp h' = h + (t - v^T h) v for batched steering (``probes.clamp`` is the one-vector form); a zero
    vector leaves the row untouched (prompting rows)."""

    def fn(h: torch.Tensor) -> torch.Tensor:
        v = vectors.to(h.device, h.dtype).unsqueeze(1)  # [b, 1, d]
        t = targets.to(h.device, h.dtype).view(-1, 1, 1)
        return h + (t - (h * v).sum(-1, keepdim=True)) * v

    return fn


def compute(config: Config, run: Run, progress: Progress) -> Result:
    from diag.cdas.concepts import CONCEPTS, load_pairs
    from diag.cdas.dii import RotatedSubspace
    from diag.cdas.judge import DESCRIPTION, score
    from diag.cdas.lm import generate, response_nll
    from diag.cdas.train import Example, examples_for, intervened_losses, source_states
    from diag.checkpoint import run_steps
    from diag.device import exact_matmul
    from diag.zoo.lm import load_lm_numerics
    pairs = load_pairs(config.dataset or None, config.concepts)
    model, tokenizer, numerics = load_lm_numerics(config.model, config.device, config.dtype, config.allow_tf32)
    model.requires_grad_(False)
    width = model.config.hidden_size
    train = {c: [p for p in pairs if p.concept == c and p.split == "train"] for c in config.concepts}
    heldout = {c: [p for p in pairs if p.concept == c and p.split == "heldout"][:config.eval_prompts]
               for c in config.concepts}
    for c in config.concepts:
        if len(heldout[c]) < 2:
            raise DiagError(f"concept {c!r} has {len(heldout[c])} held-out pairs; need at least 2")

    # Source activations (fixed: the model is frozen) for DiffMean, m+/m- and the DII source.
    states = {c: (source_states(model, tokenizer, [p.concept_instruction for p in train[c]], config.layer),
                  source_states(model, tokenizer, [p.instruction for p in train[c]], config.layer))
              for c in config.concepts}
    residual_norm = float(torch.cat([h for pair in states.values() for h in pair]).norm(dim=-1).mean())

    # --- Train one rank-1 DII per concept and objective (all in one batch: per-row bases). ---
    trained = [(c, o) for c in config.concepts for o in ("das", "cdas")]
    torch.manual_seed(config.seed)
    modules = {f"{c}/{o}": RotatedSubspace(width, 1, seed=config.seed + i) for i, (c, o) in enumerate(trained)}
    if config.init == "diffmean":
        for c, o in trained:
            diff = states[c][0].mean(0) - states[c][1].mean(0)
            modules[f"{c}/{o}"].set_basis((diff / diff.norm()).unsqueeze(1))
    params = [p for m in modules.values() for p in m.parameters()]
    optimiser = torch.optim.Adam(params, lr=config.lr)
    random.seed(config.seed)  # run_steps checkpoints and restores the global RNGs

    def step(state: dict[str, Any], i: int) -> dict[str, Any]:
        for name, m in modules.items():
            m.load_state_dict(state["modules"][name])
        optimiser.load_state_dict(state["optimiser"])
        rows: list[tuple[str, str, Example]] = []  # (module name, objective, interchange)
        for c, o in trained:
            picked = random.sample(range(len(train[c])), min(config.pairs_per_step, len(train[c])))
            chosen = [train[c][j] for j in picked]
            rows += [(f"{c}/{o}", o, e) for e in examples_for(chosen, states[c][0][picked], states[c][1][picked])]
        objectives = [r[1] for r in rows]
        bases = torch.stack([modules[r[0]].basis() for r in rows])
        with exact_matmul(config.allow_tf32):
            per_row = intervened_losses(model, tokenizer, config.layer, [r[2] for r in rows], bases, objectives,
                                        config.train_tokens)
            losses = {o: per_row[[k for k, ob in enumerate(objectives) if ob == o]].mean() for o in ("das", "cdas")}
            optimiser.zero_grad()
            (losses["das"] + losses["cdas"]).backward()
            optimiser.step()
        for o in ("das", "cdas"):
            state["curves"][o].append(float(losses[o].detach()))
        report_metrics(progress, i + 1, **{f"{o} loss": state["curves"][o][-1] for o in ("das", "cdas")})
        state["modules"] = {n: {k: v.detach().clone() for k, v in m.state_dict().items()} for n, m in modules.items()}
        state["optimiser"] = optimiser.state_dict()
        return state

    state = {"modules": {n: m.state_dict() for n, m in modules.items()}, "optimiser": optimiser.state_dict(),
             "curves": {"das": [], "cdas": []}}
    state = run_steps(run, config.steps, state, step, every=5, progress=progress, message="train rank-1 DII")
    for name, m in modules.items():
        m.load_state_dict(state["modules"][name])

    # --- Steering vectors and their projections m+ / m- from the train prompts. ---
    vectors: dict[str, torch.Tensor] = {}
    projections: dict[str, dict[str, float]] = {}
    for c in config.concepts:
        pos, neg = states[c]
        diff = pos.mean(0) - neg.mean(0)
        candidates = {"diffmean": diff / diff.norm(), "das": modules[f"{c}/das"].basis()[:, 0].detach(),
                      "cdas": modules[f"{c}/cdas"].basis()[:, 0].detach()}
        for method, v in candidates.items():
            vectors[f"{c}/{method}"] = v.float()
            projections[f"{c}/{method}"] = {"m_plus": float((pos @ v).mean()), "m_minus": float((neg @ v).mean())}

    # --- Generate: every (concept, method, direction, alpha) over held-out half A in one batch, then half B. ---
    def prompt_for(pair: Any, method: str, direction: str) -> str:
        if direction == "elicit":
            return pair.concept_instruction if method == "prompting" else pair.instruction
        if method == "prompting":
            return f"{pair.concept_instruction} Actually, do not mention {CONCEPTS[pair.concept].phrase} at all."
        return pair.concept_instruction

    def target(job: dict[str, Any]) -> float:
        if job["method"] == "prompting":
            return 0.0
        m = projections[f"{job['concept']}/{job['method']}"]
        return clamp_target(m["m_plus"], m["m_minus"], job["direction"], job["alpha"], residual_norm)

    def generate_rows(jobs: list[dict[str, Any]], message: str) -> list[dict[str, Any]]:
        progress(0, 1, message)
        vecs = torch.stack([vectors[f"{j['concept']}/{j['method']}"] if j["method"] != "prompting"
                            else torch.zeros(width) for j in jobs])
        targets = torch.tensor([target(j) for j in jobs])
        answers = generate(model, tokenizer, [j["prompt"] for j in jobs], max_new_tokens=config.max_new_tokens,
                           layer=config.layer, fn=row_clamp(vecs, targets))
        nll = response_nll(model, tokenizer, [j["instruction"] for j in jobs], answers)
        for j, a, n in zip(jobs, answers, nll, strict=True):
            j["answer"], j["nll"] = a, n
        for c in config.concepts:
            for direction in DIRECTIONS:
                idx = [k for k, j in enumerate(jobs) if j["concept"] == c and j["direction"] == direction]
                if not idx:
                    continue
                scores = score(c, [jobs[k]["instruction"] for k in idx], [jobs[k]["answer"] for k in idx],
                               [jobs[k]["nll"] for k in idx], suppress=direction == "suppress")
                for pos, k in enumerate(idx):
                    jobs[k].update({name: float(values[pos]) for name, values in scores.items()})
        progress(1, 1, message)
        return jobs

    def jobs_for(half: int, choose: dict[str, float] | None) -> list[dict[str, Any]]:
        out = []
        for c in config.concepts:
            cut = len(heldout[c]) // 2
            prompts = heldout[c][:cut] if half == 0 else heldout[c][cut:]
            for method in METHODS:
                if half == 0 and method == "prompting":
                    continue
                for direction in DIRECTIONS:
                    alphas = [1.0] if method == "prompting" else (
                        config.alphas if choose is None else [choose[f"{c}/{method}/{direction}"]])
                    for alpha in alphas:
                        for p in prompts:
                            out.append({"concept": c, "method": method, "direction": direction, "alpha": alpha,
                                        "instruction": p.instruction, "prompt": prompt_for(p, method, direction)})
        return out

    saved = run.load_checkpoint() or {}
    sweep_jobs = saved.get("sweep") or generate_rows(jobs_for(0, None), "alpha sweep (held-out half A)")
    run.save_checkpoint({**saved, "sweep": sweep_jobs})
    alpha_sweep, chosen = [], {}
    for c in config.concepts:
        for method in VECTOR_METHODS:
            for direction in DIRECTIONS:
                best = None
                for alpha in config.alphas:
                    sel = [j for j in sweep_jobs if (j["concept"], j["method"], j["direction"], j["alpha"]) ==
                           (c, method, direction, alpha)]
                    entry = {"concept": c, "method": method, "direction": direction, "alpha": alpha,
                             "score": float(np.mean([j["score"] for j in sel])),
                             "concept_score": float(np.mean([j["concept_score"] for j in sel])),
                             "fluency": float(np.mean([j["fluency"] for j in sel]))}
                    alpha_sweep.append(entry)
                    if best is None or entry["score"] > best["score"]:
                        best = entry
                chosen[f"{c}/{method}/{direction}"] = best["alpha"]  # type: ignore[index]
    report_jobs = generate_rows(jobs_for(1, chosen), "report (held-out half B)")
    rows = []
    for c in config.concepts:
        for method in METHODS:
            for direction in DIRECTIONS:
                sel = [j for j in report_jobs if (j["concept"], j["method"], j["direction"]) == (c, method, direction)]
                rows.append({"concept": c, "method": method, "direction": direction, "alpha": sel[0]["alpha"],
                             "n": len(sel), **{k: float(np.mean([j[k] for j in sel]))
                                               for k in ("score", "concept_score", "relevance", "fluency")}})
    examples = [{k: j[k] for k in ("concept", "method", "direction", "alpha", "prompt", "answer", "score",
                                   "concept_score", "relevance", "fluency", "perplexity")} for j in report_jobs]
    return Result(DESCRIPTION, chosen, rows, alpha_sweep, examples, state["curves"],
                  {k: v.cpu().numpy() for k, v in vectors.items()}, projections, residual_norm, numerics)


def _baselines(summary: dict[str, Any]) -> list[Any]:
    from diag.report.sections import Table

    rows = [[m, summary.get(f"{m}_elicit"), summary.get(f"{m}_suppress")] for m in METHODS]
    return [Table("Mean held-out judge score over concepts (0-2, harmonic mean)", ["method", "elicit", "suppress"],
                  rows)]


GUIDE = Guide(
    question="Can one rank-1 direction trained with CDAS (Jensen-Shannon distribution matching) steer a chat LM "
             "both ways, adding a concept to neutral answers and removing it from answers asked to include it, "
             "better than the DiffMean direction, a DAS (cross-entropy) direction, and prompting?",
    limitations=[
        ("The judge is offline and simple (lexicon + MiniLM similarity + perplexity buckets), not AxBench's LLM "
        "judge: compare methods within a run, not with published numbers."),
        ("CPU budget: few training steps, DAS/CDAS start from the DiffMean direction (init=diffmean), a handful of "
        "held-out prompts per concept and half, short answers; differences of a few tenths are within noise."),
        "The dataset was generated by SmolLM2 itself and filtered by the same lexicon the judge uses.",
        ("At the default budget (8 steps, lr 0.002) DAS/CDAS stay near their DiffMean start (cos ~0.93 at layer 10): "
         "they refine DiffMean rather than find an independent direction."),
        ("Elicitation is weak for every direction: read at one token (end of the assistant header) and clamped at "
         "every position, it raises the concept words' probability only slightly before fluency collapses, so "
         "elicit scores near 0 mean 'no method elicits', not 'CDAS loses'; prompting is the strong baseline there."),
    ],
    baselines=_baselines,
    captions={"loss_curves": "Training loss (DAS: cross-entropy, CDAS: JSD) summed over concepts.",
              "alpha_sweep": ("Held-out half A: concept score and fluency against the steering factor alpha (the clamp's "
                              "offset from the m+/m- midpoint, in residual norms at the layer).")},
)


def audit_config(scale: float = 1.0) -> Config:
    """Two concepts, a few training steps and one alpha at scale 1 (CPU minutes); the full study at scale >= 8."""
    if scale >= 8:
        return Config()
    return Config(concepts=("dogs", "music"), steps=max(2, int(4 * scale)), alphas=(0.2,), eval_prompts=4,
                  max_new_tokens=16)
