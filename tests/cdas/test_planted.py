"""The planted steerable concept: the committed adapter, the planted model by name, and the pipeline finding d."""

from __future__ import annotations

import json

import pytest
import torch

from diag.cdas import planted, planted_check
from diag.contract import run
from diag.errors import DiagError
from diag.zoo.sources import PLANTED, PLANTED_ADAPTER, layer_count, resolve_lm_source

# No-edit KL(base || planted) per token, measured on the committed adapter over the base model's answers to the 48
# held-out neutral prompts (MODEL_CARD.md): 0.098 nats on answer tokens, 0.16 over every token (the chat
# template's prompt tokens were never a target). The bounds refuse a model whose no-edit behaviour moved further:
# the stage-4 neighbour with the elicit cross-entropy weighted 5 instead of 4 has 0.125 and talks about dogs
# unasked on 7 of 48 neutral prompts (this adapter: 4). On this test's 8 prompts and 16 tokens: this adapter
# 0.096 / 0.168, that neighbour 0.123 / 0.211.
KL_ANSWER_BOUND = 0.12
KL_ALL_BOUND = 0.2


@pytest.fixture(scope="module")
def planted_lm():
    from diag.zoo import load_lm

    return load_lm(PLANTED, device="cpu")


def test_planted_direction_is_the_committed_seeded_unit_vector() -> None:
    from safetensors.torch import load_file

    d = planted.direction(576, planted.SEED)
    assert float(d.norm()) == pytest.approx(1.0, abs=1e-6)
    assert torch.equal(load_file(str(PLANTED_ADAPTER / "direction.safetensors"))["direction"], d)
    info = json.loads((PLANTED_ADAPTER / "planted.json").read_text())
    assert (info["concept"], info["layer"], info["scale"]) == (planted.CONCEPT, planted.LAYER, planted.SCALE)
    assert (PLANTED_ADAPTER / "adapter_model.safetensors").stat().st_size < 20 * 2**20


def test_stage_two_trains_on_no_held_out_prompt_and_is_recorded() -> None:
    from diag.cdas.concepts import INSTRUCTIONS

    focus = set(planted.FOCUS_INSTRUCTIONS)
    assert len(focus) == 48 and not focus & (set(planted.HELDOUT_INSTRUCTIONS) | set(INSTRUCTIONS))
    assert all(sum(mix.values()) == 8 for mix in planted.MIX)
    # every clamped kind a stage samples has that stage's clamp range; "write" kinds write SCALE, "none" kinds no edit
    assert all(set(mix) - {"write", "fluent_write", "none", "long_none"} <= set(clamps)
               for mix, clamps in zip(planted.MIX, planted.CLAMPS, strict=True))
    config = planted.TrainConfig()
    starts = (0, config.upper_steps, config.upper_steps + config.focus_steps,
              config.upper_steps + config.focus_steps + config.sharpen_steps)
    assert [planted._stage(s, config) for s in starts] == [0, 1, 2, 3]
    assert [planted._stage(s - 1, config) for s in starts[1:]] == [0, 1, 2]
    assert planted._fluent_rows({"fluent": [["x", "y"]]}) == []  # waits for the new instructions' contrasts too
    rows = planted._fluent_rows({"fluent": [["x", "y"]], "focus_neutral": [["z", "w"]]})
    assert [r[2] for r in rows] == ["fluent_high", "fluent_write", "low", "none"]
    # stage 4: each long neutral answer asked for dogs with d clamped low, and unasked with no edit
    asked = planted.concept_instruction("z", planted.CONCEPTS[planted.CONCEPT])
    assert planted._long_rows({"long_neutral": [["z", "w"]]}) == [(asked, "w", "long_low", "z", True),
                                                                  ("z", "w", "long_none", "z", False)]
    info = json.loads((PLANTED_ADAPTER / "planted.json").read_text())
    assert info["train"]["focus_steps"] == planted.TrainConfig().focus_steps
    assert len(info["loss"]["upper"]) == (info["train"]["upper_steps"] + info["train"]["focus_steps"]
                                          + info["train"]["sharpen_steps"] + info["train"]["extend_steps"])


def test_stage_four_tilts_toward_the_asked_minus_neutral_direction_off_d() -> None:
    d = planted.direction()
    off = torch.randn(576)
    off = off - (off @ d) * d
    # each example's residual at its positions (BOS first, left out of the means)
    examples = [{"h": torch.stack([torch.full((576,), 1e3), 3 * d + off, 3 * d + off])},
                {"h": torch.stack([torch.zeros(576), -d, -d])}]
    natural = planted._natural_direction({"examples": examples, "kinds": {"long_low": [0], "long_none": [1]}}, d)
    assert torch.allclose(natural, off / off.norm(), atol=1e-6)


def test_planted_model_resolves_by_name_without_loading() -> None:
    source = resolve_lm_source(PLANTED)
    assert source.kind == "embedded-adapter" and source.location == str(PLANTED_ADAPTER)
    assert layer_count(PLANTED) == 30


def test_no_edit_kl_to_base_is_small_on_neutral_prompts(smollm2, planted_lm) -> None:
    from diag.cdas.lm import generate

    base, tokenizer = smollm2
    model, _ = planted_lm
    prompts = list(planted.HELDOUT_INSTRUCTIONS[:8])
    answers = generate(base, tokenizer, prompts, max_new_tokens=16)
    kl = planted.token_kl(base, model, tokenizer, prompts, answers)
    assert 0.0 < kl["answer_tokens"] < KL_ANSWER_BOUND and kl["all_tokens"] < KL_ALL_BOUND, kl


def test_adding_d_elicits_and_subtracting_suppresses(planted_lm) -> None:
    from diag.cdas.concepts import CONCEPTS, concept_instruction, mentions
    from diag.cdas.lm import generate

    model, tokenizer = planted_lm
    concept = CONCEPTS[planted.CONCEPT]
    d = planted.direction()
    neutral = list(planted.HELDOUT_INSTRUCTIONS[:8])
    asked = [concept_instruction(x, concept) for x in neutral]

    def shifted(prompts: list[str], sign: float) -> list[str]:
        return generate(model, tokenizer, prompts, max_new_tokens=16, layer=planted.LAYER,
                        fn=lambda h: h + sign * planted.EDIT * d)

    # measured over all 48 held-out prompts (MODEL_CARD.md): no edit 0.08, +EDIT d 1.00; asked -EDIT d 0.00
    assert sum(mentions(a, concept) for a in generate(model, tokenizer, neutral, max_new_tokens=16)) <= 2
    assert sum(mentions(a, concept) for a in shifted(neutral, 1.0)) >= 5
    assert sum(mentions(a, concept) for a in shifted(asked, -1.0)) <= 1


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory):
    """The cdas-planted check at a small budget (the default 8 DII steps, one alpha, 24 held-out prompts: 12 per
    half, 16 tokens), in a store of its own (a module fixture runs before the per-test DIAG_HOME exists). At 2 DII
    steps CDAS (|cos| .981) suppresses on 10 of 12 on this adapter: the default's 8 steps are what the bars are
    for."""
    from diag.runs import RunStore

    config = planted_check.Config(steps=8, alphas=(0.5,), eval_prompts=24, max_new_tokens=16)
    return run(planted_check.ANALYSIS, config, store=RunStore(tmp_path_factory.mktemp("planted-runs")))[1]


@pytest.mark.slow
def test_pipeline_recovers_the_planted_direction_and_suppresses(pipeline) -> None:
    result = pipeline
    summary = result.summary()
    assert set(result.cosines) == {"diffmean", "das", "cdas", "near_d"}
    assert result.cosines["near_d"] == result.cosines["cdas"]
    # measured at this budget and the default's (8 steps, 48 prompts): DiffMean .987, CDAS .971, DAS .962
    assert min(result.cosines.values()) >= planted_check.COSINE_BAR, result.cosines
    assert summary["cdas_cosine_passes"]
    rate = result.rate("cdas", "suppress")  # at the model's own fluency, as the bar reads it
    assert rate["value"] >= planted_check.SUCCESS_BAR, rate  # this budget: 12/12 (default budget: 24/24)
    assert {r["n"] for r in result.rows} == {12} and all(r["chosen"] for r in result.rows)  # one alpha
    assert {r["method"] for r in result.rows} == {"diffmean", "das", "cdas", "prompting", "planted_d", "near_d"}
    assert summary["cdas_elicit_fluent_success_by_alpha"] == {"0.5": summary["cdas_elicit_fluent_success"]["value"]}
    own = result.own_perplexity
    assert 1.0 < own["min"] <= own["median"] <= own["max"] and own["n"] == 24


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="at this budget CDAS elicits dogs at the model's own fluency on 10 of 12 "
                                       "held-out prompts (d itself 9/12: 16 tokens and 24 prompts' own range); "
                                       "the 90% bar needs 11. The default check: 22/24 (MODEL_CARD.md)")
def test_pipeline_elicits_on_nine_in_ten_prompts(pipeline) -> None:
    assert pipeline.rate("cdas", "elicit")["value"] >= planted_check.SUCCESS_BAR


def test_near_d_draws_unit_vectors_at_exactly_the_cosine_asked() -> None:
    d = planted.direction().double()
    vectors = planted_check.near(d, 0.953, 24, seed=0)
    assert torch.allclose(vectors @ d, torch.full((24,), 0.953, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(vectors.norm(dim=1), torch.ones(24, dtype=torch.float64), atol=1e-12)
    assert (vectors @ vectors.T - torch.eye(24, dtype=torch.float64)).abs().max() > 0.5  # distinct draws
    assert torch.equal(vectors, planted_check.near(d, 0.953, 24, seed=0))


def test_bad_input_is_one_line_before_any_work(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    with pytest.raises(DiagError, match="eval_prompts 49 out of range") as caught:
        planted_check.Config(eval_prompts=49)
    assert "\n" not in str(caught.value)
    with pytest.raises(DiagError, match="init must be diffmean or random"):
        planted_check.Config(init="zeros")
    monkeypatch.setattr("diag.zoo.sources.PLANTED_ADAPTER", tmp_path / "gone")
    from diag.runs import RunStore

    store = RunStore()
    with pytest.raises(DiagError, match="planted adapter .* is missing"):
        run(planted_check.ANALYSIS, planted_check.Config(), store=store)
    assert store.list() == []


def test_rates_read_the_chosen_alpha_and_every_alpha_of_the_grid() -> None:
    def row(method: str, direction: str, alpha: float, chosen: bool, fluent: int) -> dict:
        return {"method": method, "direction": direction, "alpha": alpha, "chosen": chosen, "n": 10,
                "successes": 10, "fluent_successes": fluent, "median_perplexity": 2.0}

    rows = [row(m, d, a, a == 0.25, 9 if a == 0.5 else 4) for m in ("cdas", "planted_d") for d in ("elicit", "suppress")
            for a in (0.25, 0.5)] + [row("prompting", d, 0.0, True, 1) for d in ("elicit", "suppress")]
    result = planted_check.Result("cdas-steer-x", 10, 64.0, {"cdas": 0.95}, rows, {"max": 4.0})
    summary = result.summary()
    # the half-A choice (0.25) is what the bars read; the grid shows that 0.5 would have steered
    assert summary["cdas_elicit_fluent_success"]["value"] == 0.4 and not summary["cdas_steering_passes"]
    assert summary["cdas_elicit_fluent_success_by_alpha"] == {"0.25": 0.4, "0.5": 0.9}
    assert "prompting_elicit_fluent_success_by_alpha" not in summary
    assert result.rate("planted_d", "suppress", alpha=0.5)["value"] == 0.9
    # a run stored before every alpha was kept: one row per method and direction, no "chosen" key
    old = [{k: v for k, v in r.items() if k != "chosen"} for r in rows if r["chosen"]]
    assert planted_check.Result("cdas-steer-x", 10, 64.0, {"cdas": 0.95}, old, {}).rate("cdas", "elicit")["value"] == 0.4


def test_a_retrained_adapter_is_a_new_check_not_a_stale_one(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """The check's config names no file, so its run id must carry the adapter's hash (as the nested cdas-steer
    run's model_sha256 does), or a store would hand back the old adapter's finished check."""
    import shutil

    from diag.config_checks import config_to_dict
    from diag.run_ids import run_id_for
    from diag.zoo import sources

    def run_id() -> str:
        pinned = planted_check.ANALYSIS.pin(planted_check.Config())
        return run_id_for(planted_check.ANALYSIS.name, config_to_dict(pinned))

    committed = run_id()
    copy = tmp_path / "adapter"
    shutil.copytree(sources.PLANTED_ADAPTER, copy)
    monkeypatch.setattr(sources, "PLANTED_ADAPTER", copy)
    assert run_id() == committed  # the same bytes elsewhere: the same check
    (copy / "adapter_model.safetensors").write_bytes((copy / "adapter_model.safetensors").read_bytes()[::-1])
    assert run_id() != committed
