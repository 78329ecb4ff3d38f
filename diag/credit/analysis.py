"""Which tokens carry a DPO model's preference? Per-token implicit reward r_t, scored against known error spans.

For each held-out preference pair (chosen and rejected answers differing in one known span) we compute
r_t = beta * (log pi - log pi_ref) on every response token and ask whether the most negative r_t of the
rejected answer falls in the corrupted span (top-1 hit), how well -r_t separates span tokens from the rest
(AUROC, per sequence, averaged), and the mirror image on the chosen answer. The same scores are computed for
a chance ranking, reference surprisal (-log pi_ref), policy surprisal (-log pi) and captum's
LayerIntegratedGradients of the sequence reward onto the input tokens, on the whole answer and on the tokens
from the first differing token onward (shared prefix tokens get no direct DPO gradient).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from diag.credit.config import SCORE as ANALYSIS  # noqa: F401 -- the declared value, for callers
from diag.credit.config import ScoreConfig as Config
from diag.credit.inputs import load_records, prompt_text, resolve_policy
from diag.credit.localisation import (
    METHODS,
    SCOPES,
    SIDES,
    Item,
    corrupted_tokens,
    first_difference,
    localisation,
    localisation_tables,
    preference_outcomes,
)
from diag.credit.sources import TRAINING_ARGS
from diag.progress import Progress
from diag.report.sections import UNIT, Guide, Interval, Metric, Table
from diag.run_dir import Run


@dataclass
class Result:
    items: list[Item]
    metrics: dict[str, Any]  # side -> scope -> method -> {"top1": ci, "auroc": ci}
    per_seed: dict[str, Any]
    extra: dict[str, Any]  # beta, preference accuracy, consistency

    def summary(self) -> dict[str, Any]:
        return {**self.extra, "scores": self.metrics}

    def save(self, run: Run) -> None:
        from diag.credit.aggregates import aggregates, figures
        from diag.credit.heatmap import heatmap_html

        run.write_json("items.json", [dataclasses.asdict(i) for i in self.items])
        run.write_json("metrics.json", {"metrics": self.metrics, "per_seed": self.per_seed, "extra": self.extra})
        run.write_text("heatmap.html", heatmap_html(self.items, self.extra["beta"]))
        run.write_json("aggregates.json", aggregates(self.items))
        for name, fig in figures(self.items).items():
            run.write_figure(name, fig)

    @classmethod
    def load(cls, run: Run) -> Result:
        stored = run.read_json("metrics.json")
        items = [Item(**i) for i in run.read_json("items.json")]
        return cls(items, stored["metrics"], stored["per_seed"], stored["extra"])


def lig_attributions(pair, encoded: list, steps: int, batch: int = 4) -> list[np.ndarray]:
    """captum LayerIntegratedGradients of the sequence reward onto the input embeddings, response tokens only.

    The baseline keeps the prompt and replaces each response token by the pad token. A token's attribution
    is taken where it is an input (the reward r_t scores it where it is the output one position earlier).
    """
    import torch
    from captum.attr import LayerIntegratedGradients

    from diag.credit.batches import collate, response_logps

    def sequence_reward(ids, attention, positions, targets, mask):
        policy = (response_logps(pair.policy, ids, attention, positions, targets) * mask).sum(-1)
        with pair.as_reference() as reference:
            ref = (response_logps(reference, ids, attention, positions, targets) * mask).sum(-1)
        return pair.beta * (policy - ref)

    layers = [pair.policy.get_input_embeddings()]
    if pair.reference is not None:  # two models: interpolate both inputs, so equal models attribute exactly 0
        layers.append(pair.reference.get_input_embeddings())
    lig = LayerIntegratedGradients(sequence_reward, layers)
    out = []
    for start in range(0, len(encoded), batch):
        chunk = encoded[start:start + batch]
        ids, attention, positions, targets, mask = collate(chunk, pair.tokenizer.pad_token_id, pair.device)
        n = targets.shape[1]
        baseline = ids.clone()
        baseline[:, -n:] = torch.where(mask.bool(), pair.tokenizer.pad_token_id, ids[:, -n:])
        attributions = lig.attribute(ids, baselines=baseline, additional_forward_args=(attention, positions, targets,
                                                                                       mask), n_steps=steps)
        per_token = sum(a.sum(-1) for a in attributions).detach()  # [batch, width], summed over layers
        for row, e in enumerate(chunk):
            k = len(e.response_ids)
            out.append(per_token[row, -k:].double().cpu().numpy())  # attribution of each response token as input
    return out


class _Entry(NamedTuple):
    """One response to score: ``side`` is "chosen", "rejected" or "response"; ``span`` its known error, if any."""

    pair: int
    side: str
    seed: int
    record: dict[str, Any]
    text: str
    span: list[int] | None


def compute(config: Config, run: Run, progress: Progress) -> Result:
    from diag.credit.encoding import encode

    entries = _entries(load_records(config))
    policy_source, reference_source, pair = _load_pair(config)
    encoded = [encode(pair.tokenizer, e.record["prompt"], e.text) for e in entries]
    scores = pair.score(encoded, batch_size=config.batch_size, progress=progress)
    captum = _captum(config, pair, entries, encoded, progress)
    items = _items(entries, encoded, scores, captum, pair.tokenizer)
    differences = _consistency(pair, encoded, items, progress)
    methods = tuple(m for m in METHODS if m != "captum_lig" or config.captum_steps > 0)
    metrics = localisation(items, methods, config.n_boot, seed=config.seeds[0])
    per_seed = {str(s): localisation([i for i in items if i.seed == s], methods, config.n_boot, s)
                for s in config.seeds} if len(config.seeds) > 1 else {}
    extra = {**_provenance(config, pair, policy_source, reference_source),
             **_preference_and_types(config, items, methods, differences)}
    return Result(items, metrics, per_seed, extra)


def _entries(records: list[tuple[int, dict[str, Any]]]) -> list[_Entry]:
    """Each pair's two answers (or a lone response), in record order."""
    entries = []
    for index, (seed, record) in enumerate(records):
        if "response" in record:
            entries.append(_Entry(index, "response", seed, record, record["response"], None))
            continue
        for side in ("chosen", "rejected"):
            entries.append(_Entry(index, side, seed, record, record[side], record.get(f"span_{side}")))
    return entries


def _load_pair(config: Config) -> tuple[Any, Any, Any]:
    """The policy's and reference's sources (what was loaded, from where) and the loaded model pair."""
    from diag.credit.sources import load_pair, recorded_beta, resolve

    policy_source = resolve(resolve_policy(config.policy))
    reference_source = resolve(config.reference, with_args=False) if config.reference is not None else None
    beta = config.beta if config.beta is not None else recorded_beta(policy_source)
    pair = load_pair(policy_source.model_dir, reference_source.model_dir if reference_source else None, beta,
                     config.device, config.dtype)
    return policy_source, reference_source, pair


def _captum(config: Config, pair, entries: list[_Entry], encoded: list, progress: Progress) -> list[np.ndarray]:
    """captum attributions for the answers with a span among each seed's first ``captum_pairs`` pairs; empty
    arrays elsewhere (and everywhere when ``captum_steps`` is 0)."""
    from diag.device import exact_matmul

    captum = [np.zeros(0)] * len(encoded)
    if config.captum_steps <= 0:
        return captum
    first_pairs = {seed: sorted({e.pair for e in entries if e.seed == seed})[:config.captum_pairs]
                   for seed in config.seeds}
    with_span = [k for k, e in enumerate(entries) if e.span is not None and e.pair in first_pairs.get(e.seed, [])]
    attributions = []
    for start in range(0, len(with_span), 4):
        with exact_matmul(config.allow_tf32):
            attributions += lig_attributions(pair, [encoded[k] for k in with_span[start:start + 4]],
                                             config.captum_steps)
        progress(min(start + 4, len(with_span)), len(with_span), "captum LayerIntegratedGradients")
    for k, a in zip(with_span, attributions, strict=True):
        captum[k] = a
    return captum


def _items(entries: list[_Entry], encoded: list, scores: list, captum: list[np.ndarray], tok) -> list[Item]:
    """The scored responses, each with its span counted from where it departs from the pair's other answer."""
    partner = {(e.pair, e.side): k for k, e in enumerate(entries)}
    items = []
    for k, (index, side, seed, record, text, span) in enumerate(entries):
        other = partner.get((index, "rejected" if side == "chosen" else "chosen"))
        diff = first_difference(encoded[k].response_ids, encoded[other].response_ids) if other is not None else 0
        items.append(Item(
            pair=index, side=side, prompt=prompt_text(record["prompt"]), response=text,
            tokens=[tok.decode([t]) for t in encoded[k].response_ids], reward=scores[k].reward.tolist(),
            policy_logp=scores[k].policy.tolist(), reference_logp=scores[k].reference.tolist(),
            span=corrupted_tokens(encoded[k].offsets, tuple(span), diff) if span is not None else [],
            first_diff=diff,
            kind=record.get("type", record.get("kind", "")), seed=seed, captum=captum[k].tolist()))
    return items


def _consistency(pair, encoded: list, items: list[Item], progress: Progress) -> list[float]:
    """|sum of r_t - the sequence reward| from an independent, unbatched full-logits pass, for every scored
    response (a batching or tree-attention fault may touch only some of them)."""
    import torch

    check = []
    for k in range(len(encoded)):
        progress(k, len(encoded), "consistency check")
        ids = torch.tensor([encoded[k].ids], device=pair.device)
        n = len(encoded[k].response_ids)
        with torch.no_grad():
            policy = torch.log_softmax(pair.policy(input_ids=ids).logits[0, -n - 1:-1].double(), -1)
            with pair.as_reference() as reference:
                ref = torch.log_softmax(reference(input_ids=ids).logits[0, -n - 1:-1].double(), -1)
        targets = ids[0, -n:]
        sequence = pair.beta * (policy.gather(-1, targets[:, None]).sum() - ref.gather(-1, targets[:, None]).sum())
        check.append(abs(float(sequence) - float(np.sum(items[k].reward))))
    return check


def _provenance(config: Config, pair, policy_source, reference_source) -> dict[str, Any]:
    """What was scored with what: the models as loaded, beta and where it came from, the numerics."""
    return {
        "policy": config.policy, "reference": config.reference or "adapter disabled", "beta": pair.beta,
        "beta_from": ("config" if config.beta is not None
                      else f"{TRAINING_ARGS} ({policy_source.training_args['class']})"
                      if "beta" in policy_source.training_args else "adapter metadata"),
        "policy_loaded": f"{policy_source.model_dir}: {policy_source.chosen}",
        "trl_training_args": policy_source.training_args, "policy_global_step": policy_source.global_step,
        "reference_loaded": f"{reference_source.model_dir}: {reference_source.chosen}" if reference_source else None,
        "numerics": {**pair.numerics, "allow_tf32": config.allow_tf32},
    }


def _preference_and_types(config: Config, items: list[Item], methods: tuple[str, ...],
                          differences: list[float]) -> dict[str, Any]:
    """Counts, preference outcomes over pairs, the consistency check, and localisation per corruption type."""
    pairs = sorted({i.pair for i in items if i.side != "response"})
    reward_of = {(i.pair, i.side): float(np.sum(i.reward)) for i in items}
    margin_of = {p: reward_of[(p, "chosen")] - reward_of[(p, "rejected")] for p in pairs}
    return {
        "n_pairs": len(pairs), "n_responses": len(items), "seeds": list(config.seeds),
        **preference_outcomes(np.array([margin_of[p] for p in pairs])),
        "consistency_max_abs_diff": max(differences) if differences else None,
        "consistency_n": len(differences),
        "interval": ("top-1 hit rates: 95% Wilson over sequences; AUROC: 95% percentile bootstrap over sequences, "
                     "widened to Wilson within 0.1 of 0 or 1 (all seeds pooled; per_seed in metrics.json); "
                     "preference outcomes: 95% Wilson intervals over pairs"),
        **localisation_tables(items, margin_of, methods, config.n_boot, config.seeds[0]),
    }


def audit_config(scale: float = 1.0) -> Config:
    """Score held-out pairs with the committed adapter: 3 seeds, a few pairs each, a small bootstrap."""
    return Config(n_pairs=max(2, int(4 * scale)), captum_steps=max(4, int(4 * scale)),
                  captum_pairs=max(1, int(scale)), n_boot=200)


def _headline(summary: dict[str, Any]) -> list[Metric]:
    out = []
    if summary.get("preference_accuracy"):
        acc = summary["preference_accuracy"]
        out.append(Metric("preference accuracy (r(chosen) > r(rejected))", acc["value"], acc["low"], acc["high"],
                          bounds=UNIT))
        ties = summary.get("preference_ties")
        if ties and ties["value"] > 0:
            out.append(Metric("ties (|r(chosen) - r(rejected)| < 1e-6)", ties["value"], ties["low"], ties["high"],
                              bounds=UNIT))
    for side, scope in (("rejected", "whole"), ("rejected", "from_first_diff"), ("chosen", "whole")):
        block = summary.get("scores", {}).get(side, {}).get(scope, {}).get("dpo_reward")
        if block:
            for metric in ("top1", "auroc"):
                m = block[metric]
                out.append(Metric(f"{side} {metric} ({scope.replace('_', ' ')})", m["value"], m["low"], m["high"],
                                  bounds=UNIT))
    split = summary.get("localisation_by_preference") or {}
    for subset, words in (("preferred", "pairs the model prefers"), ("not_preferred", "pairs it does not prefer")):
        block = split.get(subset, {}).get("dpo_reward")
        if block:
            m = block["top1"]
            out.append(Metric(f"rejected top1 (from first diff), {words} (n={m['n']})", m["value"], m["low"],
                              m["high"], bounds=UNIT))
    out.append(Metric("max |sum r_t - sequence reward|", summary.get("consistency_max_abs_diff")))
    return out


def _interval(block: dict[str, Any], digits: int, with_n: bool) -> Interval:
    return Interval(block["value"], block["low"], block["high"], block["n"] if with_n else None, digits)


def _cell(block: dict[str, Any] | None) -> Interval | str:
    if not block or not block.get("n"):
        return "-"
    return _interval(block, digits=2, with_n=True)


def _split_tables(summary: dict[str, Any]) -> list[Table]:
    """Per corruption type and per preference: where r_t fails because the model does not disprefer the error."""
    read = summary.get("localisation_read", "")
    by_type = summary.get("localisation_by_type") or {}
    rows = []
    cells = (("all", "dpo_reward"), ("preferred", "dpo_reward"), ("not_preferred", "dpo_reward"),
             ("all", "reference_surprisal"), ("all", "policy_surprisal"), ("all", "chance"))
    for kind, split in by_type.items():
        rows.append([kind, split["n_pairs"], _cell(split["preference_accuracy"])]
                    + [_cell(split[subset].get(method, {}).get("top1")) for subset, method in cells])
    tables = []
    if rows:
        tables.append(Table(f"Localisation per corruption type ({read}): top-1 hit rate [95% Wilson]",
                            ["type", "pairs", "preference accuracy", "r_t, all pairs", "r_t, preferred pairs",
                             "r_t, not preferred", "reference surprisal", "policy surprisal", "chance"], rows))
    split = summary.get("localisation_by_preference")
    if split:
        rows = [[method] + [_cell(split[subset].get(method, {}).get(metric)) for metric in ("top1", "auroc")
                            for subset in ("all", "preferred", "not_preferred")] for method in split["all"]]
        tables.append(Table(f"Localisation on the pairs the model prefers vs the rest ({read}; "
                            f"{split['n_preferred']} of {split['n_pairs']} pairs preferred)",
                            ["method"] + [f"{metric}, {subset.replace('_', ' ')}" for metric in ("top-1", "AUROC")
                                          for subset in ("all", "preferred", "not_preferred")], rows))
    return tables


def _baselines(summary: dict[str, Any]) -> list[Table]:
    tables = []
    for side in SIDES:
        for scope in SCOPES:
            block = summary.get("scores", {}).get(side, {}).get(scope)
            if not block:
                continue
            rows = [[method] + [_interval(block[method][m], digits=3, with_n=False) for m in ("top1", "auroc")]
                    + [block[method]["top1"]["n"]] for method in block]
            tables.append(Table(f"{side} answers, {scope.replace('_', ' ')}: localisation of the known span",
                                ["method", "top-1 hit rate [95% CI]", "AUROC [95% CI]", "sequences"], rows))
    return _split_tables(summary) + tables


GUIDE = Guide(
    question=("Does the per-token DPO implicit reward r_t = beta*log(pi/pi_ref) point at the tokens a preference "
              "is about? Scored on held-out pairs whose answers differ in one known span, against chance, "
              "surprisal and integrated-gradients baselines."),
    limitations=[
        ("The committed adapter is a small LoRA on SmolLM2-135M trained briefly on CPU on synthetic fact-"
        "restatement pairs; scores describe this setting, not DPO models in general."),
        ("Per-token rewards are identified only up to potential-based shaping: r_t on tokens before the first "
        "difference gets no direct DPO gradient, so read the from-first-difference scores for localisation."),
        ("AUROC is computed per sequence and averaged, with a percentile bootstrap over sequences (widened to the "
         "Wilson interval near 0 or 1); top-1 hit rates are proportions with Wilson intervals."),
        ("A DPO model can only localise errors it disprefers: read r_t's localisation on the pairs it prefers "
         "(per-type table) apart from those it does not, where a miss says nothing about r_t."),
        "Captum's attribution is taken at a token's input position, r_t at its output position.",
    ],
    headline=_headline,
    baselines=_baselines,
)
