"""Localisation read against the model's own preference: per corruption type, on the pairs the model prefers
and on the rest, with Wilson intervals for proportions and a consistency check over every response."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from diag import contract
from diag.credit import analysis, inputs
from diag.credit.localisation import Item, localisation_tables
from diag.credit.metrics import bootstrap_mean, bounded_mean, hit_rate
from diag.errors import DiagError
from diag.report.sections import format_value
from diag.runs import RunStore
from diag.stats import wilson


def test_proportions_at_the_bounds_get_wilson_not_a_degenerate_bootstrap() -> None:
    assert bootstrap_mean(np.ones(20))["low"] == 1.0  # what the percentile bootstrap says for 20/20
    top1 = hit_rate(np.ones(20))
    assert top1["value"] == 1.0 and top1["high"] == 1.0 and top1["n"] == 20
    assert top1["low"] == pytest.approx(0.8389, abs=1e-4)  # Wilson's 20/20 lower bound
    auroc = bounded_mean(np.ones(20), seed=0, n_boot=200)
    assert auroc["low"] == pytest.approx(top1["low"]) and auroc["interval"] == "bootstrap widened to wilson"
    middle = np.linspace(0.3, 0.7, 20)
    assert bounded_mean(middle, 0, 200) == {**bootstrap_mean(middle, 0, 200), "interval": "bootstrap"}
    assert hit_rate(np.zeros(0))["n"] == 0


def test_wilson_lives_in_one_place() -> None:
    from diag.cdas import toy

    assert toy.wilson is wilson
    assert wilson(0.5, 100) == pytest.approx({"value": 0.5, "low": 0.4038, "high": 0.5962}, abs=1e-4)


def _item(pair: int, side: str, kind: str, worst: int) -> Item:
    """A 5-token answer whose most negative r_t sits at ``worst``; the rejected side's span is token 2."""
    reward = [0.0] * 5
    reward[worst] = -1.0
    span = [k == 2 for k in range(5)] if side == "rejected" else []
    return Item(pair, side, "p", "r", list("abcde"), reward, [0.0] * 5, [0.0] * 5, span, 0, kind)


def test_tables_split_by_type_and_by_the_models_preference() -> None:
    # Pairs 0-3 "number": preferred, r_t blames the span. Pairs 4-5 "entity": not preferred (one tie), r_t
    # blames another token. Pair 6 "number": preferred but r_t misses.
    items, margins = [], {}
    for pair, kind, worst, margin in [(0, "number", 2, 1.0), (1, "number", 2, 0.5), (2, "number", 2, 2.0),
                                      (3, "number", 2, 0.1), (4, "entity", 0, -1.0), (5, "entity", 4, 0.0),
                                      (6, "number", 3, 0.3)]:
        items += [_item(pair, "chosen", kind, 0), _item(pair, "rejected", kind, worst)]
        margins[pair] = margin
    tables = localisation_tables(items, margins, ("dpo_reward", "chance"), n_boot=100, seed=0)
    assert tables["localisation_read"] == "rejected answers, from first diff"
    number, entity = tables["localisation_by_type"]["number"], tables["localisation_by_type"]["entity"]
    assert number["n_pairs"] == 5 and number["n_preferred"] == 5 and number["not_preferred"] == {}
    assert number["preference_accuracy"]["value"] == 1.0 and number["preference_accuracy"]["low"] < 0.6
    assert number["preferred"]["dpo_reward"]["top1"]["value"] == pytest.approx(0.8)
    assert entity["preference_accuracy"]["value"] == 0.0 and entity["preferred"] == {}  # the tie is not a win
    assert entity["not_preferred"]["dpo_reward"]["top1"]["value"] == 0.0
    assert entity["not_preferred"]["chance"]["top1"]["value"] == pytest.approx(0.2)
    both = tables["localisation_by_preference"]
    assert (both["n_pairs"], both["n_preferred"]) == (7, 5)
    assert both["all"]["dpo_reward"]["top1"]["value"] == pytest.approx(4 / 7)
    assert both["preferred"]["dpo_reward"]["top1"]["n"] == 5 and both["not_preferred"]["dpo_reward"]["top1"]["n"] == 2
    tables_html = analysis._split_tables(tables)
    assert [row[0] for row in tables_html[0].rows] == ["entity", "number"]
    assert tables_html[0].rows[0][4] == "-"  # no preferred entity pair: nothing to read r_t on
    # cells hold the stored numbers; the report writes them as before ("value [low, high] (n=N)", 2 decimals)
    top1 = number["all"]["dpo_reward"]["top1"]
    assert format_value(tables_html[0].rows[1][3]) == f"{top1['value']:.2f} [{top1['low']:.2f}, {top1['high']:.2f}] (n=5)"
    assert localisation_tables([_item(0, "response", "", 0)], {}, ("dpo_reward",), 10, 0) == {}


def test_jsonl_type_must_be_a_non_empty_string(tmp_path: Path) -> None:
    good = {"prompt": "Say 25K.", "chosen": "25K", "rejected": "250K", "span_chosen": [0, 2], "span_rejected": [0, 3]}
    path = tmp_path / "pairs.jsonl"
    path.write_text(json.dumps({**good, "type": "magnitude"}) + "\n" + json.dumps({**good, "type": ""}) + "\n")
    with pytest.raises(DiagError, match=":2: field 'type'"):
        inputs.read_jsonl(path)


def _pairs_file(path: Path) -> Path:
    """Held-out pairs typed by their corruption, plus two "swapped" pairs whose labels are reversed: the
    committed adapter prefers the correct answer, so it should not prefer their "chosen" one."""
    from diag.credit.data import make_pairs

    def line(prompt: str, chosen: str, rejected: str, spans: tuple, kind: str) -> str:
        return json.dumps({"prompt": prompt, "chosen": chosen, "rejected": rejected, "span_chosen": list(spans[0]),
                           "span_rejected": list(spans[1]), "type": kind})

    lines = [line(p.prompt, p.chosen, p.rejected, (p.span_chosen, p.span_rejected), p.kind)
             for p in make_pairs("heldout", 4, seed=7)]
    lines += [line(p.prompt, p.rejected, p.chosen, (p.span_rejected, p.span_chosen), "swapped")
              for p in make_pairs("heldout", 2, seed=8)]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.slow
def test_committed_adapter_reports_per_type_and_preference_conditioned_localisation(tmp_path: Path) -> None:
    path = _pairs_file(tmp_path / "typed.jsonl")
    config = analysis.Config(data=str(path), captum_steps=0, n_boot=50, device="cpu")
    _, result = contract.run(analysis.ANALYSIS, config, store=RunStore(tmp_path / "runs"))
    summary = result.summary()
    # Existing keys stay; the check now covers all 12 responses (it covered 4).
    assert {"scores", "preference_accuracy", "preference_ties", "consistency_max_abs_diff"} <= set(summary)
    assert summary["consistency_n"] == 12 and summary["consistency_max_abs_diff"] < 1e-3
    by_type = summary["localisation_by_type"]
    assert "swapped" in by_type and sum(split["n_pairs"] for split in by_type.values()) == 6
    swapped = by_type["swapped"]
    assert swapped["preference_accuracy"]["value"] == 0.0 and swapped["preference_accuracy"]["high"] > 0.5
    split = summary["localisation_by_preference"]
    assert split["n_preferred"] == 4  # the model card's 0.98 preference accuracy on held-out pairs
    preferred = split["preferred"]["dpo_reward"]["top1"]
    assert preferred["interval"] == "wilson" and preferred["value"] >= 0.75
    baselines = analysis.GUIDE.baselines(summary)
    assert baselines[0].title.startswith("Localisation per corruption type")
    assert any(m.name.startswith("rejected top1 (from first diff), pairs the model prefers")
               for m in analysis.GUIDE.headline(summary))
