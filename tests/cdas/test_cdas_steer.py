"""Steering pipeline on the real SmolLM2 with a tiny budget: shapes, judge ranges, and the direction of effect."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from diag import contract
from diag.cdas import steer
from diag.cdas.concepts import load_pairs
from diag.cdas.judge import harmonic_mean
from diag.errors import DiagError


@pytest.mark.slow
def test_steer_tiny_budget_end_to_end(smollm2) -> None:
    config = steer.Config(concepts=("dogs",), steps=2, alphas=(0.2,), eval_prompts=2, max_new_tokens=8)
    _, result = contract.run(steer.ANALYSIS, config)
    assert {(r["method"], r["direction"]) for r in result.rows} == {
        (m, d) for m in steer.METHODS for d in steer.DIRECTIONS}
    for r in result.rows:
        assert 0.0 <= r["score"] <= 2.0 and r["n"] == 1
    assert len(result.curves["cdas"]) == 2 and all(np.isfinite(result.curves["cdas"]))
    for key, vector in result.vectors.items():
        assert np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-5), key
    # Direction of effect: clamping the CDAS direction to m+ rather than m- raises the probability of the
    # concept's words as the first answer token of a neutral prompt.
    from diag.cdas.lm import chat_prompt, hidden_hook

    model, tokenizer = smollm2
    v = torch.tensor(result.vectors["dogs/cdas"])
    proj = result.projections["dogs/cdas"]
    words = [tokenizer(w, add_special_tokens=False)["input_ids"][0] for w in ("Dogs", " dogs", "Dog", " dog")]
    ids = tokenizer(chat_prompt(tokenizer, "Describe a relaxing weekend."), return_tensors="pt",
                    add_special_tokens=False)["input_ids"]
    mass = {}
    for name, value in (("plus", proj["m_plus"]), ("minus", proj["m_minus"])):
        with torch.no_grad(), hidden_hook(model, config.layer, lambda h, t=value: h + (t - h @ v)[..., None] * v,
                                          skip_first=torch.zeros(1, dtype=torch.long)):
            probs = model(input_ids=ids).logits[0, -1].softmax(-1)
        mass[name] = float(probs[words].sum())
    assert mass["plus"] > mass["minus"], mass
    # The continuous measures: every condition on every held-out prompt, intervals around their points.
    assert {(p["method"], p["direction"]) for p in result.points} == {
        (m, d) for m in ("none", *steer.METHODS) for d in steer.DIRECTIONS}
    for p in result.points:
        assert p["n"] == 2
        for measure in ("gain", "cost", "relevance_sim", "score"):
            assert p[measure]["low"] <= p[measure]["value"] + 1e-12 <= p[measure]["high"] + 2e-12, (p, measure)
        if p["method"] == "none":
            assert p["gain"]["value"] == 0.0 and p["cost"]["value"] == 0.0
    summary = result.summary()
    for direction in steer.DIRECTIONS:
        v = summary["verdicts"]["dogs"][direction]
        assert v["outcome"] in ("wins", "ties", "loses") and isinstance(v["budget_too_small"], bool)
        assert v["cdas"] == summary["frontier_gain"]["dogs"]["cdas"][direction]
    assert isinstance(summary["elicits_any"], bool)
    verdict_table, frontier_table, judge_table = steer.GUIDE.baselines(summary)
    assert [row[:2] for row in verdict_table.rows] == [["dogs", "elicit"], ["dogs", "suppress"]]
    assert len(frontier_table.rows) == len(steer.METHODS) and len(judge_table.rows) == len(steer.METHODS)
    from diag.runs import RunStore

    (info,) = RunStore().list(analysis=steer.ANALYSIS.name)
    run = RunStore().get(info.run_id)
    assert {p.stem for p in run.figure_paths()} == {"loss_curves", "alpha_sweep", "frontier", "curves"}
    # The app's live panel: the run's own clamp, greedy answers with and without it.
    from diag.cdas.steer_live import live_target, steer_prompt

    live = steer_prompt(run.config, result, "dogs", "cdas", "elicit", 1.0, "Describe a relaxing weekend.", 4)
    assert live.target == live_target(result, "dogs", "cdas", "elicit", 1.0)
    assert live.target == pytest.approx(steer.clamp_target(proj["m_plus"], proj["m_minus"], "elicit", 1.0,
                                                           result.residual_norm))
    assert live.plain and live.plain != live.steered  # one residual norm above the midpoint changes the answer
    with pytest.raises(DiagError, match="empty prompt"):
        steer_prompt(run.config, result, "dogs", "cdas", "elicit", 0.2, "  ", 4)


def test_harmonic_mean_is_zero_when_any_part_is_zero() -> None:
    assert harmonic_mean(np.array([[2.0, 2.0, 2.0], [1.0, 2.0, 0.0], [1.0, 2.0, 2.0]])).tolist() == pytest.approx(
        [2.0, 0.0, 1.5])


def test_row_clamp_sets_each_rows_projection_and_leaves_zero_rows_alone() -> None:
    torch.manual_seed(0)
    h = torch.randn(3, 5, 8, dtype=torch.float64)
    v = torch.nn.functional.normalize(torch.randn(3, 8, dtype=torch.float64), dim=-1)
    v[2] = 0  # a prompting row: no vector
    targets = torch.tensor([1.5, -2.0, 7.0], dtype=torch.float64)
    out = steer.row_clamp(v, targets)(h)
    torch.testing.assert_close(out[:2] @ v[:2].unsqueeze(-1), targets[:2].view(2, 1, 1).expand(2, 5, 1))
    # Only the component along v changes.
    rest = out[:2] - (out[:2] @ v[:2].unsqueeze(-1)) * v[:2].unsqueeze(1)
    torch.testing.assert_close(rest, h[:2] - (h[:2] @ v[:2].unsqueeze(-1)) * v[:2].unsqueeze(1))
    assert torch.equal(out[2], h[2])


def test_dataset_errors_are_one_line(tmp_path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(DiagError, match="is empty"):
        load_pairs(empty)
    broken = tmp_path / "broken.jsonl"
    broken.write_text("{not json\n")
    with pytest.raises(DiagError, match="broken.jsonl:1: invalid JSON"):
        load_pairs(broken)
    one = tmp_path / "one.jsonl"
    row = {"concept": "dogs", "instruction": "a", "response": "b", "concept_instruction": "c",
           "concept_response": "d", "split": "train"}
    one.write_text(json.dumps(row) + "\n")
    with pytest.raises(DiagError, match="concept 'dogs' has no heldout examples"):
        load_pairs(one, ("dogs",))
    with pytest.raises(DiagError, match="unknown concept 'cats'"):
        load_pairs(one, ("cats",))


def test_residual_at_matches_full_capture(smollm2) -> None:
    from diag.cdas.lm import residual_at
    from probes import Site, get_backend

    model, tokenizer = smollm2
    ids = tokenizer("The early exit must not change the activation.", return_tensors="pt")["input_ids"]
    site = Site(5, "resid_post")
    full = get_backend("torch", model).run({"input_ids": ids}, capture=[site]).activations[site]
    assert torch.equal(residual_at(model, 5, input_ids=ids), full)


@pytest.mark.parametrize("args, message", [
    (["steer", "--concepts", "cats"], "unknown concept 'cats'"),
    (["steer", "--dataset", "EMPTY"], "is empty"),
    (["steer", "--dataset", "TRAIN_ONLY", "--concepts", "dogs"], "no heldout examples"),
    (["train", "--layer", "99"], "layer(s) [99] out of range"),
    (["train", "--rank", "1000"], "rank 1000 out of range"),
])
def test_cli_bad_inputs_exit_2(tmp_path, args: list[str], message: str) -> None:
    import subprocess
    import sys

    (tmp_path / "empty.jsonl").write_text("")
    row = {"concept": "dogs", "instruction": "a", "response": "b", "concept_instruction": "c",
           "concept_response": "d", "split": "train"}
    (tmp_path / "train_only.jsonl").write_text(json.dumps(row) + "\n")
    args = [a.replace("EMPTY", str(tmp_path / "empty.jsonl")).replace("TRAIN_ONLY", str(tmp_path / "train_only.jsonl"))
            for a in args]
    proc = subprocess.run([sys.executable, "-m", "diag.cli", "cdas", *args, "--json"], capture_output=True,
                          text=True, check=False)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr


def test_half_b_answers_are_kept_at_every_alpha_and_the_chosen_ones_are_marked() -> None:
    """cdas-planted reads what the half-A alpha choice cost, so half B keeps every alpha's answers;
    ``chosen_examples`` is what the app's example table shows."""
    config = steer.Config(concepts=("dogs",), methods=("diffmean", "prompting"), alphas=(0.25, 0.5))
    jobs = []
    for method, alphas in (("diffmean", (0.25, 0.5)), ("prompting", (0.0,))):
        for direction in steer.DIRECTIONS:
            for alpha in alphas:
                for half in (0, 1):
                    score = 1.5 if alpha == 0.5 else 0.5  # half A prefers 0.5
                    jobs.append({"concept": "dogs", "method": method, "direction": direction, "alpha": alpha,
                                 "half": half, "prompt": f"{method} {direction} {half}", "answer": f"a{alpha}",
                                 "perplexity": 2.0, "gain": 0.0, "cost": 0.0, "score": score,
                                 "concept_score": score, "relevance": 1.0, "fluency": 1.0})
    chosen, _, rows, examples = steer.judge_protocol(jobs, config)
    assert chosen == {"dogs/diffmean/elicit": 0.5, "dogs/diffmean/suppress": 0.5}
    assert sorted((e["method"], e["direction"], e["alpha"]) for e in examples) == sorted(
        [("diffmean", d, a) for d in steer.DIRECTIONS for a in (0.25, 0.5)]
        + [("prompting", d, 0.0) for d in steer.DIRECTIONS])
    result = steer.Result("judge", chosen, rows, [], examples)
    assert sorted((e["method"], e["alpha"]) for e in result.chosen_examples()) == [
        ("diffmean", 0.5), ("diffmean", 0.5), ("prompting", 0.0), ("prompting", 0.0)]


def test_a_concept_of_the_users_own_is_trained_steered_and_judged(smollm2, tmp_path) -> None:
    """A concept defined in a concepts file (name, lexicon, phrase) with its own pairs: the study runs on it, the
    judge counts its lexicon, prompting names its phrase, and an edited dataset is a new run."""
    from diag.cdas.concepts import DATA_PATH, concept_specs
    from diag.cdas.judge import score
    from diag.runs import RunStore

    concepts = tmp_path / "concepts.jsonl"
    concepts.write_text(json.dumps({"name": "canines", "phrase": "hounds and other canines",
                                    "lexicon": ["dog", "puppy", "hound"]}) + "\n")
    dataset = tmp_path / "pairs.jsonl"
    rows = [json.loads(line) for line in DATA_PATH.read_text().splitlines() if '"concept": "dogs"' in line]
    dataset.write_text("".join(json.dumps({**r, "concept": "canines"}) + "\n" for r in rows))
    config = steer.Config(concepts=("canines",), methods=("diffmean", "prompting"), steps=1, alphas=(0.2,),
                          eval_prompts=2, max_new_tokens=6, dataset=str(dataset), concepts_file=str(concepts))
    store = RunStore()
    run_id, result = contract.run(steer.ANALYSIS, config, store=store)
    assert result.summary()["concepts"] == ["canines"]
    asked = [e["prompt"] for e in result.examples if e["method"] == "prompting" and e["direction"] == "suppress"]
    assert asked and all(p.endswith("Actually, do not mention hounds and other canines at all.") for p in asked)
    spec = concept_specs(concepts)["canines"]
    marks = score(spec, ["Say something."] * 2, ["The hound sleeps.", "The cat sleeps."], [1.0, 1.0])
    assert marks["concept_score"][0] >= 1 and marks["concept_score"][1] <= 1  # the lexicon is the user's
    dataset.write_text(dataset.read_text().replace("Describe", "Describe briefly", 1))
    assert steer.ANALYSIS.pin(config).dataset_sha256 != store.get(run_id).config["dataset_sha256"]
    concepts.write_text(json.dumps({"name": "canines"}) + "\n")
    with pytest.raises(DiagError, match=r"concepts.jsonl:1: lexicon must be a non-empty list"):
        contract.run(steer.ANALYSIS, config, store=store)


def test_the_committed_dataset_is_pinned_into_the_run_id(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """A config naming no dataset reads the committed one: regenerating that file must make new runs too, or a
    store hands back studies of the old pairs."""
    from diag.cdas import concepts
    from diag.config_checks import config_to_dict
    from diag.files import fingerprint
    from diag.run_ids import run_id_for

    def run_id() -> str:
        return run_id_for(steer.ANALYSIS.name, config_to_dict(steer.ANALYSIS.pin(steer.Config())))

    assert steer.ANALYSIS.pin(steer.Config()).dataset_sha256 == fingerprint(concepts.DATA_PATH)
    committed = run_id()
    copy = tmp_path / "concepts.jsonl"
    copy.write_text(concepts.DATA_PATH.read_text())
    monkeypatch.setattr(concepts, "DATA_PATH", copy)
    assert run_id() == committed  # the same bytes: the same study
    copy.write_text(copy.read_text().replace("Describe", "Describe briefly", 1))
    assert run_id() != committed
