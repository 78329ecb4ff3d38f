"""Every steered condition of ``cdas-steer`` on every held-out prompt: generate, then measure without the judge.

One job = (concept, method, direction, alpha, held-out prompt). Besides the steered methods there is one
unsteered job per concept, direction and prompt (method ``"none"``: the base prompt, no edit), which every other
job is measured against:

- **concept log-likelihood gain** (judge-independent, teacher-forced): the reference continuations are the
  model's own answers from the dataset, y_c (to the concept instruction x_c: concept-conditioned) and y (to the
  neutral x). contrast = mean token log p(y_c | prompt, edit) - mean token log p(y | prompt, edit); gain =
  contrast - contrast of the unsteered base prompt, sign-flipped for suppression, so positive always means "moved
  the way asked" and a model that merely breaks (both references less likely) gains nothing. The base prompt is x
  to elicit and x_c to suppress; prompting changes the prompt, steering the residual.
- **fluency cost**: mean token NLL of the generated answer under the *unsteered* model minus that of the
  unsteered answer, nats per token (log perplexity ratio), both read as answers to the target instruction (x_c
  to elicit, x to suppress: what a successful edit should answer), so that reaching the concept is not itself
  charged as disfluency. A degenerate answer (empty or mostly repeats, ``judge.degenerate``), which perplexity
  would call fluent, is charged the NLL of a uniform guess, log |V|. The judge's fluency bucket reads the same NLL.
- **instruction relevance**: MiniLM cosine between x and the answer; and the offline judge's 0-2 scores.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from diag.cdas.concepts import Concept, Pair, concept_specs
from diag.cdas.config import DIRECTIONS, PROMPTED, VECTOR_METHODS
from diag.cdas.steer_directions import Directions
from diag.cdas.steer_edit import alpha_unit, clamp_target, row_clamp
from diag.progress import Progress
from diag.run_dir import Run

UNSTEERED = "none"
CHUNK = 32  # jobs per batch: 64 teacher-forced rows keep the float32 logits under ~1 GB
MEASURED = ("answer", "nll", "contrast", "score", "concept_score", "relevance", "fluency", "perplexity",
            "relevance_sim", "degenerate")


def prompt_for(pair: Pair, method: str, direction: str, phrase: str) -> str:
    """What the model is asked: the base prompt (x to elicit, x_c to suppress) unless a prompting method asks
    (``phrase``: how an instruction names the pair's concept)."""
    if method in PROMPTED:
        if direction == "elicit":
            return pair.concept_instruction
        return f"{pair.concept_instruction} Actually, do not mention {phrase} at all."
    return pair.instruction if direction == "elicit" else pair.concept_instruction


def plan(concepts: tuple[str, ...], methods: tuple[str, ...], alphas: tuple[float, ...],
         heldout: dict[str, list[Pair]], specs: Mapping[str, Concept]) -> list[dict[str, Any]]:
    """Every job: the unsteered base, then each method at each alpha (prompting: once, no edit) on each prompt."""
    jobs = []
    for c in concepts:
        cut = len(heldout[c]) // 2
        for method in (UNSTEERED, *methods):
            for direction in DIRECTIONS:
                for alpha in (alphas if method in (*VECTOR_METHODS, "prompting+cdas") else (0.0,)):
                    for i, p in enumerate(heldout[c]):
                        jobs.append({"concept": c, "method": method, "direction": direction, "alpha": alpha,
                                     "index": i, "half": 0 if i < cut else 1, "instruction": p.instruction,
                                     "prompt": prompt_for(p, method, direction, specs[c].phrase),
                                     "concept_response": p.concept_response,
                                     "target": p.concept_instruction if direction == "elicit" else p.instruction,
                                     "response": p.response})
    return jobs


def edit_for(jobs: list[dict[str, Any]], directions: Directions, factor: str, width: int
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-job unit vector (zero: no edit) and clamp target."""
    vectors, targets = [], []
    for j in jobs:
        method = "cdas" if j["method"] == "prompting+cdas" else j["method"]
        key = f"{j['concept']}/{method}"
        if key not in directions.vectors:
            vectors.append(torch.zeros(width))
            targets.append(0.0)
            continue
        m = directions.projections[key]
        unit = alpha_unit(factor, m["m_plus"], m["m_minus"], directions.residual_norm)  # type: ignore[arg-type]
        vectors.append(directions.vectors[key])
        targets.append(clamp_target(m["m_plus"], m["m_minus"], j["direction"], j["alpha"], unit))
    return torch.stack(vectors), torch.tensor(targets)


def reference_contrast(model: torch.nn.Module, tokenizer: object, layer: int, jobs: list[dict[str, Any]],
                       vectors: torch.Tensor, targets: torch.Tensor, positions: str) -> list[float]:
    """Per job, mean token log-likelihood of y_c minus that of y after the job's prompt, under its edit."""
    from diag.cdas.lm import encode, hidden_hook, response_nll

    prompts = [j["prompt"] for j in jobs] * 2
    references = [j["concept_response"] for j in jobs] + [j["response"] for j in jobs]
    first = None
    if positions == "generated":  # right-padded rows: edit from the last prompt token on
        first = torch.tensor(encode(tokenizer, prompts, references, torch.device("cpu")).prompt_lens) - 1
    fn = row_clamp(vectors.repeat(2, 1), targets.repeat(2), first)
    with hidden_hook(model, layer, fn, skip_first=torch.zeros(len(prompts), dtype=torch.long)):
        nll = response_nll(model, tokenizer, prompts, references, batch_size=len(prompts))
    return [nll[k + len(jobs)] - nll[k] for k in range(len(jobs))]


def measure_chunk(model: torch.nn.Module, tokenizer: object, config: Any, jobs: list[dict[str, Any]],
                  directions: Directions) -> None:
    """Generate each job's answer under its edit and fill in its measurements (in place)."""
    from diag.cdas.judge import score
    from diag.cdas.lm import generate, response_nll

    vectors, targets = edit_for(jobs, directions, config.factor, model.config.hidden_size)
    first = torch.full((len(jobs),), -1) if config.positions == "generated" else None
    answers = generate(model, tokenizer, [j["prompt"] for j in jobs], max_new_tokens=config.max_new_tokens,
                       layer=config.layer, fn=row_clamp(vectors, targets, first))
    nll = response_nll(model, tokenizer, [j["target"] for j in jobs], answers)
    contrast = reference_contrast(model, tokenizer, config.layer, jobs, vectors, targets, config.positions)
    for j, a, n, k in zip(jobs, answers, nll, contrast, strict=True):
        j.update(answer=a, nll=n, contrast=k)
    specs = concept_specs(config.concepts_file)
    for c in {j["concept"] for j in jobs}:
        for direction in DIRECTIONS:
            idx = [k for k, j in enumerate(jobs) if j["concept"] == c and j["direction"] == direction]
            if idx:
                scores = score(specs[c], [jobs[k]["instruction"] for k in idx], [jobs[k]["answer"] for k in idx],
                               [jobs[k]["nll"] for k in idx], suppress=direction == "suppress")
                for pos, k in enumerate(idx):
                    jobs[k].update({name: float(values[pos]) for name, values in scores.items()})


def measure(model: torch.nn.Module, tokenizer: object, config: Any, jobs: list[dict[str, Any]],
            directions: Directions, run: Run, progress: Progress) -> list[dict[str, Any]]:
    """Measure every job in chunks, checkpointing after each so a killed run resumes at the next chunk."""
    saved = run.load_checkpoint() or {}
    done: list[dict[str, Any]] = saved.get("measured", [])
    for start in range(len(done), len(jobs), CHUNK):
        chunk = [dict(j) for j in jobs[start:start + CHUNK]]
        measure_chunk(model, tokenizer, config, chunk, directions)
        done += chunk
        run.save_checkpoint({**(run.load_checkpoint() or {}), "measured": done})
        progress(len(done), len(jobs), "generate and measure")
    return derive(done, len(tokenizer))  # type: ignore[arg-type]


def derive(jobs: list[dict[str, Any]], vocab_size: int) -> list[dict[str, Any]]:
    """Gain and fluency cost of each job against the unsteered job on the same concept, direction and prompt."""
    base = {(j["concept"], j["direction"], j["index"]): j for j in jobs if j["method"] == UNSTEERED}
    uniform = math.log(vocab_size)

    def answer_nll(j: dict[str, Any]) -> float:
        return uniform if j["degenerate"] else j["nll"]

    for j in jobs:
        b = base[(j["concept"], j["direction"], j["index"])]
        sign = 1.0 if j["direction"] == "elicit" else -1.0
        j["gain"] = sign * (j["contrast"] - b["contrast"])
        j["cost"] = answer_nll(j) - answer_nll(b)
    return jobs
