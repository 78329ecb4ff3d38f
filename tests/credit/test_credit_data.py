"""Preference pairs differ in exactly one known span; errors depend on context; held-out data is unseen."""

from __future__ import annotations

from collections import Counter

from diag.credit.data import CITIES, COMPANIES, PEOPLE, TEMPLATES, make_pairs


def test_chosen_and_rejected_differ_only_inside_the_recorded_span() -> None:
    for split in ("train", "heldout"):
        for p in make_pairs(split, 200, seed=3):
            (cs, ce), (rs, re_) = p.span_chosen, p.span_rejected
            assert p.chosen[:cs] == p.rejected[:rs] and p.chosen[ce:] == p.rejected[re_:]
            assert p.chosen[cs:ce] != p.rejected[rs:re_]
            assert p.chosen[cs:ce] in p.prompt  # the chosen fact is the one the prompt states


def test_errors_are_context_dependent_and_spread_over_kinds_and_positions() -> None:
    pairs = make_pairs("train", 2000, seed=0)
    correct_values = Counter(p.chosen[slice(*p.span_chosen)] for p in pairs)
    wrong = [p.rejected[slice(*p.span_rejected)] for p in pairs if p.kind in ("entity", "unit")]
    # a wrong entity or unit is a correct answer under another prompt: no lexical "bad token" list works
    assert sum(w in correct_values for w in wrong) / len(wrong) > 0.95
    assert len({p.kind for p in pairs}) >= 3
    relative = [p.span_rejected[0] / len(p.rejected) for p in pairs]
    assert min(relative) < 0.1 and max(relative) > 0.6  # the error sits anywhere in the answer


def test_heldout_templates_and_entities_never_appear_in_training() -> None:
    assert not set(TEMPLATES["train"]) & set(TEMPLATES["heldout"])
    for pool in (PEOPLE, CITIES, COMPANIES):
        assert not set(pool["train"]) & set(pool["heldout"])
    train_text = " ".join(p.prompt + p.chosen + p.rejected for p in make_pairs("train", 300, seed=0))
    for name in PEOPLE["heldout"] + CITIES["heldout"] + COMPANIES["heldout"]:
        assert name not in train_text
    assert make_pairs("heldout", 5, seed=1) == make_pairs("heldout", 5, seed=1)  # a pure function of its inputs
