"""End to end: scoring runs, JSONL import errors, the DPO loop on a tiny model, the CLI."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from diag import contract
from diag.credit import analysis, dpo, inputs, localisation
from diag.errors import DiagError
from diag.runs import RunStore


def test_bad_jsonl_names_the_line_and_leaves_no_run(tmp_path: Path, adapter_dir: Path) -> None:
    good = {"prompt": "Say 25K.", "chosen": "25K", "rejected": "250K", "span_chosen": [0, 2], "span_rejected": [0, 3]}
    cases = {
        "not json": (json.dumps(good) + "\n{oops\n", ":2: invalid JSON"),
        "missing field": (json.dumps(good) + "\n" + json.dumps({"prompt": "x", "chosen": "y"}) + "\n", ":2: field"),
        "bad span": (json.dumps({**good, "span_rejected": [2, 99]}) + "\n", ":1: span_rejected"),
    }
    store = RunStore()
    for text, message in cases.values():
        path = tmp_path / "pairs.jsonl"
        path.write_text(text)
        with pytest.raises(DiagError, match=message):
            contract.run(analysis.ANALYSIS, analysis.Config(policy=str(adapter_dir), data=str(path), device="cpu"),
                         store=store)
    assert store.list() == [] and [p for p in store.root.iterdir() if p.is_dir()] == []
    path.write_text("\n" + json.dumps(good) + "\nnot json\n")
    done = subprocess.run([sys.executable, "-m", "diag.cli", "credit", "score", str(adapter_dir), "--data", str(path)],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 2 and ":3: invalid JSON" in done.stderr and len(done.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_scoring_run_saves_views_and_reloads(adapter_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "mixed.jsonl"
    path.write_text(json.dumps({"prompt": "Price?", "response": "It costs 25K."}) + "\n")
    store = RunStore()
    config = analysis.Config(policy=str(adapter_dir), n_pairs=2, seeds=(0, 1, 2), captum_steps=4, n_boot=100,
                             device="cpu")
    _, result = contract.run(analysis.ANALYSIS, config, store=store)
    summary = result.summary()
    assert summary["beta"] == 0.25 and summary["n_pairs"] == 6
    assert summary["consistency_max_abs_diff"] < 1e-4
    for side in localisation.SIDES:
        for scope in localisation.SCOPES:
            block = summary["scores"][side][scope]
            assert set(block) == set(localisation.METHODS)
            # chance top-1 from the stored spans: the span's share of the scored tokens, averaged over sequences
            shares = [np.mean(i.span[start:]) for i in result.items if i.side == side and any(i.span)
                      for start in [i.first_diff if scope == "from_first_diff" else 0] if any(i.span[start:])]
            chance = block["chance"]["top1"]
            assert chance["value"] == pytest.approx(np.mean(shares)) and chance["n"] == len(shares) == 6
            assert block["dpo_reward"]["top1"]["n"] == 6
    run = store.get(store.list(analysis="credit")[0].run_id)
    html = run.path("heatmap.html").read_text()
    assert html.count('class="tok"') == sum(len(i.tokens) for i in result.items) and "r_t = " in html
    assert {p.name for p in run.figure_paths()} == {"cumulative_reward.png", "reward_by_position_and_type.png"}
    assert analysis.Result.load(run).summary() == json.loads(json.dumps(summary))
    # (prompt, response) lines are scored and shown, without localisation scores
    config = analysis.Config(policy=str(adapter_dir), data=str(path), captum_steps=0, device="cpu")
    _, only = contract.run(analysis.ANALYSIS, config, store=store)
    assert only.summary()["n_responses"] == 1 and only.items[0].side == "response"


@pytest.mark.slow
@pytest.mark.parametrize(("token_kl_weight", "anchor_weight"), [(0.0, 0.0), (1.0, 0.0), (0.0, 1.0)])
def test_dpo_loop_starts_at_log2_and_lowers_the_loss(tiny_llama_dir: Path, token_kl_weight: float,
                                                      anchor_weight: float) -> None:
    config = dpo.Config(model=str(tiny_llama_dir), n_train=8, n_heldout=4, steps=6, batch_pairs=4, lr=5e-3,
                        nll_weight=0.0, token_kl_weight=token_kl_weight, anchor_weight=anchor_weight,
                        lora_layers=1, checkpoint_every=3, device="cpu")
    _, result = contract.run(dpo.ANALYSIS, config)
    # LoRA starts at B = 0: the cached top-layer pass must reproduce the reference exactly, so loss = log 2
    # (the per-token KL and the anchor's squared log-ratio are exactly 0 there)
    assert abs(result.losses[0] - math.log(2)) < 1e-5
    assert result.losses[-1] < result.losses[0]
    assert (result.adapter_dir / "adapter_config.json").is_file()
    assert json.loads((result.adapter_dir / "diag_dpo.json").read_text())["beta"] == 0.1


def test_a_retrained_adapter_is_a_new_run_not_a_stale_reuse(tmp_path) -> None:
    import shutil

    adapter = tmp_path / "adapter"
    shutil.copytree(inputs.committed_adapter_dir(), adapter)
    config = analysis.Config(policy=str(adapter))
    before = inputs.pin_inputs(config)
    assert before.policy_sha256 is not None and before.reference_sha256 is None and before.data_sha256 is None
    assert inputs.pin_inputs(before) == before  # pinning twice names the same run
    weights = adapter / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b"\x00")
    after = inputs.pin_inputs(config)
    assert after.policy_sha256 != before.policy_sha256
    assert inputs.pin_inputs(analysis.Config(policy="HuggingFaceTB/not-local")).policy_sha256 is None


def test_corrupted_tokens_start_at_the_first_differing_token(smollm2) -> None:
    from diag.credit.encoding import encode
    from diag.credit.localisation import corrupted_tokens, first_difference

    _, tok = smollm2
    prompt = "Log: 35 meters."

    def labelled(chosen: str, rejected: str, span: tuple[int, int]) -> list[str]:
        a, b = encode(tok, prompt, chosen), encode(tok, prompt, rejected)
        diff = first_difference(a.response_ids, b.response_ids)
        mask = corrupted_tokens(b.offsets, span, diff)
        return [tok.decode([t]) for t, m in zip(b.response_ids, mask, strict=True) if m]

    # "34K" -> "32K": the shared "3" cannot be told apart; "2" and the "K" after it are the corrupted value
    assert labelled("It was 34K dollars.", "It was 32K dollars.", (7, 10)) == ["2", "K"]
    # a deletion ("35" -> "3"): the only token where the answers part is the one after the shortened number
    assert labelled("It was 35 meters.", "It was 3 meters.", (7, 8)) == [" meters"]
    # an entity swap: the whole name
    assert labelled("Ana went to Oslo.", "Ana went to Lima.", (12, 16)) == [" Lima"]
