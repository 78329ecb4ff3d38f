"""Does a per-token score point at the known error? Scored responses against their spans, over sequences.

For each method (the DPO reward r_t, reference and policy surprisal, captum attributions, chance) and each side
and scope: the top-1 hit rate (Wilson interval) and the per-sequence AUROC (bootstrap, widened to Wilson near 0
or 1); per corruption type and split by whether the model prefers the chosen answer. Numpy only: a finished
run's items are re-read without a model.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

METHODS = ("dpo_reward", "reference_surprisal", "policy_surprisal", "captum_lig", "chance")
SCOPES = ("whole", "from_first_diff")
SIDES = ("rejected", "chosen")


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


