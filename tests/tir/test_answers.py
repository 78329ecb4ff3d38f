"""Exact answers beyond integers: numbers compare as exact rationals whatever their spelling, the rest as
normalised text, and an answer line that starts with a number answers that number (as the integer grader did)."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from diag.tir.answers import answer_line, canonical, expected, last_boxed, matches


@pytest.mark.parametrize(("text", "stored"), [
    ("42", 42), ("1,024", 1024), ("-12", -12), ("3/4", "3/4"), ("0.75", "3/4"), ("\\frac{3}{4}", "3/4"),
    ("\\dfrac34", "3/4"), ("-\\frac{3}{4}", "-3/4"), ("\\frac{-3}{4}", "-3/4"), ("2.50", "5/2"), (".5", "1/2"),
    ("42 apples", 42), ("$18", 18), ("x = 5", 5), ("3/4.", "3/4"), ("2, 3", "2,3"), ("(1, 2)", "(1,2)"),
    ("\\text{ Tuesday }", "tuesday"), ("\\sqrt{2}", "\\sqrt{2}"), ("3/0", "3/0"), ("", None), ("  $ ", None),
])
def test_answers_are_stored_exactly(text: str, stored: object) -> None:
    assert canonical(text) == stored


def test_lines_and_boxes_are_read_from_the_models_words() -> None:
    assert answer_line("work\nAnswer: \\frac{1}{2}\nAnswer: 3") == "1/2"
    assert answer_line("no answer here") is None
    assert last_boxed("first \\boxed{1} then \\boxed{\\frac{1}{2}}") == "1/2"
    assert last_boxed("\\boxed{unclosed") is None
    assert expected(0.1) == "1/10" and expected(7) == 7 and expected("x = -5") == -5
    assert expected("12 * 3 = <<12*3=36>>36\n#### 1,036") == 1036  # GSM8K: what follows the last ####


@given(st.fractions(min_value=-10**6, max_value=10**6, max_denominator=10**4))
def test_every_spelling_of_a_number_matches_it_and_no_other(value: Fraction) -> None:
    spellings = [f"{value.numerator}/{value.denominator}", f"\\frac{{{value.numerator}}}{{{value.denominator}}}"]
    if value.denominator == 1:
        spellings += [str(value.numerator), f"{value.numerator:,}"]
    for spelling in spellings:
        assert matches(canonical(spelling), expected(str(value))), spelling
        assert not matches(canonical(spelling), expected(str(value + Fraction(1, 10**5)))), spelling


def test_text_answers_compare_normalised_and_nothing_matches_a_missing_answer() -> None:
    assert matches("(1,2)", "(1, 2)") and matches("Tuesday.", "\\text{tuesday}")
    assert not matches("(2,1)", "(1, 2)") and not matches(None, 3) and not matches("theansweris42", 42)
