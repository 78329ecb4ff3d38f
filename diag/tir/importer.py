"""Import rollouts sampled elsewhere (vLLM, an OpenAI-compatible server, any engine) from JSONL, all or nothing.

Five line shapes, which may be mixed in one file (or one JSON array of them):

1. Our graded schema (what ``diag tir analyse RUN --export-jsonl`` writes)::

    {"problem_id": str, "sample": int >= 0, "response": str,
     optional: "mode": "tool" | "text", "correct": bool, "answer": int | null, "generated_tokens": int,
     "tool_calls": int, "tool_input_tokens": int, "tool_output_tokens": int, "first_call_token": int | null,
     "exec_statuses": [str], "finish": str, "family": str, "level": int}

2. A chat transcript: ``{"messages": [...], optional "problem_id" | "custom_id", "mode", "correct"}``. Messages
   from the first assistant turn on are the rollout: assistant ``content``, each of its ``tool_calls`` written as
   ``<code>ARGUMENTS</code>`` (the ``code`` argument when the arguments are JSON with one), and each
   ``role: tool`` result as ``<interpreter>OUTPUT</interpreter>`` (the legacy ``function_call`` and
   ``role: function`` likewise). Rollouts that already use our
   ``<code>``/``<interpreter>`` tags in plain assistant text count their ``<code>`` blocks as tool calls.
   Without an id, the problem is the one whose question appears in the first user message.

3. A vLLM ``run-batch`` / OpenAI Batch output line:
   ``{"custom_id": "PROBLEM_ID[/tool|/text][/LABEL]", "response": {"status_code": 200, "body": {"choices":
   [{"message": {...}} or {"text": ...}], "usage": {...}}}, "error": null}``; every choice is one sample. A
   ``/v1/responses`` batch line has a Responses API object as its body instead (one sample).

4. An OpenAI Responses API object: ``{"output": [...], optional "input", "usage", "problem_id" | "custom_id",
   "mode", "correct"}``. Output items become the rollout: ``message`` text, each ``function_call`` as
   ``<code>ARGUMENTS</code>``, each ``function_call_output`` as ``<interpreter>OUTPUT</interpreter>``, each built-in
   ``code_interpreter_call`` as its code and then its logs; ``reasoning`` items are skipped. Without an id, the
   problem is the one whose question appears in the user text of ``input``.

5. vLLM offline generation (``LLM.generate``'s ``RequestOutput`` as JSON): ``{"prompt": str, "outputs": [{"text":
   str, optional "token_ids", "finish_reason"}], optional "problem_id" | "custom_id", "mode", "correct"}``; every
   output is one sample, its ``<code>`` blocks its tool calls. Without an id, the problem is the one whose question
   appears in ``prompt``.

Grading: a line without ``correct`` is graded with our checker (the integer on the ``Answer:`` line, or the last
``\\boxed{N}``) against the answer in the problems file (JSONL of ``{"problem_id", "question", "answer",
optional "family", "level"}``, as ``diag.tir.problems.Problem`` writes them). Mode: the line's ``mode``, or the
one in ``custom_id``; otherwise "tool" when the rollout called a tool and "text" when it did not. Inferring
mode groups samples by whether a tool was used, not by whether one was offered: give the mode explicitly when
both kinds of sampling come from one engine run. Samples without a number are numbered per (problem, mode) in
file order. Token counts come from ``usage`` when a response holds one choice; otherwise they are unknown (0).

Every line is validated before anything is returned; the first bad line raises ``DiagError`` as
``PATH:LINE: problem``. Each problem needs rollouts in both modes, and (problem, mode, sample) must be unique.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from diag.errors import DiagError
from diag.files import message_text, read_json_lines
from diag.tir.answers import (
    Answer,
    answer_line,
    canonical,
    expected,
    last_boxed,
    last_marked,
    matches,
    normalise,
)
from diag.tir.rollouts import MODES, Rollout, interpreter_block, model_text
from diag.tir.sandbox import STATUSES

_REQUIRED: dict[str, type | tuple[type, ...]] = {"problem_id": str, "sample": int, "response": str}
_OPTIONAL: dict[str, type | tuple[type, ...]] = {
    "mode": str, "correct": bool, "answer": (int, str, type(None)), "generated_tokens": int, "tool_calls": int,
    "tool_input_tokens": int, "tool_output_tokens": int, "first_call_token": (int, type(None)),
    "exec_statuses": list, "finish": str, "family": str, "level": int,
}
_PROBLEM_FIELDS: dict[str, type | tuple[type, ...]] = {
    "problem_id": str, "question": str, "answer": (int, float, str), "family": str, "level": int}
_CODE_ARGUMENTS = ("code", "script", "source", "program", "input")


def _check_type(where: str, key: str, value: Any, expected: type | tuple[type, ...]) -> None:
    types = expected if isinstance(expected, tuple) else (expected,)
    if isinstance(value, bool) and bool not in types:  # JSON true is not an integer count
        ok = False
    else:
        ok = isinstance(value, types)
    if not ok:
        names = " or ".join("null" if t is type(None) else t.__name__ for t in types)
        raise DiagError(f"{where}: field {key!r} must be {names}, got {json.dumps(value)}")


def read_problems(path: Path) -> dict[str, dict[str, Any]]:
    """problem_id -> {problem_id, family, level, question, answer} from a problems JSONL file; a line without a
    problem_id (GSM8K's files have only question and answer) is ``line-N``, N its line number."""
    problems: dict[str, dict[str, Any]] = {}
    for lineno, obj in read_json_lines(path, "problems file"):
        where = f"{path}:{lineno}"
        obj = {"problem_id": f"line-{lineno}", **obj}
        missing = [k for k in ("question", "answer") if k not in obj]
        if missing:
            raise DiagError(f"{where}: missing field(s) {', '.join(missing)}")
        unknown = sorted(set(obj) - set(_PROBLEM_FIELDS))
        if unknown:
            raise DiagError(f"{where}: unknown field(s) {', '.join(unknown)}")
        for key, value in obj.items():
            _check_type(where, key, value, _PROBLEM_FIELDS[key])
        if not obj["problem_id"] or obj["problem_id"] in problems:
            raise DiagError(f"{where}: problem_id must be non-empty and unique, got {obj['problem_id']!r}")
        if isinstance(obj["answer"], str) and not normalise(obj["answer"]):
            raise DiagError(f"{where}: answer must not be empty")
        if isinstance(obj["answer"], float) and not math.isfinite(obj["answer"]):
            raise DiagError(f"{where}: answer must be a finite number, got {obj['answer']}")
        problems[obj["problem_id"]] = {"problem_id": obj["problem_id"], "family": obj.get("family", "imported"),
                                       "level": obj.get("level", 0), "question": obj["question"],
                                       "answer": expected(obj["answer"])}
    return problems


def grade(response: str) -> Answer | None:
    """Our checker's answer: the first ``Answer:`` line, else the last ``\\boxed{...}``, else the last ``#### N``,
    all in what the model wrote (a program that prints ``\\boxed{42}`` does not answer for it); see
    ``diag.tir.answers``."""
    written = model_text(response)
    for reader in (answer_line, last_boxed, last_marked):
        answer = reader(written)
        if answer is not None:
            return answer
    return None


@dataclass
class _Draft:
    """One rollout as read from a line, before its mode is settled, its sample numbered and its answer graded."""

    where: str
    lineno: int
    problem_id: str
    response: str
    mode: str | None = None
    sample: int | None = None
    correct: bool | None = None
    fields: dict[str, Any] = field(default_factory=dict)  # the remaining Rollout fields
    meta: dict[str, Any] = field(default_factory=dict)  # family, level given on the line


def _graded(where: str, lineno: int, obj: dict[str, Any]) -> _Draft:
    missing = [k for k in _REQUIRED if k not in obj]
    if missing:
        raise DiagError(f"{where}: missing field(s) {', '.join(missing)}")
    unknown = sorted(set(obj) - set(_REQUIRED) - set(_OPTIONAL))
    if unknown:
        raise DiagError(f"{where}: unknown field(s) {', '.join(unknown)}")
    for key, value in obj.items():
        _check_type(where, key, value, {**_REQUIRED, **_OPTIONAL}[key])
    if obj["sample"] < 0 or not obj["problem_id"]:
        raise DiagError(f"{where}: sample must be >= 0 and problem_id non-empty")
    for key in ("generated_tokens", "tool_calls", "tool_input_tokens", "tool_output_tokens"):
        if obj.get(key, 0) < 0:
            raise DiagError(f"{where}: {key} must be >= 0")
    bad = [s for s in obj.get("exec_statuses", []) if s not in STATUSES]
    if bad:
        raise DiagError(f"{where}: unknown exec status {bad[0]!r}; known: {', '.join(STATUSES)}")
    obj = dict(obj)
    meta = {k: obj.pop(k) for k in ("family", "level") if k in obj}
    head = {k: obj.pop(k) for k in ("problem_id", "response", "mode", "sample", "correct") if k in obj}
    if "tool_calls" not in obj:
        obj["tool_calls"] = head["response"].count("<code>")
    return _Draft(where, lineno, head["problem_id"], head["response"], head.get("mode"), head["sample"],
                  head.get("correct"), obj, meta)


def _call_code(where: str, call: Any) -> str:
    """The code a tool call sends: its ``code`` argument (or its only string argument), else the raw arguments."""
    function = call.get("function") if isinstance(call, dict) else None
    if not isinstance(function, dict) or not isinstance(function.get("arguments", ""), str | dict):
        raise DiagError(f"{where}: a tool call needs \"function\": {{\"name\", \"arguments\"}}")
    arguments = function.get("arguments", "")
    try:
        parsed = json.loads(arguments) if isinstance(arguments, str) else arguments
    except json.JSONDecodeError:
        return arguments
    if isinstance(parsed, dict):
        for key in _CODE_ARGUMENTS:
            if isinstance(parsed.get(key), str):
                return parsed[key]
        strings = [v for v in parsed.values() if isinstance(v, str)]
        if len(strings) == 1:
            return strings[0]
    return arguments if isinstance(arguments, str) else json.dumps(arguments)


def _assistant_text(where: str, message: dict[str, Any]) -> tuple[str, int]:
    """An assistant message in our tag format, and how many tool calls it made."""
    calls = message.get("tool_calls") or []
    if not isinstance(calls, list):
        raise DiagError(f"{where}: tool_calls must be a list")
    if message.get("function_call"):  # the legacy single call (before tool_calls), answered by role "function"
        calls = [*calls, {"function": message["function_call"]}]
    text = message_text(where, message.get("content"))
    tagged = text.count("<code>")
    code = "".join(f"<code>{_call_code(where, c)}</code>" for c in calls)
    return text + code, len(calls) + tagged


def _transcript(where: str, messages: Any) -> tuple[str, int, str]:
    """(response, tool calls, user prompt) of a chat: the turns from the first assistant message on."""
    if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
        raise DiagError(f"{where}: messages must be a non-empty list of objects")
    roles = [m.get("role") for m in messages]
    unknown = [r for r in roles if r not in ("system", "developer", "user", "assistant", "tool", "function")]
    if unknown:
        raise DiagError(f"{where}: unknown message role {unknown[0]!r}")
    if "assistant" not in roles:
        raise DiagError(f"{where}: the chat has no assistant message")
    first = roles.index("assistant")
    prompt = next((message_text(where, m.get("content")) for m in messages[:first] if m.get("role") == "user"), "")
    parts, calls = [], 0
    for message in messages[first:]:
        role = message.get("role")
        if role == "assistant":
            text, n = _assistant_text(where, message)
            parts.append(text)
            calls += n
        elif role in ("tool", "function"):
            parts.append(interpreter_block(message_text(where, message.get("content"))))
    return "".join(parts), calls, prompt


def _response_output(where: str, items: Any) -> tuple[str, int]:
    """A Responses API ``output`` list in our tag format, and how many tool calls it made (see line shape 4)."""
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise DiagError(f"{where}: output must be a list of objects")
    parts, calls = [], 0
    for item in items:
        kind = item.get("type")
        if kind == "message":
            text = message_text(where, item.get("content"))
            parts.append(text)
            calls += text.count("<code>")
        elif kind == "function_call":
            parts.append(f"<code>{_call_code(where, {'function': {'arguments': item.get('arguments', '')}})}</code>")
            calls += 1
        elif kind == "function_call_output":
            parts.append(interpreter_block(message_text(where, item.get("output"))))
        elif kind == "code_interpreter_call":
            outputs = item.get("outputs") or []
            logs = "".join(str(o.get("logs", "")) for o in outputs if isinstance(o, dict) and o.get("type") == "logs")
            parts.append(f"<code>{item.get('code') or ''}</code>{interpreter_block(logs)}")
            calls += 1
        elif kind != "reasoning":
            raise DiagError(f"{where}: unknown output item type {kind!r} (expected message, function_call, "
                            "function_call_output, code_interpreter_call or reasoning)")
    return "".join(parts), calls


def _input_text(where: str, given: Any) -> str:
    """The user text of a Responses API ``input``: a string, or the user messages of a list of items."""
    if isinstance(given, str):
        return given
    if isinstance(given, list):
        return "\n".join(message_text(where, i.get("content")) for i in given
                         if isinstance(i, dict) and i.get("role") == "user")
    return ""


class _Problems:
    """Finds the problem a line answers: by id, by ``custom_id`` prefix, or by its question in the prompt."""

    def __init__(self, problems: dict[str, dict[str, Any]] | None) -> None:
        self.problems = problems

    def from_custom_id(self, where: str, custom_id: Any) -> tuple[str, str | None]:
        """``PROBLEM_ID[/tool|/text][/LABEL...]`` -> (problem id, mode or None)."""
        if not isinstance(custom_id, str) or not custom_id:
            raise DiagError(f"{where}: custom_id must be a non-empty string")
        parts = custom_id.split("/")
        known = self.problems or {}
        for cut in range(len(parts), 0, -1):
            head = "/".join(parts[:cut])
            if head in known or (not known and cut == 1):
                modes = [p for p in parts[cut:] if p in MODES]
                return head, modes[0] if modes else None
        raise DiagError(f"{where}: custom_id {custom_id!r} names no problem of the problems file "
                        "(expected PROBLEM_ID[/tool|/text][/LABEL])")

    def from_prompt(self, where: str, prompt: str) -> str:
        if not self.problems:
            raise DiagError(f"{where}: the chat names no problem_id or custom_id, and there is no problems file "
                            "to match its question against")
        matches = [pid for pid, p in self.problems.items() if p["question"] and p["question"] in prompt]
        if len(matches) != 1:
            found = "no" if not matches else f"{len(matches)} ({', '.join(matches[:3])})"
            raise DiagError(f"{where}: the first user message contains {found} problem question(s); give "
                            "problem_id or custom_id")
        return matches[0]


def _explicit_mode(where: str, obj: dict[str, Any], from_id: str | None) -> str | None:
    mode = obj.get("mode", from_id)
    if mode is not None and mode not in MODES:
        raise DiagError(f"{where}: mode must be one of {', '.join(MODES)}, got {mode!r}")
    return mode


def _transcript_draft(where: str, lineno: int, obj: dict[str, Any], finder: _Problems, response: str,
                      prompt: str, fields: dict[str, Any]) -> _Draft:
    """A chat or Responses API line's draft: its problem from problem_id, custom_id or the prompt's question."""
    id_mode = None
    if "problem_id" in obj:
        _check_type(where, "problem_id", obj["problem_id"], str)
        problem_id = obj["problem_id"]
    elif "custom_id" in obj:
        problem_id, id_mode = finder.from_custom_id(where, obj["custom_id"])
    else:
        problem_id = finder.from_prompt(where, prompt)
    if "correct" in obj:
        _check_type(where, "correct", obj["correct"], bool)
    return _Draft(where, lineno, problem_id, response, _explicit_mode(where, obj, id_mode), None,
                  obj.get("correct"), fields)


def _chat(where: str, lineno: int, obj: dict[str, Any], finder: _Problems) -> _Draft:
    response, calls, prompt = _transcript(where, obj["messages"])
    return _transcript_draft(where, lineno, obj, finder, response, prompt, {"tool_calls": calls})


def _responses(where: str, lineno: int, obj: dict[str, Any], finder: _Problems) -> _Draft:
    response, calls = _response_output(where, obj["output"])
    fields = {"tool_calls": calls, "generated_tokens": _output_tokens(obj.get("usage"))}
    return _transcript_draft(where, lineno, obj, finder, response, _input_text(where, obj.get("input")), fields)


def _vllm_offline(where: str, lineno: int, obj: dict[str, Any], finder: _Problems) -> list[_Draft]:
    outputs = obj["outputs"]
    if not isinstance(outputs, list) or not outputs or not all(isinstance(o, dict) for o in outputs):
        raise DiagError(f"{where}: outputs must be a non-empty list of objects")
    prompt = obj.get("prompt") if isinstance(obj.get("prompt"), str) else ""
    drafts = []
    for output in sorted(outputs, key=lambda o: o.get("index", 0)):
        text = output.get("text")
        if not isinstance(text, str):
            raise DiagError(f"{where}: each output needs a \"text\" string")
        tokens = output.get("token_ids")
        fields = {"tool_calls": text.count("<code>"), "finish": str(output.get("finish_reason") or ""),
                  "generated_tokens": len(tokens) if isinstance(tokens, list) else 0}
        drafts.append(_transcript_draft(where, lineno, obj, finder, text, prompt, fields))
    return drafts


def _output_tokens(usage: Any) -> int:
    """Generated tokens from a ``usage`` object (chat: completion_tokens, Responses API: output_tokens), else 0."""
    tokens = usage.get("completion_tokens", usage.get("output_tokens", 0)) if isinstance(usage, dict) else 0
    return tokens if isinstance(tokens, int) and not isinstance(tokens, bool) and tokens >= 0 else 0


def _batch(where: str, lineno: int, obj: dict[str, Any], finder: _Problems) -> list[_Draft]:
    problem_id, id_mode = finder.from_custom_id(where, obj.get("custom_id"))
    if obj.get("error"):
        raise DiagError(f"{where}: the request failed: {json.dumps(obj['error'])[:120]}")
    response = obj.get("response") or {}
    status = response.get("status_code", 200)
    body = response.get("body")
    if status != 200 or not isinstance(body, dict):
        raise DiagError(f"{where}: the request failed (status {status}); remove the line or resubmit it")
    mode = _explicit_mode(where, obj, id_mode)
    if "choices" not in body and "output" in body:  # a /v1/responses batch: one Responses API object
        text, calls = _response_output(where, body["output"])
        fields = {"tool_calls": calls, "finish": str(body.get("status") or ""),
                  "generated_tokens": _output_tokens(body.get("usage"))}
        return [_Draft(where, lineno, problem_id, text, mode, None, None, fields)]
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices or not all(isinstance(c, dict) for c in choices):
        raise DiagError(f"{where}: response.body.choices (or output) must be a non-empty list of objects")
    tokens = _output_tokens(body.get("usage")) if len(choices) == 1 else 0
    drafts = []
    for choice in sorted(choices, key=lambda c: c.get("index", 0)):
        if isinstance(choice.get("message"), dict):
            text, calls = _assistant_text(where, choice["message"])
        elif isinstance(choice.get("text"), str):
            text, calls = choice["text"], choice["text"].count("<code>")
        else:
            raise DiagError(f"{where}: a choice needs a \"message\" object or a \"text\" string")
        fields = {"tool_calls": calls, "finish": str(choice.get("finish_reason") or ""), "generated_tokens": tokens}
        drafts.append(_Draft(where, lineno, problem_id, text, mode, None, None, fields))
    return drafts


def _drafts(where: str, lineno: int, obj: dict[str, Any], finder: _Problems) -> list[_Draft]:
    if "messages" in obj:
        return [_chat(where, lineno, obj, finder)]
    if "output" in obj:
        return [_responses(where, lineno, obj, finder)]
    if "outputs" in obj:
        return _vllm_offline(where, lineno, obj, finder)
    if isinstance(obj.get("response"), dict) or ("custom_id" in obj and obj.get("response") is None):
        return _batch(where, lineno, obj, finder)
    return [_graded(where, lineno, obj)]


def read_rollouts(path: Path, problems: dict[str, dict[str, Any]] | None = None,
                  ) -> tuple[list[Rollout], dict[str, dict[str, Any]]]:
    """All rollouts of a JSONL file and per-problem metadata, or a ``DiagError`` naming the first bad line.

    ``problems`` (from ``read_problems``) grades lines without ``correct`` and resolves ids and questions.
    """
    finder = _Problems(problems)
    drafts = [d for lineno, obj in read_json_lines(path, "rollout file")
              for d in _drafts(f"{path}:{lineno}", lineno, obj, finder)]
    explicit: dict[tuple[str, str, int], int] = {}
    for d in drafts:
        if problems is not None and d.problem_id not in problems:
            raise DiagError(f"{d.where}: problem {d.problem_id!r} is not in the problems file")
        if d.mode is None:
            d.mode = "tool" if d.fields.get("tool_calls", 0) > 0 else "text"
        elif d.mode not in MODES:
            raise DiagError(f"{d.where}: mode must be one of {', '.join(MODES)}, got {d.mode!r}")
        if d.sample is not None:
            key = (d.problem_id, d.mode, d.sample)
            if key in explicit:
                raise DiagError(f"{d.where}: duplicate rollout {key} (first on line {explicit[key]})")
            explicit[key] = d.lineno
        if d.correct is None:
            if problems is None:
                raise DiagError(f"{d.where}: no \"correct\" field and no problems file to grade the answer "
                                "against (pass --problems)")
            if "answer" in d.fields:  # a given answer is graded, in the stored form
                given = d.fields["answer"]
                answer = canonical(given) if isinstance(given, str) else given
            else:
                answer = grade(d.response)
            d.correct = matches(answer, problems[d.problem_id]["answer"])
            d.fields["answer"] = answer
    rollouts: list[Rollout] = []
    meta: dict[str, dict[str, Any]] = {}
    first_line: dict[str, int] = {}
    next_sample: dict[tuple[str, str], int] = {}
    for d in drafts:
        if d.sample is None:  # number in file order, skipping the numbers lines gave explicitly
            key2 = (d.problem_id, d.mode)
            sample = next_sample.get(key2, 0)
            while (d.problem_id, d.mode, sample) in explicit:
                sample += 1
            d.sample, next_sample[key2] = sample, sample + 1
        first_line.setdefault(d.problem_id, d.lineno)
        known = (problems or {}).get(d.problem_id, {})
        meta.setdefault(d.problem_id, {"family": known.get("family", d.meta.get("family", "imported")),
                                       "level": known.get("level", d.meta.get("level", 0)),
                                       "question": known.get("question"), "answer": known.get("answer")})
        rollouts.append(Rollout(problem_id=d.problem_id, mode=d.mode, sample=d.sample, response=d.response,
                                correct=bool(d.correct), **d.fields))
    modes: dict[str, set[str]] = {}
    for r in rollouts:
        modes.setdefault(r.problem_id, set()).add(r.mode)
    for problem_id, present in modes.items():
        if present != set(MODES):
            raise DiagError(f"{path}:{first_line[problem_id]}: problem {problem_id!r} has rollouts for mode "
                            f"{', '.join(sorted(present))} only; both tool and text are needed")
    return rollouts, meta
