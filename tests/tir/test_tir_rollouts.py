"""The batched multi-turn decoder against plain forward passes, the answer/tool protocol, and an end-to-end run."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from diag import contract
from diag.errors import DiagError
from diag.tir import analysis
from diag.tir.decoding import BatchDecoder, inject
from diag.tir.rollouts import extract_answer, prompt_prefix, tool_feedback
from diag.tir.sandbox import ExecResult


def test_batched_decoding_with_injection_matches_unpadded_forward(smollm2):
    """Every sampled token's logits equal a plain forward of that sequence alone, despite padding and injection."""
    model, tok = smollm2
    prefix = tok("Question: What is 2 + 3?\nAnswer: 5\n\n").input_ids
    groups = [tok("Question: What is 17 + 25?\n").input_ids,
              tok("Question: What is the remainder when 100 is divided by 7?\n").input_ids]
    injected = tok("\n<interpreter>42</interpreter>\n", add_special_tokens=False).input_ids

    finish_at: dict[int, int] = {}

    def on_token(token, seq):
        if seq.generated == 2:
            inject(seq, injected)  # a different number of tokens than other rows feed in the same step
        # Rows end at different steps, so finished rows are dropped from the cache mid-batch.
        if seq.generated >= finish_at.setdefault(id(seq), 3 if len(finish_at) % 2 == 0 else 5):
            seq.done = True

    decoder = BatchDecoder(model, 1.0, 20, torch.Generator().manual_seed(0), tok.eos_token_id)
    seen: list[tuple[object, torch.Tensor]] = []
    sample = decoder._sample_into

    def recording(rows, logits, callback):
        seen.extend((row, logits[i].clone()) for i, row in enumerate(rows))
        sample(rows, logits, callback)

    decoder._sample_into = recording
    seqs = decoder.run(prefix, groups, 2, on_token)
    assert [s.generated for s in seqs] == [3, 5, 3, 5]
    worst = 0.0
    for index, seq in enumerate(seqs):
        start = len(prefix) + len(groups[index // 2])
        with torch.no_grad():
            reference = model(torch.tensor([prefix + groups[index // 2] + seq.tokens])).logits[0]
        sampled_at = [i for i in range(len(seq.tokens)) if not 2 <= i < 2 + len(injected)]
        mine = [logits for row, logits in seen if row is seq]
        assert len(mine) == len(sampled_at) == seq.generated
        for logits, i in zip(mine, sampled_at, strict=True):
            worst = max(worst, float((logits - reference[start + i - 1]).abs().max()))
    assert worst < 1e-3  # float32 with a different summation order only


def test_zero_temperature_is_rejected(smollm2):
    model, tok = smollm2
    with pytest.raises(DiagError, match="temperature must be > 0"):
        BatchDecoder(model, 0.0, 8, torch.Generator(), tok.eos_token_id)


def test_answer_extraction_ignores_tool_output():
    assert extract_answer("<code>print(2)</code>\n<interpreter>Answer: 7</interpreter>\nAnswer: 1,024\n") == 1024
    assert extract_answer("Answer: -12") == -12
    assert extract_answer("<interpreter>Answer: 7</interpreter>") is None
    assert extract_answer("the answer is 5") is None


def test_tool_feedback_shows_what_a_terminal_would():
    assert tool_feedback(ExecResult("ok", stdout="103\n")) == "103"
    err = ExecResult("error", exit_code=1, stderr="Traceback ...\n  File x\nNameError: name 'y' is not defined\n")
    assert tool_feedback(err) == "NameError: name 'y' is not defined"
    assert "TimeoutError" in tool_feedback(ExecResult("timeout"))
    assert tool_feedback(ExecResult("ok", stdout="9" * 1000)).endswith("...(truncated)")


def test_prompts_document_the_format():
    assert "<code>print(37 * 41)</code>\n<interpreter>1517</interpreter>\nAnswer: 1517" in prompt_prefix("tool")
    assert "<code>" not in prompt_prefix("text") and "Answer: 1517" in prompt_prefix("text")


@pytest.mark.slow
def test_sampled_run_end_to_end(smollm2):
    """Real SmolLM2 on 2 arithmetic problems, 3 samples per mode: counts, audit and reload are consistent."""
    config = analysis.Config(per_cell=1, families=("arithmetic",), levels=(1, 2), n_samples=3, max_new_tokens=24,
                             problems_per_batch=2, device="cpu")
    _, result = contract.run(analysis.ANALYSIS, config)
    summary = result.summary()
    assert len(result.rollouts) == 2 * 2 * 3 and summary["n_per_mode"]["tool"] == {"min": 3, "max": 3}
    tool = [r for r in result.rollouts if r.mode == "tool"]
    text = [r for r in result.rollouts if r.mode == "text"]
    assert all(r.tool_calls == 0 and not r.exec_statuses for r in text)
    assert sum(r.tool_calls for r in tool) == summary["execution_audit"]["executions"]
    assert summary["execution_audit"]["infra_errors"] == 0 and summary["source"]["isolation"] in ("bwrap", "rlimits")
    for r in result.rollouts:  # every label is the exact check of the extracted answer
        answer = {p["problem_id"]: p["answer"] for p in result.problems}[r.problem_id]
        assert r.correct == (extract_answer(r.response) == answer)
    curve = summary["pass@3"]["tool"]
    assert curve["low"] <= curve["value"] <= curve["high"]
    assert summary["pass@1"]["tool"]["value"] == pytest.approx(sum(r.correct for r in tool) / len(tool))
    _, again = contract.run(analysis.ANALYSIS, config)
    assert again.summary()["expansion"] == summary["expansion"]  # reloaded, not resampled


def test_sampling_on_the_users_problems_file(tiny_llama_dir, tmp_path):
    """Problems of the user's own (any ids, no family or level) are sampled in file order and graded exactly."""
    from diag.runs import RunStore

    path = tmp_path / "mine.jsonl"
    path.write_text(json.dumps({"problem_id": "gsm8k/17", "question": "What is 12 + 30?", "answer": 42}) + "\n"
                    + json.dumps({"problem_id": "b", "question": "What is 9 * 9?", "answer": 81, "family": "mul",
                                  "level": 2}) + "\n")
    config = analysis.pin_inputs(analysis.Config(model=str(tiny_llama_dir), problems_file=str(path), n_samples=2,
                                                 max_new_tokens=16, device="cpu", n_bootstrap=50))
    store = RunStore()
    _, result = contract.run(analysis.ANALYSIS, config, store=store)
    assert [p["problem_id"] for p in result.problems] == ["gsm8k/17", "b"]
    assert [(p["family"], p["level"]) for p in result.problems] == [("imported", 0), ("mul", 2)]
    assert len(result.rollouts) == 2 * 2 * 2 and result.summary()["source"]["problems_sha256"] == config.problems_sha256
    answers = {"gsm8k/17": 42, "b": 81}
    assert all(r.correct == (extract_answer(r.response) == answers[r.problem_id]) for r in result.rollouts)
    path.write_text(path.read_text().replace("42", "43"))  # the pinned file changed: refused, nothing written
    with pytest.raises(DiagError, match="changed since this run was configured"):
        contract.run(analysis.ANALYSIS, dataclasses.replace(config, n_samples=3), store=store)
    path.write_text('{"problem_id": "x", "question": "?"}\n')
    with pytest.raises(DiagError, match=":1: missing field\\(s\\) answer"):
        contract.run(analysis.ANALYSIS, analysis.pin_inputs(analysis.Config(problems_file=str(path))), store=store)
    assert len(store.list()) == 1


def test_a_problems_file_with_exact_non_integer_answers_asks_for_and_grades_them(tiny_llama_dir, tmp_path):
    from diag.tir.answers import matches
    from diag.tir.rollouts import prompt_prefix

    assert 'Answer: <integer>"' in prompt_prefix("tool") and "<exact answer>" not in prompt_prefix("text")
    assert 'Finish with a line "Answer: <exact answer>"' in prompt_prefix("text", integer_answers=False)
    path = tmp_path / "math.jsonl"
    path.write_text(json.dumps({"problem_id": "half", "question": "What is 3 / 4?", "answer": "\\frac{3}{4}"}) + "\n"
                    + json.dumps({"problem_id": "n", "question": "What is 2 + 2?", "answer": 4}) + "\n")
    config = analysis.pin_inputs(analysis.Config(model=str(tiny_llama_dir), problems_file=str(path), n_samples=1,
                                                 max_new_tokens=8, device="cpu", n_bootstrap=20))
    _, result = contract.run(analysis.ANALYSIS, config)
    assert [p["answer"] for p in result.problems] == ["3/4", 4]
    expected = {p["problem_id"]: p["answer"] for p in result.problems}
    assert all(r.correct == matches(extract_answer(r.response), expected[r.problem_id]) for r in result.rollouts)
