"""Tool-integrated and text-only rollouts of a causal LM on the problem suite, checked exactly.

Format (documented in the prompt itself): the model may write ``<code>...</code>``; the sandbox runs it and we
append ``<interpreter>OUTPUT</interpreter>`` before the model continues; it ends with a line
``Answer: <integer>`` (``<exact answer>`` for a problems file with other answers, graded by ``diag.tir.answers``).
Text-only mode uses the same few-shot questions answered without code. A rollout stops
at its answer line, at end-of-text, when it starts a new question, after ``max_tool_calls`` calls or at
``max_new_tokens`` sampled tokens (tool output does not count against that budget but is counted as cost).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from diag.tir.answers import Answer, answer_line, matches
from diag.tir.decoding import BatchDecoder, Sequence, inject
from diag.tir.problems import Problem
from diag.tir.sandbox import ExecResult, Sandbox

Mode = Literal["tool", "text"]
MODES: tuple[Mode, ...] = ("tool", "text")
MAX_TOOL_OUTPUT_CHARS = 300

_INSTRUCTIONS: dict[Mode, str] = {
    "tool": ("Solve each problem exactly. You may write Python inside <code>...</code>; its printed output comes "
             "back inside <interpreter>...</interpreter>. Finish with a line \"Answer: <integer>\".\n\n"),
    "text": "Solve each problem exactly. Finish with a line \"Answer: <integer>\".\n\n",
}
_EXAMPLES = [  # (question, code, answer): one per family, none of them in the suite
    ("What is 37 * 41?", "print(37 * 41)", 1517),
    ("What is the remainder when 9876 is divided by 13?", "print(9876 % 13)", 9876 % 13),
    ("In how many ways can a committee of 3 be chosen from 10 people?", "import math\nprint(math.comb(10, 3))", 120),
    ("What is the greatest common divisor of 84 and 126?", "import math\nprint(math.gcd(84, 126))", 42),
]
_INTERPRETER_SPAN = re.compile(r"<interpreter>.*?(</interpreter>|$)", re.DOTALL)


_TAGS = ("<interpreter>", "</interpreter>", "<code>", "</code>")


def interpreter_block(output: str) -> str:
    """Tool output in its block, with our tags inside it defused (``&lt;/interpreter>``): a program that prints
    ``</interpreter>`` would otherwise close the block early, and what it printed next (an ``Answer:`` line, a
    ``<code>`` block) would be graded and counted as the model's own text."""
    for tag in _TAGS:
        output = output.replace(tag, "&lt;" + tag[1:])
    return f"\n<interpreter>{output}</interpreter>\n"


def prompt_prefix(mode: Mode, integer_answers: bool = True) -> str:
    """The few-shot prompt shared by every problem of a mode (asking for an exact answer, not an integer, when
    some problem's answer is not one)."""
    instructions = _INSTRUCTIONS[mode]
    parts = [instructions if integer_answers else instructions.replace("<integer>", "<exact answer>")]
    for question, code, answer in _EXAMPLES:
        body = f"<code>{code}</code>{interpreter_block(str(answer))}" if mode == "tool" else ""
        parts.append(f"Question: {question}\n{body}Answer: {answer}\n\n")
    return "".join(parts)


def question_text(problem_question: str) -> str:
    return f"Question: {problem_question}\n"


def model_text(response: str) -> str:
    """The response without the tool's output blocks: what the model itself wrote, the only text graded."""
    return _INTERPRETER_SPAN.sub("", response)


def extract_answer(response: str) -> Answer | None:
    """The answer on the model's first ``Answer:`` line (see ``diag.tir.answers``), ignoring anything the tool
    printed."""
    return answer_line(model_text(response))


def tool_feedback(result: ExecResult) -> str:
    """What the model sees: stdout, plus the last stderr line on failure (as a terminal would show it)."""
    text = result.stdout
    if result.status == "timeout":
        text += "TimeoutError: the program ran too long"
    elif result.status != "ok":
        last = result.stderr.strip().splitlines()
        text += last[-1] if last else f"{result.status}"
    text = text.strip()
    return text if len(text) <= MAX_TOOL_OUTPUT_CHARS else text[:MAX_TOOL_OUTPUT_CHARS] + "...(truncated)"


@dataclass
class Rollout:
    """One sample of one problem in one mode, with the token accounting the cost metrics need."""

    problem_id: str
    mode: str
    sample: int
    response: str
    correct: bool
    answer: Answer | None = None  # an int, an exact fraction ("3/4") or normalised text
    generated_tokens: int = 0
    tool_calls: int = 0
    tool_input_tokens: int = 0  # tokens of code the model sent to the tool (part of generated_tokens)
    tool_output_tokens: int = 0  # tokens of interpreter output fed back to the model
    first_call_token: int | None = None  # generated-token index where the first <code> began
    exec_statuses: list[str] = field(default_factory=list)
    finish: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Tracker:
    """Per-sequence state of the multi-turn protocol: when to call the tool, when the rollout has ended."""

    def __init__(self, mode: Mode, tokenizer: Any, sandbox: Sandbox | None, max_tool_calls: int,
                 stop_ids: set[int]) -> None:
        self.mode, self.tokenizer, self.sandbox = mode, tokenizer, sandbox
        self.max_tool_calls, self.stop_ids = max_tool_calls, stop_ids
        self.info: dict[int, dict[str, Any]] = {}

    def state(self, seq: Sequence) -> dict[str, Any]:
        return self.info.setdefault(id(seq), {"turn_start": 0, "calls": 0, "in_tok": 0, "out_tok": 0,
                                              "first": None, "statuses": [], "finish": "budget"})

    def __call__(self, token: int, seq: Sequence) -> None:
        st = self.state(seq)
        if token in self.stop_ids:
            st["finish"], seq.done = "eos", True
            return
        turn = self.tokenizer.decode(seq.tokens[st["turn_start"]:], skip_special_tokens=True)
        if self.mode == "tool" and st["first"] is None and "<code>" in turn:
            st["first"] = seq.generated - 1
        answer_at = turn.find("Answer:")
        if answer_at >= 0 and "\n" in turn[answer_at:]:
            st["finish"], seq.done = "answer", True
        elif "\nQuestion:" in turn or "\n\n\n" in turn:
            st["finish"], seq.done = "new_question", True
        elif self.mode == "tool" and turn.rstrip().endswith("</code>"):
            self._call_tool(seq, st, turn)

    def _call_tool(self, seq: Sequence, st: dict[str, Any], turn: str) -> None:
        if st["calls"] >= self.max_tool_calls or self.sandbox is None:
            st["finish"], seq.done = "tool_limit", True
            return
        code = turn[turn.rfind("<code>") + len("<code>"):turn.rfind("</code>")] if "<code>" in turn else ""
        result = self.sandbox.run(code)
        st["calls"] += 1
        st["statuses"].append(result.status)
        st["in_tok"] += len(self.tokenizer(code, add_special_tokens=False).input_ids)
        fed = self.tokenizer(interpreter_block(tool_feedback(result)), add_special_tokens=False).input_ids
        st["out_tok"] += len(fed)
        inject(seq, fed)
        st["turn_start"] = len(seq.tokens)

    def rollout(self, seq: Sequence, problem: Problem, sample: int) -> Rollout:
        st = self.state(seq)
        response = self.tokenizer.decode(seq.tokens, skip_special_tokens=True)
        answer = extract_answer(response)
        return Rollout(problem.problem_id, self.mode, sample, response, matches(answer, problem.answer), answer,
                       seq.generated, st["calls"], st["in_tok"], st["out_tok"], st["first"], st["statuses"],
                       st["finish"])


def sample_rollouts(model: Any, tokenizer: Any, problems: list[Problem], mode: Mode, n_samples: int,
                    decoder: BatchDecoder, sandbox: Sandbox | None, max_tool_calls: int,
                    integer_answers: bool = True) -> list[Rollout]:
    """``n_samples`` rollouts of each problem in one batch (the shared prompt is encoded once).
    ``integer_answers``: whether every problem of the run (not only this batch's) has an integer answer."""
    stop_ids = {t for t in (tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|im_end|>")) if t is not None}
    tracker = _Tracker(mode, tokenizer, sandbox if mode == "tool" else None, max_tool_calls, stop_ids)
    prefix = tokenizer(prompt_prefix(mode, integer_answers), add_special_tokens=False).input_ids
    questions = [tokenizer(question_text(p.question), add_special_tokens=False).input_ids for p in problems]
    seqs = decoder.run(prefix, questions, n_samples, tracker)
    return [tracker.rollout(seqs[i * n_samples + s], problem, s)
            for i, problem in enumerate(problems) for s in range(n_samples)]
