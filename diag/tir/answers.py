"""Exact answers beyond integers: what the model wrote after ``Answer:`` (or in its last ``\\boxed{}``, or after
GSM8K's ``####``), compared with a problem's answer as exact numbers where both read as one, else as normalised text.

Numbers: integers (``1,024``), decimals (``-2.50``), fractions (``3/4``, ``\\frac{3}{4}``, ``\\dfrac34``), each
compared as an exact rational, so ``0.75 == 3/4``. Text (``x^2+1``, ``(1, 2)``, ``\\sqrt{2}``): lower-cased,
without spaces, ``$``, ``\\left``/``\\right``, ``\\text{}`` wrappers and a final full stop. An answer line whose
whole text is not a number but starts with one (``42 apples``) answers that number, as the integer grader did.
"""

from __future__ import annotations

import re
from fractions import Fraction

Answer = int | str  # a problem's expected answer, or what a response answered (int when it is an integer)

_NUMBER = r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|-?\.\d+"
_LEADING = re.compile(rf"\s*\$?\s*({_NUMBER}(?:\s*/\s*\d+)?)(?![\d.,/])")
# \frac{3}{4}, \dfrac{-3}{4}, \frac34 (brace-less arguments are one digit each, as in LaTeX)
_FRAC = re.compile(r"^(-?)\\[dt]?frac(?:\{(-?\d+)\}|(\d))(?:\{(\d+)\}|(\d))$")
_VARIABLE = re.compile(r"^\s*[a-zA-Z]\w*\s*=\s*")  # "x = 5": the value
_TEXT_WRAPPER = re.compile(r"\\(?:text|mathrm|textbf|mathbf)\{([^{}]*)\}")
_ANSWER_LINE = re.compile(r"Answer:[ \t]*([^\n]*)")
GSM8K_MARK = "####"


def normalise(text: str) -> str:
    """Text as compared: unwrapped, lower-cased, spaces and decoration removed."""
    text = _TEXT_WRAPPER.sub(r"\1", text.strip())
    text = text.replace("\\left", "").replace("\\right", "").replace("$", "").replace("\\!", "")
    text = re.sub(r"\s+", "", text).rstrip(".").lower()
    return text


def as_number(text: str) -> Fraction | None:
    """The exact value of a number written as an integer, decimal or fraction; None for anything else."""
    text = normalise(text)
    match = _FRAC.match(text)
    if match:
        sign, braced_top, top, braced_bottom, bottom = match.groups()
        value = _fraction(braced_top or top, braced_bottom or bottom)
        return -value if sign and value is not None else value
    if re.fullmatch(rf"(?:{_NUMBER})/-?\d+", text):
        numerator, denominator = text.split("/")
        return _fraction(numerator.replace(",", ""), denominator)
    if re.fullmatch(_NUMBER, text):
        return Fraction(text.replace(",", ""))
    return None


def _fraction(numerator: str, denominator: str) -> Fraction | None:
    return Fraction(Fraction(numerator), int(denominator)) if int(denominator) else None


def canonical(text: str) -> Answer | None:
    """How an answer is stored: an int when it is one, the exact number otherwise ("3/4"), else normalised
    text; None for nothing."""
    text = _VARIABLE.sub("", text)
    value = as_number(text)
    if value is None:
        match = _LEADING.match(text)
        value = as_number(match.group(1)) if match else None
    if value is not None:
        return int(value) if value.denominator == 1 else str(value)
    return normalise(text) or None


def expected(answer: float | str) -> Answer:
    """A problem's answer in the stored form (a JSON float by its shortest decimal spelling, exactly; a GSM8K
    answer, worked solution then ``#### 72``, by what follows its last ``####``)."""
    if isinstance(answer, float):
        answer = repr(answer)
    if isinstance(answer, str) and GSM8K_MARK in answer:
        answer = answer.rsplit(GSM8K_MARK, 1)[1]
    return answer if isinstance(answer, int) else canonical(answer) or normalise(answer)


def matches(given: Answer | None, answer: Answer) -> bool:
    """Whether a graded answer equals a problem's answer: as exact numbers where both are, else as text."""
    if given is None:
        return False
    given, answer = (canonical(x) if isinstance(x, str) else x for x in (given, answer))
    a, b = as_number(str(given)), as_number(str(answer))
    if a is not None and b is not None:
        return a == b
    return given is not None and normalise(str(given)) == normalise(str(answer))


def answer_line(text: str) -> Answer | None:
    """The answer on the first ``Answer:`` line of ``text`` (a model's own words), or None."""
    match = _ANSWER_LINE.search(text)
    return canonical(match.group(1)) if match else None


def last_marked(text: str) -> Answer | None:
    """The answer after the last ``####`` (GSM8K's final-answer line, which models tuned on it write), or None."""
    _, mark, rest = text.rpartition(GSM8K_MARK)
    return canonical(rest.split("\n", 1)[0]) if mark else None


def last_boxed(text: str) -> Answer | None:
    """The content of the last ``\\boxed{...}`` (braces balanced), or None."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, i = 0, start + len("\\boxed")
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return canonical(text[i + 1:j])
    return None
