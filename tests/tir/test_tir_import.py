"""JSONL import: line-numbered errors, nothing half-imported, and metrics computed from imported rollouts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from diag import contract
from diag.config_checks import config_to_dict
from diag.errors import DiagError
from diag.runs import RunStore
from diag.tir import analysis
from diag.tir.importer import read_problems, read_rollouts


def _line(pid: str, mode: str, sample: int, correct: bool, **extra) -> str:
    return json.dumps({"problem_id": pid, "mode": mode, "sample": sample, "response": f"Answer: {int(correct)}",
                       "correct": correct, **extra}) + "\n"


def _write(tmp_path: Path, lines: list[str]) -> Path:
    path = tmp_path / "rollouts.jsonl"
    path.write_text("".join(lines))
    return path


def _suite_lines() -> list[str]:
    """3 problems x 4 samples: p0 tool-only (expansion), p1 text-only (shrinkage), p2 both; one infra failure."""
    correct = {("p0", "tool"): [1, 0, 0, 1], ("p0", "text"): [0, 0, 0, 0],
               ("p1", "tool"): [0, 0, 0, 0], ("p1", "text"): [0, 1, 0, 0],
               ("p2", "tool"): [1, 1, 1, 1], ("p2", "text"): [1, 0, 1, 0]}
    lines = []
    for (pid, mode), flags in correct.items():
        for s, ok in enumerate(flags):
            extra = {"tool_calls": 1, "exec_statuses": ["ok"], "generated_tokens": 20, "tool_output_tokens": 5,
                     "first_call_token": 3} if mode == "tool" else {"generated_tokens": 8}
            if (pid, mode, s) == ("p1", "tool", 0):
                extra["exec_statuses"] = ["infra_error"]
            lines.append(_line(pid, mode, s, bool(ok), **extra))
    return lines


@pytest.mark.parametrize(("bad", "message"), [
    ("{not json\n", ":3: invalid JSON"),
    ('["a list"]\n', ":3: expected a JSON object"),
    (json.dumps({"problem_id": "p9", "mode": "tool", "response": ""}) + "\n", ":3: missing field.s. sample"),
    (json.dumps({"problem_id": "p9", "mode": "tool", "sample": 0, "response": ""}) + "\n",
     ':3: no "correct" field and no problems file'),
    (json.dumps({"messages": [{"role": "user", "content": "hi"}], "problem_id": "p9", "correct": True}) + "\n",
     ":3: the chat has no assistant message"),
    (json.dumps({"custom_id": "p9", "response": {"status_code": 500, "body": None}}) + "\n",
     r":3: the request failed \(status 500\)"),
    (json.dumps({"id": "b", "custom_id": "p9", "response": None, "error": {"message": "engine died"}}) + "\n",
     r':3: the request failed: \{"message": "engine died"\}'),
    (_line("p9", "voice", 0, True), ":3: mode must be one of"),
    (_line("p9", "tool", 0, True, tool_calls=True), ":3: field 'tool_calls' must be int"),
    (_line("p9", "tool", -1, True), ":3: sample must be >= 0"),
    (_line("p0", "tool", 0, True), r":3: duplicate rollout \('p0', 'tool', 0\) \(first on line 1\)"),
    (_line("p9", "tool", 0, True, colour="red"), ":3: unknown field"),
    (_line("p9", "tool", 0, True, exec_statuses=["exploded"]), ":3: unknown exec status"),
])
def test_bad_lines_are_named_and_nothing_is_imported(tmp_path, bad, message):
    lines = [_line("p0", "tool", 0, True), _line("p0", "text", 0, False), bad]
    path = _write(tmp_path, lines)
    with pytest.raises(DiagError, match=message):
        read_rollouts(path)
    store = RunStore()
    with pytest.raises(DiagError, match=message):
        contract.run(analysis.ANALYSIS, analysis.import_config(path), store=store)
    assert store.list() == [] and not any(p.is_dir() for p in store.root.iterdir())  # no half-written run


def test_problem_missing_a_mode_is_rejected(tmp_path):
    path = _write(tmp_path, [_line("p0", "tool", 0, True), _line("p0", "text", 0, True), _line("p1", "tool", 0, True)])
    with pytest.raises(DiagError, match=":3: problem 'p1' has rollouts for mode tool only"):
        read_rollouts(path)


def test_imported_metrics_support_sets_and_audit_flag(tmp_path):
    path = _write(tmp_path, _suite_lines())
    store = RunStore()
    _, result = contract.run(analysis.ANALYSIS, analysis.import_config(path, n_bootstrap=200), store=store)
    summary = result.summary()
    assert summary["expansion"] == ["p0"] and summary["shrinkage"] == ["p1"]
    # pass@1 = mean of c/n: tool (2/4 + 0 + 4/4)/3 = 0.5; text (0 + 1/4 + 2/4)/3 = 0.25.
    assert summary["pass@1"]["tool"]["value"] == pytest.approx(0.5)
    assert summary["pass@1"]["text"]["value"] == pytest.approx(0.25)
    # pass@4 is the support indicator: tool solves p0, p2; text solves p1, p2.
    assert summary["pass@4"]["tool"]["value"] == pytest.approx(2 / 3)
    assert summary["split_at_n"] == pytest.approx(
        {"expansion": 1 / 3, "shrinkage": 1 / 3, "preserved": 1 / 3, "jointly_unsolved": 0.0})
    # 1 of 12 tool executions failed in the sandbox: 8.3% > 1%, flagged in the summary and the figure titles.
    audit = summary["execution_audit"]
    assert audit["infra_errors"] == 1 and audit["infra_failure_rate"] == pytest.approx(1 / 12) and audit["flagged"]
    assert summary["warning"].startswith("FLAGGED")
    # Token cost per correct answer: tool 12 rollouts x 25 tokens / 6 correct; text 12 x 8 / 3.
    assert summary["tokens_per_correct"] == pytest.approx({"tool": 50.0, "text": 32.0})
    assert summary["tool_calls"]["calls_per_rollout"] == 1.0
    # The finished run reloads without recomputing and gives the same summary and figures.
    run = store.open(analysis.ANALYSIS.name, config_to_dict(analysis.import_config(path, n_bootstrap=200)))
    reloaded = analysis.Result.load(run)
    assert reloaded.summary()["expansion"] == ["p0"]
    assert {p.name for p in run.figure_paths()} == {"pass_at_k.png", "split_flow.png"}
    arrays = run.read_arrays("metrics")
    assert np.array_equal(arrays["c_tool"], [2, 0, 4])


def test_unflagged_when_sandbox_is_healthy(tmp_path):
    lines = [line.replace("infra_error", "error") for line in _suite_lines()]
    _, result = contract.run(analysis.ANALYSIS, analysis.import_config(_write(tmp_path, lines)))
    assert not result.summary()["execution_audit"]["flagged"] and result.summary()["warning"] is None


def test_export_round_trip_and_partial_checkpoint(tmp_path):
    from diag.tir.problems import make_suite

    path = _write(tmp_path, _suite_lines())
    store = RunStore()
    config = analysis.import_config(path, n_bootstrap=200)
    _, first = contract.run(analysis.ANALYSIS, config, store=store)
    run = store.open(analysis.ANALYSIS.name, config_to_dict(config))
    exported = tmp_path / "exported.jsonl"
    assert analysis.export_jsonl(run, exported) == {"rollouts": 24, "problems": 3}
    _, again = contract.run(analysis.ANALYSIS, analysis.import_config(exported, n_bootstrap=200), store=store)
    assert again.summary()["pass@4"] == first.summary()["pass@4"]
    # A killed sampling run: only problems finished in both modes are exported, with their family and level.
    sampling = analysis.Config(per_cell=1)
    partial = store.open(analysis.ANALYSIS.name, config_to_dict(sampling))
    ids = [p.problem_id for p in make_suite(per_cell=1)]
    rows = [{"problem_id": ids[0], "mode": m, "sample": s, "response": "Answer: 1", "correct": s == 0}
            for m in ("tool", "text") for s in range(2)]
    rows.append({"problem_id": ids[1], "mode": "tool", "sample": 0, "response": "", "correct": False})
    partial.save_checkpoint({"loop_step": 3, "state": {"rollouts": rows}})
    assert analysis.export_jsonl(partial, exported) == {"rollouts": 4, "problems": 1}
    assert json.loads(exported.read_text().splitlines()[0])["family"] == "arithmetic"


# -- formats engines write ----------------------------------------------------------------------------------
ANSWERS = {"p0": 391, "p1": 12, "p2": 7}
FLAGS = {("p0", "tool"): [1, 0, 0, 1], ("p0", "text"): [0, 0, 0, 0], ("p1", "tool"): [0, 0, 0, 0],
         ("p1", "text"): [0, 1, 0, 0], ("p2", "tool"): [1, 1, 1, 1], ("p2", "text"): [1, 0, 1, 0]}


def _problems_file(tmp_path: Path) -> Path:
    path = tmp_path / "problems.jsonl"
    path.write_text("".join(json.dumps({"problem_id": pid, "question": f"What is question {pid}?", "answer": a,
                                        "family": "arithmetic", "level": 2}) + "\n" for pid, a in ANSWERS.items()))
    return path


def _chat(pid: str, mode: str, ok: bool) -> dict:
    """An OpenAI-style transcript: tool mode calls a python tool and reads its result; text mode answers directly."""
    answer = ANSWERS[pid] if ok else ANSWERS[pid] + 1
    messages = [{"role": "system", "content": "Solve exactly."}, {"role": "user", "content": f"What is question {pid}?"}]
    if mode == "tool":
        messages += [
            {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function", "function": {
                "name": "python", "arguments": json.dumps({"code": f"print({answer})"})}}]},
            {"role": "tool", "tool_call_id": "c1", "content": str(answer)}]
    messages.append({"role": "assistant", "content": f"So the result is computed.\nAnswer: {answer}\n"})
    return {"messages": messages}


def test_openai_chat_tool_rollouts_are_graded_and_give_the_graded_files_pass_at_k(tmp_path):
    """The same outcomes as OpenAI chat transcripts (graded here, mode inferred) and as our graded schema."""
    chats = tmp_path / "chats.jsonl"
    chats.write_text("".join(json.dumps(_chat(pid, mode, bool(ok))) + "\n"
                             for (pid, mode), flags in FLAGS.items() for ok in flags))
    graded = _write(tmp_path, [_line(pid, mode, s, bool(ok)) for (pid, mode), flags in FLAGS.items()
                               for s, ok in enumerate(flags)])
    store = RunStore()
    chat_config = analysis.import_config(chats, n_bootstrap=200, problems=_problems_file(tmp_path))
    from_chat = contract.run(analysis.ANALYSIS, chat_config, store=store)[1].summary()
    graded_config = analysis.import_config(graded, n_bootstrap=200)
    from_graded = contract.run(analysis.ANALYSIS, graded_config, store=store)[1].summary()
    for k in (1, 4):
        assert from_chat[f"pass@{k}"] == from_graded[f"pass@{k}"]
    assert from_chat["pass@1"]["tool"]["value"] == pytest.approx(0.5)
    assert from_chat["expansion"] == ["p0"] and from_chat["shrinkage"] == ["p1"]
    assert from_chat["split_at_n"] == from_graded["split_at_n"]
    assert from_chat["tool_calls"]["calls_per_rollout"] == 1.0
    rollouts, meta = read_rollouts(chats, read_problems(_problems_file(tmp_path)))
    first = next(r for r in rollouts if r.mode == "tool")
    assert first.response == ("<code>print(391)</code>\n<interpreter>391</interpreter>\nSo the result is computed."
                              "\nAnswer: 391\n") and first.answer == 391 and first.correct
    assert meta["p0"]["question"] == "What is question p0?" and meta["p0"]["level"] == 2
    assert [r.sample for r in rollouts if (r.problem_id, r.mode) == ("p0", "text")] == [0, 1, 2, 3]


def test_vllm_batch_output_with_several_choices_and_custom_id_modes(tmp_path):
    def line(custom_id: str, texts: list[str], **message) -> str:
        choices = [{"index": i, "message": {"role": "assistant", "content": t, **message}, "finish_reason": "stop"}
                   for i, t in enumerate(texts)]
        return json.dumps({"id": "b", "custom_id": custom_id, "error": None, "response": {
            "status_code": 200, "request_id": "r", "body": {"choices": choices, "usage": {"completion_tokens": 9}}}}) + "\n"

    path = tmp_path / "batch.jsonl"
    path.write_text(
        line("p0/tool/a", ["<code>print(17*23)</code>\n<interpreter>391</interpreter>\nAnswer: 391",
                           "I think \\boxed{390}"])  # our tags count as a tool call; \boxed is graded
        + line("p0/text/b", ["The answer is \\boxed{391}."])
        + line("p1", ["Answer: 12"])  # no tool call and no mode: text
        + line("p1/tool", ["", ], tool_calls=[{"id": "x", "type": "function",
                                              "function": {"name": "run", "arguments": "print(12)"}}]))
    rollouts, _ = read_rollouts(path, read_problems(_problems_file(tmp_path)))
    got = {(r.problem_id, r.mode, r.sample): (r.correct, r.answer, r.tool_calls, r.generated_tokens) for r in rollouts}
    assert got == {("p0", "tool", 0): (True, 391, 1, 0), ("p0", "tool", 1): (False, 390, 0, 0),
                   ("p0", "text", 0): (True, 391, 0, 9), ("p1", "text", 0): (True, 12, 0, 9),
                   ("p1", "tool", 0): (False, None, 1, 9)}
    assert rollouts[-1].response == "<code>print(12)</code>"


def test_openai_responses_api_objects_and_their_batch_lines(tmp_path):
    """Responses API output items (function calls and their outputs, the built-in code interpreter, output_text
    parts, reasoning) become our tags; the problem comes from the input's question or from custom_id."""
    call = [{"type": "reasoning", "summary": []},
            {"type": "function_call", "call_id": "c1", "name": "python", "arguments": json.dumps({"code": "print(17*23)"})},
            {"type": "function_call_output", "call_id": "c1", "output": "391"},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Answer: 391"}]}]
    interpreter = [{"type": "code_interpreter_call", "code": "print(3*4)", "outputs": [{"type": "logs", "logs": "12"}]},
                   {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Answer: 12"}]}]
    text = [{"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Answer: 390"}]}]
    lines = [
        {"object": "response", "input": [{"role": "user", "content": [{"type": "input_text",
                                                                       "text": "What is question p0?"}]}],
         "output": call, "usage": {"output_tokens": 21}},
        {"object": "response", "input": "What is question p0?", "output": text},
        {"custom_id": "p1/tool", "error": None, "response": {"status_code": 200, "body": {
            "object": "response", "status": "completed", "output": interpreter, "usage": {"output_tokens": 7}}}},
        {"custom_id": "p1/text", "response": {"status_code": 200, "body": {"output": text}}},
    ]
    path = _write(tmp_path, [json.dumps(line) + "\n" for line in lines])
    rollouts, _ = read_rollouts(path, read_problems(_problems_file(tmp_path)))
    got = {(r.problem_id, r.mode): (r.correct, r.answer, r.tool_calls, r.generated_tokens) for r in rollouts}
    assert got == {("p0", "tool"): (True, 391, 1, 21), ("p0", "text"): (False, 390, 0, 0),
                   ("p1", "tool"): (True, 12, 1, 7), ("p1", "text"): (False, 390, 0, 0)}
    assert rollouts[0].response == "<code>print(17*23)</code>\n<interpreter>391</interpreter>\nAnswer: 391"
    assert rollouts[2].response == "<code>print(3*4)</code>\n<interpreter>12</interpreter>\nAnswer: 12"
    assert rollouts[2].finish == "completed"


def test_vllm_offline_request_outputs_and_json_array_files(tmp_path):
    """LLM.generate's RequestOutput dumped as JSON (every output one sample; the question in the prompt names the
    problem), in one JSON array file."""
    prefix = "Solve it.\n\nQuestion: "
    lines = [
        {"request_id": "0", "prompt": prefix + "What is question p0?\n", "prompt_token_ids": [1, 2],
         "outputs": [{"index": 1, "text": "Answer: 390", "token_ids": [5, 6, 7], "finish_reason": "stop"},
                     {"index": 0, "text": "<code>print(17*23)</code>\n<interpreter>391</interpreter>\nAnswer: 391",
                      "token_ids": [5] * 20, "finish_reason": "length"}], "mode": "tool", "finished": True},
        {"prompt": prefix + "What is question p0?\n", "outputs": [{"text": "Answer: 391"}], "mode": "text"},
    ]
    path = tmp_path / "vllm.json"
    path.write_text(json.dumps(lines, indent=1))
    rollouts, _ = read_rollouts(path, read_problems(_problems_file(tmp_path)))
    got = [(r.problem_id, r.mode, r.sample, r.correct, r.tool_calls, r.generated_tokens, r.finish) for r in rollouts]
    assert got == [("p0", "tool", 0, True, 1, 20, "length"), ("p0", "tool", 1, False, 0, 3, "stop"),
                   ("p0", "text", 0, True, 0, 0, "")]


def test_legacy_function_call_chats(tmp_path):
    """Before tool_calls, OpenAI chats called one function per turn and answered it with role "function"."""
    messages = [{"role": "user", "content": "What is question p0?"},
                {"role": "assistant", "content": None, "function_call": {"name": "python",
                                                                         "arguments": '{"code": "print(17*23)"}'}},
                {"role": "function", "name": "python", "content": "391"},
                {"role": "assistant", "content": "Answer: 391"}]
    path = _write(tmp_path, [json.dumps({"messages": messages}) + "\n", json.dumps(_chat("p0", "text", False)) + "\n"])
    rollouts, _ = read_rollouts(path, read_problems(_problems_file(tmp_path)))
    tool = next(r for r in rollouts if r.mode == "tool")
    assert tool.response == "<code>print(17*23)</code>\n<interpreter>391</interpreter>\nAnswer: 391"
    assert tool.tool_calls == 1 and tool.correct


@pytest.mark.parametrize(("line", "message"), [
    ({"custom_id": "p7/tool", "response": {"body": {"choices": [{"message": {"content": "Answer: 1"}}]}}},
     ":2: custom_id 'p7/tool' names no problem"),
    ({"messages": [{"role": "user", "content": "What is question p0?"}, {"role": "robot", "content": "x"},
                   {"role": "assistant", "content": "Answer: 1"}]}, ":2: unknown message role 'robot'"),
    ({"messages": [{"role": "user", "content": "unrelated"}, {"role": "assistant", "content": "Answer: 1"}]},
     ":2: the first user message contains no problem question"),
    ({"messages": [{"role": "assistant", "content": "Answer: 1"}], "problem_id": "p8"},
     ":2: problem 'p8' is not in the problems file"),
    ({"messages": [{"role": "assistant", "content": "x", "tool_calls": [{"id": "c"}]}], "problem_id": "p0"},
     ":2: a tool call needs"),
    ({"messages": [{"role": "assistant", "content": "Answer: 1"}], "problem_id": "p0", "mode": "voice"},
     ":2: mode must be one of"),
    ({"output": [{"type": "web_search_call"}], "problem_id": "p0"}, ":2: unknown output item type 'web_search_call'"),
    ({"output": "Answer: 1", "problem_id": "p0"}, ":2: output must be a list of objects"),
    ({"outputs": [{"token_ids": [1]}], "problem_id": "p0"}, ':2: each output needs a "text" string'),
])
def test_bad_engine_lines_are_named_and_leave_no_run(tmp_path, line, message):
    path = _write(tmp_path, [json.dumps(_chat("p0", "text", True)) + "\n", json.dumps(line) + "\n"])
    store = RunStore()
    with pytest.raises(DiagError, match=message):
        contract.run(analysis.ANALYSIS, analysis.import_config(path, problems=_problems_file(tmp_path)),
                     store=store)
    assert store.list() == [] and not any(p.is_dir() for p in store.root.iterdir())


def test_the_question_in_the_prompt_names_the_problem(tmp_path):
    path = _write(tmp_path, [json.dumps(_chat("p2", mode, True)) + "\n" for mode in ("tool", "text")])
    rollouts, _ = read_rollouts(path, read_problems(_problems_file(tmp_path)))
    assert {(r.problem_id, r.mode, r.correct) for r in rollouts} == {("p2", "tool", True), ("p2", "text", True)}


@pytest.mark.parametrize(("make", "message"), [
    (lambda d: (d / "garbage.bin").write_bytes(bytes(range(256))) and d / "garbage.bin", "is not a UTF-8 text file"),
    (lambda d: (d / "latin1.jsonl").write_bytes(b'{"a": 1}\n{"b": "caf\xe9"}\n') and d / "latin1.jsonl",
     r"latin1.jsonl is not a UTF-8 text file \(line 2, byte 0xe9\)"),
    (lambda d: d, "is a directory, not a file"),
    (lambda d: d / "missing.jsonl", "does not exist"),
])
def test_unreadable_files_are_one_line_exit_2_and_leave_no_run(tmp_path, monkeypatch, capsys, make, message):
    from diag.cli import main

    path = make(tmp_path)
    with pytest.raises(DiagError, match=message):
        analysis.import_config(path)
    monkeypatch.setattr("sys.argv", ["diag", "tir", "import", str(path)])
    with pytest.raises(SystemExit) as exit_info:
        main()
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err
    store = RunStore()
    assert store.list() == []


def test_problems_file_errors_are_named(tmp_path):
    bad = tmp_path / "problems.jsonl"
    bad.write_text(json.dumps({"problem_id": "p0", "question": "q", "answer": [3, 91]}) + "\n")
    with pytest.raises(DiagError, match=r"problems.jsonl:1: field 'answer' must be int or float or str"):
        read_problems(bad)
    for answer, message in ((" $ ", "answer must not be empty"), (float("nan"), "answer must be a finite number")):
        bad.write_text(json.dumps({"problem_id": "p0", "question": "q", "answer": answer}) + "\n")
        with pytest.raises(DiagError, match=f"problems.jsonl:1: {message}"):
            read_problems(bad)
    bad.write_text(json.dumps({"problem_id": "p0", "question": "q", "answer": 1}) * 1 + "\n"
                   + json.dumps({"problem_id": "p0", "question": "q", "answer": 1}) + "\n")
    with pytest.raises(DiagError, match=r"problems.jsonl:2: problem_id must be non-empty and unique"):
        read_problems(bad)


def test_the_app_form_imports_chats_with_a_problems_file_like_the_cli(tmp_path):
    """The launch form is generated from Config: rollouts and problems files are text fields; blanks are None."""
    from apps.forms import ConfigForm

    chats = tmp_path / "chats.jsonl"
    chats.write_text("".join(json.dumps(_chat(pid, mode, bool(ok))) + "\n"
                             for (pid, mode), flags in FLAGS.items() for ok in flags))
    form = ConfigForm(analysis.Config, analysis.Config())
    assert "problems_file" in form.widgets and "problems_sha256" not in form.widgets
    form.widgets["rollouts_file"].value = str(chats)
    form.widgets["problems_file"].value = str(_problems_file(tmp_path))
    form.widgets["n_bootstrap"].value = 200
    config = analysis.ANALYSIS.pin(form.config())
    cli_config = analysis.import_config(chats, n_bootstrap=200, problems=_problems_file(tmp_path))
    assert config == cli_config  # the same run id as `diag tir import --problems`
    assert contract.run(analysis.ANALYSIS, config)[1].summary()["expansion"] == ["p0"]
    form.widgets["problems_file"].value = ""
    assert form.config().problems_file is None


def test_graded_schema_lines_without_correct_are_graded_and_mode_is_inferred(tmp_path):
    lines = [{"problem_id": "p1", "sample": 0, "response": "<code>print(12)</code>\nAnswer: 12"},
             {"problem_id": "p1", "sample": 0, "response": "no idea", "answer": 12},  # a given answer is graded
             {"problem_id": "p1", "sample": 1, "response": "Answer: 12", "correct": False}]  # given: trusted
    path = _write(tmp_path, [json.dumps(x) + "\n" for x in lines])
    rollouts, _ = read_rollouts(path, read_problems(_problems_file(tmp_path)))
    assert [(r.mode, r.sample, r.correct, r.tool_calls) for r in rollouts] == [
        ("tool", 0, True, 1), ("text", 0, True, 0), ("text", 1, False, 0)]


def test_exact_answers_beyond_integers_are_graded_as_numbers_or_normalised_text(tmp_path):
    """A problems file of MATH-style answers; responses spell them other ways (or wrongly)."""
    problems = tmp_path / "problems.jsonl"
    answers = {"frac": "\\frac{3}{4}", "decimal": 2.5, "tuple": "(1, 2)", "var": "x = -5", "big": "1,000,000",
               "text": "\\text{Tuesday}"}
    problems.write_text("".join(json.dumps({"problem_id": k, "question": "q", "answer": v}) + "\n"
                                for k, v in answers.items()))
    cases = [  # (problem, response, correct?, stored answer)
        ("frac", "Answer: 0.75", True, "3/4"), ("frac", "so \\boxed{\\dfrac{3}{4}}", True, "3/4"),
        ("frac", "Answer: 3/5", False, "3/5"), ("decimal", "Answer: 5/2.", True, "5/2"),
        ("decimal", "Answer: 2.05", False, "41/20"), ("tuple", "Answer: $(1,2)$", True, "(1,2)"),
        ("tuple", "Answer: (2, 1)", False, "(2,1)"), ("var", "Answer: -5", True, -5),
        ("big", "Answer: 1000000 people", True, 1000000), ("text", "Answer: tuesday", True, "tuesday"),
        ("text", "<code>print('Tuesday')</code><interpreter>Answer: Tuesday</interpreter>", False, None),
    ]
    rollouts = tmp_path / "rollouts.jsonl"
    rollouts.write_text("".join(json.dumps({"problem_id": pid, "sample": i, "mode": mode, "response": response})
                                + "\n" for i, (pid, response, _, _) in enumerate(cases) for mode in ("text", "tool")))
    read, _ = read_rollouts(rollouts, read_problems(problems))
    graded = {(r.problem_id, r.sample): (r.correct, r.answer) for r in read if r.mode == "text"}
    assert [graded[(pid, i)] for i, (pid, *_) in enumerate(cases)] == [(ok, stored) for *_, ok, stored in cases]


def test_a_gsm8k_file_is_a_problems_file_and_its_answer_style_is_graded(tmp_path):
    """GSM8K's JSONL has only question and answer, the answer a worked solution ending in "#### N": ids come from
    line numbers, the answer from after the last ####, and a model tuned on GSM8K answers the same way."""
    problems = tmp_path / "gsm8k_test.jsonl"
    problems.write_text("".join(json.dumps(x) + "\n" for x in (
        {"question": "Natalia sold 48 clips in April and half as many in May. How many in total?",
         "answer": "In May she sold 48/2 = <<48/2=24>>24 clips.\nIn total 48+24 = <<48+24=72>>72.\n#### 72"},
        {"question": "A robe takes 2 bolts of blue fiber and half that of white. How many bolts in total?",
         "answer": "White: 2/2 = <<2/2=1>>1.\n#### 3"})))
    read = read_problems(problems)
    assert [(p["problem_id"], p["answer"]) for p in read.values()] == [("line-1", 72), ("line-2", 3)]
    responses = ["48/2 = 24, so 48 + 24 = 72.\n#### 72", "Answer: 72 clips", "so \\boxed{73}",  # line-1
                 "2 + 1 = 3 bolts\n#### 3\nthen more text", "<interpreter>#### 3</interpreter> I think 4"]  # line-2
    lines = [{"problem_id": "line-1" if i < 3 else "line-2", "sample": i, "mode": mode, "response": r}
             for i, r in enumerate(responses) for mode in ("text", "tool")]
    rollouts = tmp_path / "rollouts.jsonl"
    rollouts.write_text("".join(json.dumps(x) + "\n" for x in lines))
    graded, _ = read_rollouts(rollouts, read)
    assert [(r.correct, r.answer) for r in graded if r.mode == "text"] == [
        (True, 72), (True, 72), (False, 73), (True, 3), (False, None)]
