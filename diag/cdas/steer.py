"""Bi-directional concept steering of a chat LM with rank-1 CDAS, against DiffMean, DAS and prompting.

Per concept, a rank-1 DII v is trained at the residual output of one layer on the train pairs (x, y, x_c, y_c)
(``steer_directions``): the source is read at the last assistant-header token of the source prompt, or averaged
over its response positions (``read``), and copied into every base position after BOS. CDAS minimises the
Jensen-Shannon divergence, at every response token, between the intervened base run and the un-intervened
counterfactual run (elicitation: base x+y_c, source x_c+y_c; suppression: base x_c+y, source x+y); DAS minimises
cross-entropy on the counterfactual response tokens instead. DiffMean is the normalised difference of mean states.
At inference every direction clamps v^T h to alpha units above (elicit) or below (suppress) the midpoint of its
mean projections m+ / m- (``steer_edit``), at every position or only at answer positions (``positions``).

Every method runs at every alpha on every held-out prompt (``steer_measure``) and is measured three ways: the
concept's log-likelihood gain on the model's own concept-conditioned reference answers (judge-independent), the
fluency cost (perplexity of the steered text under the unsteered model) with instruction relevance, and the
offline judge (``judge.py``). ``steer_frontier`` turns these into curves over alpha with bootstrap intervals over
prompts, compares methods at matched fluency cost (the frontier) and gives a verdict per concept and direction.
The judge-only protocol of earlier runs stays: alpha chosen by judge score on held-out half A, scored on half B.

Why alpha is in units of rho (``factor="norm"``), not of each direction's own (m+ - m-): every method's v is a
unit vector, so rho makes one alpha the same edit strength for all of them. In units of (m+ - m-) a learned
direction that separates the prompts less (CDAS's was ~4x less than DiffMean's at layer 10) gets a ~4x weaker
edit at the same alpha. ``factor="data"`` is that other choice (alpha = 1 clamps to m+ / m-), for comparison; the
frontier compares either at matched fluency cost, where the unit of alpha no longer matters.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from diag.cdas.config import DIRECTIONS, METHODS, VECTOR_METHODS  # noqa: F401 (the steer API)
from diag.cdas.config import STEER as ANALYSIS  # noqa: F401 -- the declared value, for callers
from diag.cdas.config import SteerConfig as Config
from diag.cdas.steer_edit import clamp_target, row_clamp  # noqa: F401 (the steer API)
from diag.errors import DiagError
from diag.progress import Progress
from diag.report.sections import Guide
from diag.run_dir import Run

SCORES = ("score", "concept_score", "relevance", "fluency")


@dataclass
class Result:
    judge: str
    alphas: dict[str, float]  # "concept/method/direction" -> alpha chosen on half A (steered methods)
    rows: list[dict[str, Any]]  # per concept, method, direction: held-out half-B judge scores
    alpha_sweep: list[dict[str, Any]]  # half A: concept, method, direction, alpha, score, concept, fluency
    examples: list[dict[str, Any]]  # every half-B generation at every alpha, with its scores
    curves: dict[str, list[float]] = field(default_factory=dict)  # DII training loss per objective
    vectors: dict[str, np.ndarray] = field(default_factory=dict)  # "concept/method" -> unit vector
    projections: dict[str, dict[str, float]] = field(default_factory=dict)  # "concept/method" -> m+, m-
    residual_norm: float = 0.0  # rho: mean |h| of the train states at the layer
    numerics: dict[str, Any] = field(default_factory=dict)  # device, dtype (+ faithfulness), TF32 switch
    points: list[dict[str, Any]] = field(default_factory=list)  # curves: every measure per alpha, with intervals
    frontier: list[dict[str, Any]] = field(default_factory=list)  # best gain within the fluency budget
    verdicts: list[dict[str, Any]] = field(default_factory=list)  # CDAS vs DiffMean per concept and direction
    budget: float = 0.0  # the fluency budget the frontier used

    def chosen_examples(self) -> list[dict[str, Any]]:
        """The half-B generations at the alpha chosen on half A (prompting: its one condition)."""
        return [e for e in self.examples
                if e["alpha"] == self.alphas.get(f"{e['concept']}/{e['method']}/{e['direction']}", e["alpha"])]

    def table(self) -> dict[str, dict[str, float]]:
        """Mean held-out judge score per method and direction, averaged over concepts."""
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
        out["fluency_budget"] = self.budget
        frontier: dict[str, Any] = {}
        for f in self.frontier:
            frontier.setdefault(f["concept"], {}).setdefault(f["method"], {})[f["direction"]] = f["gain"]
        out["frontier_gain"] = frontier
        out["verdicts"] = {v["concept"]: {} for v in self.verdicts}
        for v in self.verdicts:
            out["verdicts"][v["concept"]][v["direction"]] = {k: v[k] for k in v if k not in ("concept", "direction")}
        out["elicits_any"] = any(v["methods_that_move"] for v in self.verdicts if v["direction"] == "elicit")
        out["numerics"] = self.numerics
        return out

    def save(self, run: Run) -> None:
        from diag.cdas.steer_figures import figures

        run.write_json("steer.json", {"judge": self.judge, "alphas": self.alphas, "rows": self.rows,
                                      "alpha_sweep": self.alpha_sweep, "curves": self.curves,
                                      "projections": self.projections, "table": self.table(),
                                      "residual_norm": self.residual_norm, "numerics": self.numerics,
                                      "points": self.points, "frontier": self.frontier, "verdicts": self.verdicts,
                                      "budget": self.budget})
        run.write_json("examples.json", self.examples)
        run.write_arrays("vectors", self.vectors)
        for name, fig in figures(self).items():
            run.write_figure(name, fig)

    @classmethod
    def load(cls, run: Run) -> Result:
        data = run.read_json("steer.json")
        if "points" not in data:
            raise DiagError(f"run {run.run_id} predates the fluency-frontier measures: rerun it")
        return cls(data["judge"], data["alphas"], data["rows"], data["alpha_sweep"], run.read_json("examples.json"),
                   data["curves"], run.read_arrays("vectors"), data["projections"], data["residual_norm"],
                   data.get("numerics", {}), data["points"], data["frontier"], data["verdicts"], data["budget"])


def split_pairs(config: Config) -> tuple[dict[str, list[Any]], dict[str, list[Any]]]:
    """Train pairs and the first ``eval_prompts`` held-out pairs per concept (at least 2: two judge halves)."""
    from diag.cdas.concepts import concept_specs, load_pairs

    pairs = load_pairs(config.dataset or None, config.concepts, concept_specs(config.concepts_file))
    train = {c: [p for p in pairs if p.concept == c and p.split == "train"] for c in config.concepts}
    heldout = {c: [p for p in pairs if p.concept == c and p.split == "heldout"][:config.eval_prompts]
               for c in config.concepts}
    for c in config.concepts:
        if len(heldout[c]) < 2:
            raise DiagError(f"concept {c!r} has {len(heldout[c])} held-out pairs; need at least 2")
    return train, heldout


def judge_protocol(jobs: list[dict[str, Any]], config: Config
                   ) -> tuple[dict[str, float], list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """(chosen alphas, half-A alpha sweep, half-B rows, half-B examples at every alpha): alpha chosen by judge
    score on half A; the other alphas' answers are kept so that a check can read what the choice cost."""
    def cell(c: str, m: str, d: str, half: int, alpha: float) -> list[dict[str, Any]]:
        return [j for j in jobs if (j["concept"], j["method"], j["direction"], j["half"], j["alpha"]) ==
                (c, m, d, half, alpha)]

    chosen, sweep, rows, examples = {}, [], [], []
    for c in config.concepts:
        for method in (m for m in METHODS if m in config.methods):
            for direction in DIRECTIONS:
                alpha = 0.0
                if method != "prompting":
                    entries = [{"concept": c, "method": method, "direction": direction, "alpha": a,
                                **{k: float(np.mean([j[k] for j in cell(c, method, direction, 0, a)]))
                                   for k in ("score", "concept_score", "fluency")}} for a in config.alphas]
                    sweep += entries
                    alpha = max(entries, key=lambda e: e["score"])["alpha"]  # the first alpha on ties
                    chosen[f"{c}/{method}/{direction}"] = alpha
                held = cell(c, method, direction, 1, alpha)
                rows.append({"concept": c, "method": method, "direction": direction, "alpha": alpha, "n": len(held),
                             **{k: float(np.mean([j[k] for j in held])) for k in SCORES}})
                examples += [{k: j[k] for k in ("concept", "method", "direction", "alpha", "prompt", "answer",
                                                 "perplexity", "gain", "cost", *SCORES)}
                             for a in (config.alphas if method != "prompting" else (alpha,))
                             for j in cell(c, method, direction, 1, a)]
    return chosen, sweep, rows, examples


def compute(config: Config, run: Run, progress: Progress) -> Result:
    from diag.cdas.concepts import concept_specs
    from diag.cdas.judge import DESCRIPTION
    from diag.cdas.steer_directions import build_directions
    from diag.cdas.steer_frontier import summarise, verdicts
    from diag.cdas.steer_measure import measure, plan
    from diag.zoo.lm import load_lm_numerics

    train, heldout = split_pairs(config)
    model, tokenizer, numerics = load_lm_numerics(config.model, config.device, config.dtype, config.allow_tf32)
    model.requires_grad_(False)
    directions = build_directions(model, tokenizer, config, config.objectives(), train, run, progress)
    jobs = measure(model, tokenizer, config, plan(config.concepts, config.methods, config.alphas, heldout,
                                                  concept_specs(config.concepts_file)), directions, run, progress)
    points, frontier = summarise(jobs, config.concepts, config.methods, config.fluency_budget, config.bootstrap,
                                 config.seed)
    chosen, alpha_sweep, rows, examples = judge_protocol(jobs, config)
    return Result(DESCRIPTION, chosen, rows, alpha_sweep, examples, directions.curves,
                  {k: v.cpu().numpy() for k, v in directions.vectors.items()}, directions.projections,
                  directions.residual_norm, numerics, points, frontier, verdicts(frontier, config.resolution),
                  config.fluency_budget)


def _baselines(summary: dict[str, Any]) -> list[Any]:
    from diag.report.sections import Table

    def ci(value: dict[str, float]) -> str:
        return f"{value['value']:+.3f} [{value['low']:+.3f}, {value['high']:+.3f}]"

    judge = [[m, summary.get(f"{m}_elicit"), summary.get(f"{m}_suppress")] for m in METHODS]
    verdict_rows = []
    for concept, per_direction in summary["verdicts"].items():
        for direction, v in per_direction.items():
            notes = ["budget too small: intervals wider than the resolution"] if v.get("budget_too_small") else []
            if v.get("none_within_budget"):
                notes.append("neither stays within the fluency budget at any alpha")
            if v.get("grid_limited"):
                notes.append("grid-limited: the largest alpha is within the budget")
            note = "; ".join(notes)
            verdict_rows.append([concept, direction, v.get("outcome", "-"), ci(v["cdas"]) if "cdas" in v else "-",
                                 ci(v["diffmean"]) if "diffmean" in v else "-",
                                 ", ".join(v["methods_that_move"]) or "none", note])
    frontier_rows = [[concept, method, *[ci(per[d]) if d in per else "-" for d in DIRECTIONS]]
                     for concept, by_method in summary["frontier_gain"].items() for method, per in by_method.items()]
    budget = summary["fluency_budget"]
    return [Table(f"Verdict per concept and direction: CDAS vs DiffMean at matched fluency cost (<= {budget:g} "
                  "nats/token), concept log-likelihood gain [95% bootstrap CI over prompts]",
                  ["concept", "direction", "CDAS vs DiffMean", "CDAS gain", "DiffMean gain",
                   "representation methods that move it (CI > 0)", "note"], verdict_rows),
            Table(f"Frontier: best concept log-likelihood gain within the fluency budget ({budget:g} nats/token)",
                  ["concept", "method", "elicit", "suppress"], frontier_rows),
            Table("Mean held-out judge score over concepts (0-2, harmonic mean; alpha chosen on half A)",
                  ["method", "elicit", "suppress"], judge)]


def _headline(summary: dict[str, Any]) -> list[Any]:
    from diag.report.sections import Metric

    out = [Metric("any representation method elicits a concept (gain CI > 0 within the fluency budget)",
                  summary["elicits_any"])]
    for concept, per_direction in summary["verdicts"].items():
        for direction, v in per_direction.items():
            if "outcome" in v:
                flag = " (budget too small)" if v["budget_too_small"] else ""
                flag += " (grid-limited)" if v.get("grid_limited") else ""
                out.append(Metric(f"CDAS vs DiffMean, {concept} {direction}", v["outcome"] + flag))
    return out


GUIDE = Guide(
    question="Can one rank-1 direction trained with CDAS (Jensen-Shannon distribution matching) steer a chat LM "
             "both ways, adding a concept to neutral answers and removing it from answers asked to include it, "
             "better than the DiffMean direction, a DAS (cross-entropy) direction, and prompting, at the same cost "
             "in fluency?",
    limitations=[
        ("The embedded model is SmolLM2-135M-Instruct (135M parameters): a method that fails here may work on a "
         "larger model, and the paper's comparisons are on Gemma-2; this run says what happens on this model."),
        ("The verdict uses the judge-independent concept log-likelihood gain: the change of log p(y_c) - log p(y) "
         "per token, y_c / y the model's own answers to the concept / neutral instruction (so prompting, whose "
         "prompt produced y_c, is favoured on this measure). 'Ties, budget too small' means the bootstrap "
         "intervals over held-out prompts (a handful per concept) are wider than the resolution: more prompts, "
         "not a conclusion."),
        ("Fluency cost is the perplexity of the steered answer under the unsteered model, relative to the "
         "unsteered answer; empty or repetitive answers are charged a uniform guess (log |V|). The frontier takes "
         "the best alpha within the budget in every resample, so small gains can be selection noise; it is 0 when "
         "no alpha stays within the budget."),
        ("The judge is offline and simple (lexicon + MiniLM similarity + perplexity buckets), not AxBench's LLM "
         "judge: compare methods within a run, not with published numbers. The dataset was generated by SmolLM2 "
         "itself and filtered by the same lexicon the judge uses."),
        ("CPU budget: few training steps, DAS/CDAS start from the DiffMean direction (init=diffmean) and stay near "
         "it (cos ~0.93 at layer 10 at the default 8 steps): they refine DiffMean rather than find an independent "
         "direction."),
    ],
    headline=_headline,
    baselines=_baselines,
    captions={"loss_curves": "Training loss (DAS: cross-entropy, CDAS: JSD) summed over concepts.",
              "alpha_sweep": ("Held-out half A: judge concept score and fluency against alpha (the clamp's offset "
                              "from the m+/m- midpoint), the judge protocol's alpha choice."),
              "frontier": ("Concept log-likelihood gain against fluency cost, one line per method through its "
                           "alphas (all held-out prompts, 95% bootstrap intervals); the dashed line is the fluency "
                           "budget, the origin the unsteered model. Up and left is better."),
              "curves": ("Mean over concepts of each measure against alpha: concept log-likelihood gain, fluency "
                         "cost, instruction relevance (MiniLM cosine) and the judge's 0-2 score.")},
)




def audit_config(scale: float = 1.0) -> Config:
    """Two concepts, a few training steps and one alpha at scale 1 (CPU minutes); the full study at scale >= 8.

    At scale 1 every answer is measured three ways (~4 forwards where the judge-only audit needed ~2), so the audit
    keeps the verdict's methods (CDAS, DiffMean) and prompting, leaving out the DAS and prompting+cdas ablations, with
    12-token answers. Measured on CPU (model load included): judge-only audit 54 CPU-s, this one 73 (84 with DAS)."""
    if scale >= 8:
        return Config()
    return Config(concepts=("dogs", "music"), methods=("diffmean", "cdas", "prompting"),
                  steps=max(2, int(4 * scale)), alphas=(0.2,), eval_prompts=4, max_new_tokens=12, bootstrap=200)
