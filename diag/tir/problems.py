"""A seeded suite of short problems where exact computation matters, with exact integer answers.

Four families (multi-digit arithmetic, modular arithmetic, counting, number theory), three difficulty levels
each. Level 1 is within reach of mental arithmetic, level 3 is not: that is where a Python tool should
expand what a small model can answer. The suite is a pure function of the seed, so a problem id names the
same question and answer everywhere.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from diag.errors import DiagError
from diag.tir.answers import Answer

FAMILIES = ("arithmetic", "modular", "counting", "number_theory")
LEVELS = (1, 2, 3)


@dataclass(frozen=True)
class Problem:
    problem_id: str
    family: str
    level: int
    question: str
    answer: Answer  # the suite's are integers; a problems file's may be any exact answer (diag.tir.answers)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _digits(rng: random.Random, n: int) -> int:
    return rng.randint(10 ** (n - 1), 10**n - 1)


def _arithmetic(rng: random.Random, level: int) -> tuple[str, int]:
    if level == 1:
        a, b = _digits(rng, 2), _digits(rng, 2)
        return f"What is {a} + {b}?", a + b
    if level == 2:
        a, b = _digits(rng, 3), _digits(rng, 2)
        return f"What is {a} * {b}?", a * b
    a, b, c = _digits(rng, 4), _digits(rng, 3), _digits(rng, 3)
    return f"What is {a} * {b} - {c}?", a * b - c


def _modular(rng: random.Random, level: int) -> tuple[str, int]:
    if level == 1:
        a, m = rng.randint(20, 99), rng.randint(3, 9)
        return f"What is the remainder when {a} is divided by {m}?", a % m
    if level == 2:
        a, m = _digits(rng, 5), rng.randint(11, 97)
        return f"What is the remainder when {a} is divided by {m}?", a % m
    a, e, m = rng.randint(2, 30), rng.randint(20, 200), rng.randint(101, 997)
    return f"What is {a} to the power {e}, modulo {m}?", pow(a, e, m)


def _counting(rng: random.Random, level: int) -> tuple[str, int]:
    if level == 1:
        n = rng.randint(5, 40)
        return f"If each of {n} people shakes hands once with every other, how many handshakes are there?", \
            math.comb(n, 2)
    if level == 2:
        n = rng.randint(8, 20)
        k = rng.randint(2, min(6, n - 2))
        return f"In how many ways can a committee of {k} be chosen from {n} people?", math.comb(n, k)
    n = rng.randint(20, 40)
    k = rng.randint(5, 12)
    return f"How many subsets of size {k} does a set of {n} elements have?", math.comb(n, k)


def _count_divisors(n: int) -> int:
    return sum(1 + (d * d != n) for d in range(1, math.isqrt(n) + 1) if n % d == 0)


def _primes_below(n: int) -> list[int]:
    sieve = bytearray([1]) * n
    sieve[:2] = b"\x00\x00"
    for p in range(2, math.isqrt(n - 1) + 1):
        if sieve[p]:
            sieve[p * p :: p] = bytearray(len(range(p * p, n, p)))
    return [i for i in range(n) if sieve[i]]


def _number_theory(rng: random.Random, level: int) -> tuple[str, int]:
    if level == 1:
        g = rng.randint(2, 9)
        a, b = g * rng.randint(2, 12), g * rng.randint(2, 12)
        return f"What is the greatest common divisor of {a} and {b}?", math.gcd(a, b)
    if level == 2:
        a, b = _digits(rng, 4), _digits(rng, 4)
        return f"What is the greatest common divisor of {a} and {b}?", math.gcd(a, b)
    if rng.random() < 0.5:
        n = rng.randint(1000, 99999)
        return f"How many positive divisors does {n} have?", _count_divisors(n)
    n = rng.randint(200, 3000)
    return f"What is the sum of all prime numbers less than {n}?", sum(_primes_below(n))


_GENERATORS: dict[str, Callable[[random.Random, int], tuple[str, int]]] = {
    "arithmetic": _arithmetic, "modular": _modular, "counting": _counting, "number_theory": _number_theory,
}


def make_suite(per_cell: int = 10, seed: int = 0) -> list[Problem]:
    """``per_cell`` problems per (family, level): 120 with the defaults. Questions within the suite are unique."""
    if per_cell < 1:
        raise DiagError(f"per_cell must be >= 1, got {per_cell}")
    problems = []
    for family in FAMILIES:
        for level in LEVELS:
            rng = random.Random(f"{seed}/{family}/{level}")  # cells are independent: adding one changes no other
            seen: set[str] = set()
            for _ in range(100 * per_cell):
                if len(seen) == per_cell:
                    break
                question, answer = _GENERATORS[family](rng, level)
                if question in seen:
                    continue
                seen.add(question)
                problems.append(Problem(f"{family}-L{level}-{len(seen) - 1:03d}", family, level, question, answer))
            if len(seen) < per_cell:
                raise DiagError(f"cell {family} level {level} cannot make {per_cell} distinct problems")
    return problems
