"""Does the steering pipeline recover a direction we planted? The ground-truth check for ``cdas-steer``.

On ``smollm2-135m-planted`` (SmolLM2 + our LoRA, ``diag.cdas.planted``) adding a known unit direction d at the
residual output of block 10 makes the model talk about dogs and subtracting it suppresses dogs. This runs the
``cdas-steer`` study unchanged on that model (data, rank-1 DII training with DAS and CDAS, DiffMean, the factor
m+/m-, alpha chosen on held-out half A, steering and judging on half B) and reads off what ground truth allows:
- the |cosine| of each method's direction to d (a rank-1 DII is blind to the sign of its basis);
- per method and direction, the share of held-out half-B prompts where steering succeeded: the answer names a
  dog (lexicon) for elicitation, names none for suppression; and the share that also stays fluent: perplexity
  under the unsteered planted model no higher than the highest of the planted model's own unsteered answers to
  the same prompts (its own range), and not degenerate (the judge's distinct-word rule). 95% Wilson intervals.
  Every answer (each method's, d's and the model's own) is read as an answer to the neutral instruction x, the
  model card's convention: ``cdas-steer``'s fluency cost reads an elicited answer under x_c instead, and a bar
  read against a range measured another way would compare two scales.
- the same for steering along d itself with the clamp the pipeline chose for CDAS (what the model allows), and
  along random directions at CDAS's |cosine| to d (what any direction that close to d does);
- each method's and d's fluent success at every alpha of the grid, beside the one chosen on half A.
Bars (issue 19): CDAS cosine >= 0.9; elicitation and suppression succeed at that fluency on >= 90% of prompts.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from diag import contract
from diag.cdas import steer
from diag.cdas.config import DIRECTIONS, PLANTED_METHODS, VECTOR_METHODS
from diag.cdas.config import PLANTED_CHECK as ANALYSIS  # noqa: F401 -- the declared value, for callers
from diag.cdas.config import PlantedConfig as Config
from diag.errors import DiagError
from diag.progress import Progress, Stage
from diag.report.sections import UNIT, Guide, Metric
from diag.run_dir import Run
from diag.stats import wilson

if TYPE_CHECKING:
    import torch

COSINE_BAR = 0.9
SUCCESS_BAR = 0.9
MIN_DISTINCT = 0.4  # the judge's degenerate-answer rule (distinct-word ratio)
# steered beside the methods: d itself, and random directions at CDAS's |cosine| to d
CONTROLS = ("planted_d", "near_d")


@dataclass
class Result:
    steer_run: str  # the cdas-steer run this read (its examples, vectors and figures)
    layer: int
    scale: float
    cosines: dict[str, float]  # method -> |cos(v, d)|
    # method, direction, alpha, chosen (the alpha chosen on half A), n, successes, fluent_successes,
    # median_perplexity: one row per alpha of the grid, so that what the half-A choice cost can be read
    rows: list[dict[str, Any]]
    own_perplexity: dict[str, float]  # the planted model's unsteered answers: min, median, max, n
    curves: dict[str, list[float]] = field(default_factory=dict)

    def rate(self, method: str, direction: str, key: str = "fluent_successes",
             alpha: float | None = None) -> dict[str, float]:
        """Share of prompts (95% Wilson) at the chosen alpha, or at ``alpha``. Runs stored before every alpha's
        row was kept have only the chosen one, with no ``chosen`` key."""
        row = next(r for r in self.rows if (r["method"], r["direction"]) == (method, direction)
                   and (r.get("chosen", True) if alpha is None else r["alpha"] == alpha))
        return wilson(row[key] / row["n"], row["n"])

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"layer": self.layer, "scale": self.scale, "steer_run": self.steer_run}
        out.update({f"cosine_{m}": v for m, v in self.cosines.items()})
        for r in self.rows:
            key = f"{r['method']}_{r['direction']}"
            if r.get("chosen", True):
                out[f"{key}_success"] = self.rate(r["method"], r["direction"], "successes")
                out[f"{key}_fluent_success"] = self.rate(r["method"], r["direction"])
                out[f"{key}_median_perplexity"] = r["median_perplexity"]
            if r["method"] != "prompting":
                out.setdefault(f"{key}_fluent_success_by_alpha", {})[f"{r['alpha']:g}"] = (
                    self.rate(r["method"], r["direction"], alpha=r["alpha"])["value"])
        out["own_perplexity"] = self.own_perplexity
        out["cdas_cosine_passes"] = self.cosines["cdas"] >= COSINE_BAR
        out["cdas_steering_passes"] = all(self.rate("cdas", d)["value"] >= SUCCESS_BAR for d in DIRECTIONS)
        return out

    def save(self, run: Run) -> None:
        run.write_json("planted.json", {"steer_run": self.steer_run, "layer": self.layer, "scale": self.scale,
                                        "cosines": self.cosines, "rows": self.rows,
                                        "own_perplexity": self.own_perplexity, "curves": self.curves})
        run.write_figure("success", self.figure())

    @classmethod
    def load(cls, run: Run) -> Result:
        data = run.read_json("planted.json")
        return cls(data["steer_run"], data["layer"], data["scale"], data["cosines"], data["rows"],
                   data["own_perplexity"], data["curves"])

    def figure(self) -> Any:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
        methods = [m for m in (*PLANTED_METHODS, *CONTROLS) if any(r["method"] == m for r in self.rows)]
        for ax, direction in zip(axes, DIRECTIONS, strict=True):
            for k, key in enumerate(("successes", "fluent_successes")):
                rates = [self.rate(m, direction, key) for m in methods]
                x = np.arange(len(methods)) + (k - 0.5) * 0.35
                ax.bar(x, [r["value"] for r in rates], 0.35, label=key.replace("_", " "),
                       yerr=[[r["value"] - r["low"] for r in rates], [r["high"] - r["value"] for r in rates]])
            ax.axhline(SUCCESS_BAR, color="grey", ls="--", lw=1)
            ax.set_xticks(range(len(methods)), [f"{m}\n|cos| {self.cosines[m]:.2f}" if m in self.cosines else m
                                                for m in methods], fontsize=8)
            ax.set(title=f"{direction} (held-out half B)", ylim=(0, 1.05))
        axes[0].set_ylabel("share of prompts (95% Wilson)")
        axes[1].legend(fontsize=7)
        fig.tight_layout()
        return fig


def compute(config: Config, run: Run, progress: Progress) -> Result:
    import torch
    from safetensors.torch import load_file

    from diag.cdas.concepts import CONCEPTS, load_pairs, mentions
    from diag.cdas.judge import distinct_ratio
    from diag.cdas.lm import generate, response_nll
    from diag.cdas.planted import CONCEPT, DATASET, LAYER, SCALE
    from diag.cdas.steer_measure import prompt_for
    from diag.cdas.train import source_states
    from diag.zoo.lm import load_lm
    from diag.zoo.sources import PLANTED, PLANTED_ADAPTER

    steer_config = config.steer_config()

    steer_id, study = contract.run(steer.ANALYSIS, steer_config, store=run.store,
                                   progress=Stage(progress, "cdas-steer on the planted model"))
    progress(1, 2, "the planted model's own answers and steering along d")
    d = load_file(str(PLANTED_ADAPTER / "direction.safetensors"))["direction"].double()
    cosines = {m: abs(float(torch.from_numpy(study.vectors[f"{CONCEPT}/{m}"]).double() @ d))
               for m in VECTOR_METHODS}
    examples = [e for e in study.examples if e["concept"] == CONCEPT]
    neutral = list(dict.fromkeys(e["prompt"] for e in examples if e["method"] == "cdas" and e["direction"] == "elicit"))
    asked = list(dict.fromkeys(e["prompt"] for e in examples if e["method"] == "cdas" and e["direction"] == "suppress"))
    if len(neutral) != len(asked):
        raise DiagError(f"cdas-steer run {steer_id} has {len(neutral)} elicit but {len(asked)} suppress prompts")
    heldout = steer.split_pairs(steer_config)[1][CONCEPT]
    instruction = {prompt_for(p, m, direction, CONCEPTS[CONCEPT].phrase): p.instruction for p in heldout
                   for m in steer_config.methods
                   for direction in DIRECTIONS}
    model, tokenizer = load_lm(PLANTED, config.device, config.dtype)
    read_as_x = np.exp(response_nll(model, tokenizer, [instruction[e["prompt"]] for e in examples],
                                    [e["answer"] for e in examples]))
    examples = [{**e, "perplexity": float(p)} for e, p in zip(examples, read_as_x, strict=True)]
    # The planted model's own (unsteered) answers to the same prompts, read as answers to x like every answer
    # here: their perplexities are the range a steered answer must stay in.
    own = generate(model, tokenizer, neutral + asked, max_new_tokens=config.max_new_tokens)
    own_ppl = np.exp(response_nll(model, tokenizer, neutral + neutral, own))
    limit = float(own_ppl.max())

    # Steering along d itself with the pipeline's clamp rule (m+/m- of the vector on the train prompts; chosen: the
    # alpha chosen for CDAS), at every alpha of the grid: what the planted model allows, so a pipeline miss reads
    # apart from a model that cannot steer. And along random unit vectors at CDAS's |cosine| to d (one seeded draw
    # per prompt): what any direction that close to d does, so a miss of CDAS's direction reads apart from a miss of
    # every direction at its cosine.
    train = [p for p in load_pairs(DATASET, (CONCEPT,)) if p.split == "train"]
    concept_states = source_states(model, tokenizer, [p.concept_instruction for p in train], LAYER).double()
    neutral_states = source_states(model, tokenizer, [p.instruction for p in train], LAYER).double()
    controls = {"planted_d": d.expand(len(neutral), -1), "near_d": near(d, cosines["cdas"], len(neutral), config.seed)}
    cosines["near_d"] = cosines["cdas"]
    chosen = {**study.alphas, **{f"{CONCEPT}/{m}/{dr}": study.alphas[f"{CONCEPT}/cdas/{dr}"]
                                 for m in controls for dr in DIRECTIONS}}
    oracle = []
    for method, vectors in controls.items():
        m_plus, m_minus = (concept_states @ vectors.T).mean(0), (neutral_states @ vectors.T).mean(0)
        for direction, prompts in (("elicit", neutral), ("suppress", asked)):
            for alpha in steer_config.alphas:
                targets = torch.tensor([steer.clamp_target(float(p), float(m), direction, alpha, study.residual_norm)
                                        for p, m in zip(m_plus, m_minus, strict=True)])
                answers = generate(model, tokenizer, prompts, max_new_tokens=config.max_new_tokens, layer=LAYER,
                                   fn=steer.row_clamp(vectors.float(), targets))
                ppl = np.exp(response_nll(model, tokenizer, neutral, answers))
                oracle += [{"method": method, "direction": direction, "alpha": alpha, "answer": a, "perplexity": p}
                           for a, p in zip(answers, ppl, strict=True)]
    spec = CONCEPTS[CONCEPT]
    rows = []
    for method in (*PLANTED_METHODS, *CONTROLS):
        for direction in DIRECTIONS:
            for alpha in (steer_config.alphas if method != "prompting" else (0.0,)):
                sel = [e for e in (examples if method not in CONTROLS else oracle)
                       if (e["method"], e["direction"], e["alpha"]) == (method, direction, alpha)]
                if not sel:  # a cdas-steer run stored before every alpha's answers were kept
                    continue
                named = [mentions(e["answer"], spec) == (direction == "elicit") for e in sel]
                fluent = [e["perplexity"] <= limit and distinct_ratio(e["answer"]) >= MIN_DISTINCT for e in sel]
                rows.append({"method": method, "direction": direction, "alpha": alpha,
                             "chosen": alpha == chosen.get(f"{CONCEPT}/{method}/{direction}", alpha), "n": len(sel),
                             "successes": int(sum(named)),
                             "fluent_successes": int(sum(a and b for a, b in zip(named, fluent, strict=True))),
                             "median_perplexity": float(np.median([e["perplexity"] for e in sel]))})
    own_perplexity = {"min": float(own_ppl.min()), "median": float(np.median(own_ppl)), "max": limit,
                      "n": len(own_ppl)}
    progress(2, 2, "done")
    return Result(steer_id, LAYER, SCALE, cosines, rows, own_perplexity, study.curves)


def near(d: torch.Tensor, cosine: float, n: int, seed: int) -> torch.Tensor:
    """``n`` seeded random unit vectors at exactly ``cosine`` to the direction ``d``: [n, dim], float64."""
    import torch

    d = d.double() / d.double().norm()
    u = torch.randn(n, d.numel(), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    u = u - (u @ d)[:, None] * d
    return cosine * d + (1 - cosine**2) ** 0.5 * u / u.norm(dim=1, keepdim=True)


def pin_inputs(config: Config) -> Config:
    """The planted adapter's hash, into this run's id as into the nested cdas-steer run's: a retrained adapter
    makes a new check, not a stale one reused (the config alone names the same run for any adapter)."""
    from diag.files import fingerprint
    from diag.zoo.sources import PLANTED_ADAPTER

    sha = fingerprint(PLANTED_ADAPTER) if PLANTED_ADAPTER.is_dir() else None
    return replace(config, adapter_sha256=sha)


def check_inputs(config: Config) -> None:
    """Fail early (one line) when the planted adapter is missing."""
    from diag.zoo.sources import PLANTED_ADAPTER

    if not (PLANTED_ADAPTER / "direction.safetensors").exists():
        raise DiagError(f"the planted adapter {PLANTED_ADAPTER} is missing: retrain it with python -m diag.cdas.planted")


def _headline(summary: dict[str, Any]) -> list[Any]:
    out = [Metric(f"|cos| to d, {m}", summary[f"cosine_{m}"]) for m in VECTOR_METHODS]
    for method in ("cdas", "das", "diffmean", *CONTROLS):
        for direction in DIRECTIONS:
            if f"{method}_{direction}_fluent_success" not in summary:  # a run stored before near_d was steered
                continue
            r = summary[f"{method}_{direction}_fluent_success"]
            out.append(Metric(f"{method} {direction}: success at own fluency", r["value"], r["low"], r["high"],
                              bounds=UNIT))
    return out


GUIDE = Guide(
    question="Does the steering pipeline recover a direction we planted, and steer with it both ways? On a SmolLM2 "
             "fine-tuned so that a known unit direction d at block 10 switches talk about dogs on and off, the "
             "cdas-steer study should find d (|cosine| >= 0.9 for CDAS) and elicit and suppress dogs on >= 90% "
             "of held-out prompts without leaving the model's own perplexity range.",
    limitations=[
        ("The planted model was trained to write d on prompts asking for dogs and to read it: the check proves the "
         "pipeline can find and use a direction that is there, not that natural concepts have one."),
        ("Success is a lexicon hit (elicit) or its absence (suppress) within max_new_tokens, not the LLM-judged "
         "AxBench score; fluency is perplexity under the unsteered planted model against its own answers' range."),
        ("With init=diffmean DAS and CDAS start from the DiffMean direction; their cosines then say the training "
         "kept (or left) d, and init=random tests recovery from scratch."),
        ("Along d itself, with the clamp the pipeline chose, the committed planted model elicits dogs within its "
         "own perplexity range on 0.83 of the held-out half (0.92 named) and suppresses them on 1.00 (its "
         "MODEL_CARD.md; the planted_d row): the elicitation bar sits at the model's ceiling at these clamps, so "
         "compare a method's rates with that row before reading a miss as the pipeline's."),
        ("The near_d row steers along random unit vectors at CDAS's |cosine| to d (one per prompt, same clamp "
         "rule): if it misses as CDAS does, the miss belongs to any direction that close to d on this model (the "
         "part of the clamp off d perturbs the residual), not to the one CDAS found. On this model DAS drifts away from d as "
         "its DII loss falls (0.96 at 8 steps), and CDAS stays nearer (0.971)."),
        ("The bars are read at the alpha cdas-steer chose on half A by judge score; the summary's "
         "*_fluent_success_by_alpha gives every alpha of the grid, so a miss from the choice reads apart from a "
         "miss of the direction."),
        "Intervals are 95% Wilson intervals over held-out prompts of one seed.",
    ],
    headline=_headline,
    captions={"success": "Held-out half B: share of prompts where steering named (elicit) or avoided (suppress) "
                         "dogs, alone and within the planted model's own perplexity range; 90% bar dashed."},
)


def audit_config(scale: float = 1.0) -> Config:
    """The check at a CPU budget (a few minutes): 16 held-out prompts, one alpha; the full 48 at scale >= 4."""
    if scale >= 4:
        return Config()
    return Config(steps=max(2, int(4 * scale)), alphas=(0.5,), eval_prompts=16, max_new_tokens=16)
