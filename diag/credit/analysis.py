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
from pathlib import Path
from typing import Any

import numpy as np

from diag.credit.config import COMMITTED_ADAPTER
from diag.credit.config import SCORE as ANALYSIS  # noqa: F401 -- the declared value, for callers
from diag.credit.config import ScoreConfig as Config
from diag.credit.sources import TRAINING_ARGS
from diag.errors import DiagError
from diag.files import check_text_file, fingerprint, read_json_lines
from diag.progress import Progress
from diag.report.sections import Guide, Interval, Metric, Table
from diag.run_dir import Run

METHODS = ("dpo_reward", "reference_surprisal", "policy_surprisal", "captum_lig", "chance")
SCOPES = ("whole", "from_first_diff")
SIDES = ("rejected", "chosen")


def committed_adapter_dir(name: str = COMMITTED_ADAPTER) -> Path:
    return Path(__file__).resolve().parent.parent / "zoo" / "assets" / name


def resolve_policy(policy: str) -> str:
    """The committed adapter by name, or whatever the user gave (a model name, directory or adapter)."""
    return str(committed_adapter_dir()) if policy == COMMITTED_ADAPTER else policy


@dataclass
class Item:
    """One scored response, with its known span when it comes from a preference pair."""

    pair: int
    side: str  # "chosen", "rejected" or "response"
    prompt: str
    response: str
    tokens: list[str]
    reward: list[float]
    policy_logp: list[float]
    reference_logp: list[float]
    span: list[bool]  # the fact's tokens from the first differing one (corrupted_tokens); empty: unknown
    first_diff: int  # index of the first token that differs from the other answer of the pair
    kind: str = ""
    seed: int = 0
    captum: list[float] = dataclasses.field(default_factory=list)


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


def corrupted_tokens(offsets: tuple[tuple[int, int], ...], span: tuple[int, int], first_diff: int) -> list[bool]:
    """Tokens of the known span ``[start, end)`` (in characters), counted from the pair's first differing token.

    Tokens before ``first_diff`` are the same in both answers after the same context, so no per-token score
    can tell them apart (in "34K" vs "32K" the "3"). The first differing token always counts: it is where the
    answers part, and when the corruption deletes characters ("35 meters" vs "3 meters") it is the only one.
    """
    start, end = span
    return [(o_start < end and o_end > start and k >= first_diff) or k == first_diff
            for k, (o_start, o_end) in enumerate(offsets)]


def first_difference(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    return min(len(a), len(b))


def method_scores(item: Item, method: str) -> np.ndarray | None:
    """Higher = more flagged: the rejected answer's worst token, the chosen answer's best one."""
    sign = -1.0 if item.side == "rejected" else 1.0
    if method == "dpo_reward":
        return sign * np.asarray(item.reward)
    if method == "captum_lig":
        return sign * np.asarray(item.captum) if item.captum else None
    if method == "reference_surprisal":
        return -np.asarray(item.reference_logp)
    if method == "policy_surprisal":
        return -np.asarray(item.policy_logp)
    raise ValueError(method)


def scope_scores(items: list[Item], side: str, scope: str, methods: tuple[str, ...], n_boot: int,
                 seed: int) -> dict[str, Any]:
    """method -> {top1, auroc} over the ``side`` answers with a known span: top-1 hit rate with a Wilson interval,
    per-sequence AUROC averaged with a bootstrap (widened to Wilson near 0 or 1)."""
    from diag.credit.metrics import auroc, bounded_mean, chance_top1, hit_rate, top1_hit

    chosen = [i for i in items if i.side == side and any(i.span)]
    out: dict[str, Any] = {}
    for method in methods:
        top1, aurocs = [], []
        for item in chosen:
            start = item.first_diff if scope == "from_first_diff" else 0
            target = np.asarray(item.span[start:])
            if not target.any():
                continue
            if method == "chance":
                top1.append(chance_top1(target))
                aurocs.append(0.5)
                continue
            scores = method_scores(item, method)
            if scores is None:  # no captum attribution for this pair
                continue
            scores = scores[start:]
            top1.append(top1_hit(scores, target))
            aurocs.append(auroc(scores, target))
        out[method] = {"top1": hit_rate(np.array(top1)), "auroc": bounded_mean(np.array(aurocs), seed, n_boot)}
    return out


def localisation(items: list[Item], methods: tuple[str, ...], n_boot: int, seed: int) -> dict[str, Any]:
    """side -> scope -> method -> {top1, auroc} with intervals over sequences."""
    return {side: {scope: scope_scores(items, side, scope, methods, n_boot, seed) for scope in SCOPES}
            for side in SIDES}


READ_AT = ("rejected", "from_first_diff")  # where localisation is read: the corrupted answer, where it departs


def preference_split(items: list[Item], pairs: set[int], preferred: set[int], methods: tuple[str, ...],
                     n_boot: int, seed: int) -> dict[str, Any]:
    """Localisation on ``pairs``: all of them, those the model prefers correctly, the rest (ties included), and
    their preference accuracy, so "the model does not disprefer this" reads apart from "r_t does not localise it".
    """
    from diag.stats import wilson

    def scores(subset: set[int]) -> dict[str, Any]:  # methods with no scored sequence are left out (no NaNs)
        block = scope_scores([i for i in items if i.pair in subset], *READ_AT, methods, n_boot, seed)
        return {method: value for method, value in block.items() if value["top1"]["n"]}

    wins = len(pairs & preferred)
    return {"n_pairs": len(pairs), "n_preferred": wins,
            "preference_accuracy": {**wilson(wins / len(pairs), len(pairs)), "n": len(pairs)},
            "all": scores(pairs), "preferred": scores(pairs & preferred), "not_preferred": scores(pairs - preferred)}


def localisation_tables(items: list[Item], margins: dict[int, float], methods: tuple[str, ...], n_boot: int,
                        seed: int) -> dict[str, Any]:
    """Per corruption type (a pair's ``kind``/``type``; "untyped" when none) and over all pairs, each split by
    whether the model prefers the chosen answer (margin >= TIE)."""
    preferred = {p for p, m in margins.items() if m >= TIE}
    with_span = {i.pair for i in items if i.side == "rejected" and any(i.span)}
    kinds: dict[str, set[int]] = {}
    for item in items:
        if item.pair in with_span and item.pair in margins:
            kinds.setdefault(item.kind or "untyped", set()).add(item.pair)
    if not kinds:
        return {}
    return {"localisation_read": f"{READ_AT[0]} answers, {READ_AT[1].replace('_', ' ')}",
            "localisation_by_type": {kind: preference_split(items, pairs, preferred, methods, n_boot, seed)
                                     for kind, pairs in sorted(kinds.items())},
            "localisation_by_preference": preference_split(items, set().union(*kinds.values()), preferred, methods,
                                                           n_boot, seed)}


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Pairs ``{prompt, chosen, rejected[, span_chosen, span_rejected, type]}`` or ``{prompt, response}``.

    ``type`` (or ``kind``, as generated pairs carry it) names the corruption; localisation is reported per type.

    Every line is checked before anything is used; the first bad line fails the whole import.
    """
    records = []
    for number, record in read_json_lines(path, "data file"):
        where = f"{path}:{number}"
        is_pair = "chosen" in record or "rejected" in record
        needed = ("prompt", "chosen", "rejected") if is_pair else ("prompt", "response")
        for key in needed:
            if not isinstance(record.get(key), str) or not record[key].strip():
                raise DiagError(f"{where}: field {key!r} must be a non-empty string")
        for key in ("span_chosen", "span_rejected"):
            if key in record:
                span, text = record[key], record["chosen" if key == "span_chosen" else "rejected"]
                if not (isinstance(span, list) and len(span) == 2 and all(isinstance(v, int) for v in span)
                        and 0 <= span[0] < span[1] <= len(text)):
                    raise DiagError(f"{where}: {key} must be [start, end) character offsets inside the text")
        for key in ("type", "kind"):
            if key in record and (not isinstance(record[key], str) or not record[key].strip()):
                raise DiagError(f"{where}: field {key!r} must be a non-empty string when given")
        records.append(record)
    return records


def load_records(config: Config) -> list[tuple[int, dict[str, Any]]]:
    """(seed, record) for every pair or response the run scores."""
    from diag.credit.data import make_pairs

    if config.data in ("heldout", "train"):  # "train": fresh draws from the training templates and entities
        return [(seed, p.to_dict()) for seed in config.seeds for p in make_pairs(config.data, config.n_pairs, seed)]
    return [(0, r) for r in read_jsonl(Path(config.data))]


def _local_fingerprint(model: str | None) -> str | None:
    """Fingerprint of the local model or adapter directory that will load (for a TRL output: the final model or
    latest checkpoint, so a new checkpoint is a new run); None for hub ids (their revision is the hub's)."""
    from diag.credit.sources import resolve

    if model is None:
        return None
    path = Path(resolve(resolve_policy(model), with_args=False).model_dir)
    return fingerprint(path) if path.exists() else None


TIE = 1e-6  # |r(chosen) - r(rejected)| below this is a tie: float32 log-probs cannot order such pairs


def preference_outcomes(margins: np.ndarray) -> dict[str, Any]:
    """Wins (r(chosen) > r(rejected)), ties and losses over pairs, each with a 95% Wilson interval.

    Ties are their own outcome: a policy equal to its reference ties every pair, which is not a policy that
    prefers the rejected answers. Wilson intervals stay informative at 0 and 1, where a percentile bootstrap of
    a proportion collapses to [0, 0] or [1, 1].
    """
    from diag.stats import wilson

    n = len(margins)
    if n == 0:
        return {"preference_accuracy": None, "preference_ties": None, "preference_counts": None}
    wins, ties = int((margins >= TIE).sum()), int((np.abs(margins) < TIE).sum())
    return {"preference_accuracy": {**wilson(wins / n, n), "n": n},
            "preference_ties": {**wilson(ties / n, n), "n": n},
            "preference_counts": {"wins": wins, "ties": ties, "losses": n - wins - ties}}


def check_pair(config: Config) -> None:
    """What the pair needs and lacks, as one line before any run exists: a reference, and a beta."""
    from diag.credit.adapters import ADAPTER_META
    from diag.credit.sources import is_adapter_dir, recorded_beta, resolve

    policy = resolve(resolve_policy(config.policy))
    adapter = is_adapter_dir(policy.model_dir)
    if config.reference is None and not adapter:
        raise DiagError(f"{config.policy!r} is not a PEFT adapter directory, so a reference model is needed "
                        "(--reference)")
    if config.beta is None and recorded_beta(policy) is None:
        raise DiagError(f"{config.policy} records no beta (no {TRAINING_ARGS} with one"
                        f"{f', no {ADAPTER_META}' if adapter else ''}); pass --beta")


def pin_inputs(config: Config) -> Config:
    """Record the hashes of the JSONL file and of local policy/reference weights in the config (and run id)."""
    data_sha256 = None
    if config.data not in ("heldout", "train"):
        path = Path(config.data)
        check_text_file(path, f"data file {path}")
        data_sha256 = fingerprint(path)
    return dataclasses.replace(config, data_sha256=data_sha256, policy_sha256=_local_fingerprint(config.policy),
                               reference_sha256=_local_fingerprint(config.reference))


def check_inputs(config: Config) -> None:
    """Read the data file through and check the pair: bad input fails before a run directory exists."""
    if config.data not in ("heldout", "train"):
        read_jsonl(Path(config.data))
    check_pair(config)


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


def compute(config: Config, run: Run, progress: Progress) -> Result:
    import torch

    from diag.credit.encoding import encode
    from diag.credit.sources import load_pair, recorded_beta, resolve

    records = load_records(config)
    from diag.device import exact_matmul

    policy_source = resolve(resolve_policy(config.policy))
    reference_source = resolve(config.reference, with_args=False) if config.reference is not None else None
    beta = config.beta if config.beta is not None else recorded_beta(policy_source)
    pair = load_pair(policy_source.model_dir, reference_source.model_dir if reference_source else None, beta,
                     config.device, config.dtype)
    tok = pair.tokenizer
    entries = []  # (pair index, side, record, text, span)
    for index, (seed, record) in enumerate(records):
        if "response" in record:
            entries.append((index, "response", seed, record, record["response"], None))
            continue
        for side in ("chosen", "rejected"):
            entries.append((index, side, seed, record, record[side], record.get(f"span_{side}")))
    encoded = [encode(tok, e[3]["prompt"], e[4]) for e in entries]
    scores = pair.score(encoded, batch_size=config.batch_size, progress=progress)
    captum = [np.zeros(0)] * len(encoded)
    if config.captum_steps > 0:
        first_pairs = {seed: sorted({e[0] for e in entries if e[2] == seed})[:config.captum_pairs]
                       for seed in config.seeds}
        with_span = [k for k, e in enumerate(entries) if e[5] is not None and e[0] in first_pairs.get(e[2], [])]
        attributions = []
        for start in range(0, len(with_span), 4):
            with exact_matmul(config.allow_tf32):
                attributions += lig_attributions(pair, [encoded[k] for k in with_span[start:start + 4]],
                                                 config.captum_steps)
            progress(min(start + 4, len(with_span)), len(with_span), "captum LayerIntegratedGradients")
        for k, a in zip(with_span, attributions, strict=True):
            captum[k] = a
    partner = {(e[0], e[1]): k for k, e in enumerate(entries)}
    items = []
    for k, (index, side, seed, record, text, span) in enumerate(entries):
        other = partner.get((index, "rejected" if side == "chosen" else "chosen"))
        diff = first_difference(encoded[k].response_ids, encoded[other].response_ids) if other is not None else 0
        items.append(Item(
            pair=index, side=side, prompt=record["prompt"], response=text,
            tokens=[tok.decode([t]) for t in encoded[k].response_ids], reward=scores[k].reward.tolist(),
            policy_logp=scores[k].policy.tolist(), reference_logp=scores[k].reference.tolist(),
            span=corrupted_tokens(encoded[k].offsets, tuple(span), diff) if span is not None else [],
            first_diff=diff,
            kind=record.get("type", record.get("kind", "")), seed=seed, captum=captum[k].tolist()))

    # consistency: sum of r_t against the sequence reward from an independent, unbatched full-logits pass, for
    # every scored response (a batching or tree-attention fault may touch only some of them)
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

    methods = tuple(m for m in METHODS if m != "captum_lig" or config.captum_steps > 0)
    metrics = localisation(items, methods, config.n_boot, seed=config.seeds[0])
    per_seed = {str(s): localisation([i for i in items if i.seed == s], methods, config.n_boot, s)
                for s in config.seeds} if len(config.seeds) > 1 else {}
    pairs = sorted({i.pair for i in items if i.side != "response"})
    reward_of = {(i.pair, i.side): float(np.sum(i.reward)) for i in items}
    margin_of = {p: reward_of[(p, "chosen")] - reward_of[(p, "rejected")] for p in pairs}
    margins = np.array([margin_of[p] for p in pairs])
    extra = {
        "policy": config.policy, "reference": config.reference or "adapter disabled", "beta": pair.beta,
        "beta_from": ("config" if config.beta is not None
                      else f"{TRAINING_ARGS} ({policy_source.training_args['class']})"
                      if "beta" in policy_source.training_args else "adapter metadata"),
        "policy_loaded": f"{policy_source.model_dir}: {policy_source.chosen}",
        "trl_training_args": policy_source.training_args, "policy_global_step": policy_source.global_step,
        "reference_loaded": f"{reference_source.model_dir}: {reference_source.chosen}" if reference_source else None,
        "numerics": {**pair.numerics, "allow_tf32": config.allow_tf32},
        "n_pairs": len(pairs), "n_responses": len(items), "seeds": list(config.seeds),
        **preference_outcomes(margins),
        "consistency_max_abs_diff": max(check) if check else None,
        "consistency_n": len(check),
        "interval": ("top-1 hit rates: 95% Wilson over sequences; AUROC: 95% percentile bootstrap over sequences, "
                     "widened to Wilson within 0.1 of 0 or 1 (all seeds pooled; per_seed in metrics.json); "
                     "preference outcomes: 95% Wilson intervals over pairs"),
        **localisation_tables(items, margin_of, methods, config.n_boot, config.seeds[0]),
    }
    return Result(items, metrics, per_seed, extra)


def audit_config(scale: float = 1.0) -> Config:
    """Score held-out pairs with the committed adapter: 3 seeds, a few pairs each, a small bootstrap."""
    return Config(n_pairs=max(2, int(4 * scale)), captum_steps=max(4, int(4 * scale)),
                  captum_pairs=max(1, int(scale)), n_boot=200)


def _headline(summary: dict[str, Any]) -> list[Metric]:
    out = []
    if summary.get("preference_accuracy"):
        acc = summary["preference_accuracy"]
        out.append(Metric("preference accuracy (r(chosen) > r(rejected))", acc["value"], acc["low"], acc["high"]))
        ties = summary.get("preference_ties")
        if ties and ties["value"] > 0:
            out.append(Metric("ties (|r(chosen) - r(rejected)| < 1e-6)", ties["value"], ties["low"], ties["high"]))
    for side, scope in (("rejected", "whole"), ("rejected", "from_first_diff"), ("chosen", "whole")):
        block = summary.get("scores", {}).get(side, {}).get(scope, {}).get("dpo_reward")
        if block:
            for metric in ("top1", "auroc"):
                m = block[metric]
                out.append(Metric(f"{side} {metric} ({scope.replace('_', ' ')})", m["value"], m["low"], m["high"]))
    split = summary.get("localisation_by_preference") or {}
    for subset, words in (("preferred", "pairs the model prefers"), ("not_preferred", "pairs it does not prefer")):
        block = split.get(subset, {}).get("dpo_reward")
        if block:
            m = block["top1"]
            out.append(Metric(f"rejected top1 (from first diff), {words} (n={m['n']})", m["value"], m["low"],
                              m["high"]))
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
