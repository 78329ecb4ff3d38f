"""Preference pairs whose chosen and rejected answers differ in one known, context-dependent span.

A prompt states a few facts (a person, a city, a company, a date, an amount, a quantity with a unit) and asks
for a restatement. The chosen answer restates them; the rejected answer corrupts exactly one fact. The wrong
value is drawn from the same pool the correct values come from, so the same token is right under another
prompt (the prompt says 25K, the answer says 250K): only a detector that reads the context can find it. The
corrupted fact is picked uniformly among the answer's slots, so the error sits at a random position.

Held-out pairs use templates and entities (people, cities, companies) that never appear in training.
Everything is a pure function of ``(split, n, seed)``; the data is regenerated, never stored.
"""

from __future__ import annotations

import random
import re
from dataclasses import asdict, dataclass
from typing import Literal

Split = Literal["train", "heldout"]
KINDS = ("number", "date", "entity", "unit")

MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December")
PEOPLE = {
    "train": ("Maria", "John", "Aisha", "Kenji", "Olga", "Pedro", "Fatima", "Lars", "Chen", "Amara", "Tom",
              "Ines", "Ravi", "Sofia", "Emil", "Nadia", "Lucas", "Grace", "Omar", "Elena", "Tariq", "Mei", "Hugo",
              "Zara", "Felix", "Anya", "Diego", "Clara", "Samir", "Noor", "Erik", "Rosa", "Kofi", "Lena", "Mikhail",
              "Julia", "Ahmed", "Vera", "Paolo", "Selin"),
    "heldout": ("Bruno", "Yuki", "Leila", "Mateo", "Hana", "Oscar", "Priya", "Ivan"),
}
CITIES = {
    "train": ("Lisbon", "Oslo", "Cairo", "Lima", "Dublin", "Vienna", "Madrid", "Tokyo", "Quito", "Seoul", "Rome",
              "Prague", "Paris", "Warsaw", "Toronto", "Delhi", "Sydney", "Havana", "Helsinki", "Dakar", "Austin",
              "Bogota", "Hanoi", "Zurich", "Chicago", "Mumbai", "Accra", "Porto", "Kyoto", "Santiago"),
    "heldout": ("Berlin", "Nairobi", "Boston", "Athens", "Manila", "Denver"),
}
COMPANIES = {
    "train": ("Acme", "Globex", "Initech", "Umbrella", "Hooli", "Vandelay", "Stark", "Wayne", "Cyberdyne",
              "Tyrell", "Pied Piper", "Dunder", "Massive Dynamic", "Virtucon", "Nakatomi", "Wernham", "Sterling",
              "Prestige", "Blue Sun", "Gekko", "Krusty", "Rekall", "Zorg", "Bluth"),
    "heldout": ("Aperture", "Wonka", "Soylent", "Gringotts", "Monarch", "Oscorp"),
}
UNITS = {
    "distance": ("km", "miles", "meters"),
    "mass": ("kg", "tons", "pounds"),
    "volume": ("liters", "gallons"),
}

# (prompt, answer, unit category). Slots: {person} {city} {company} {date} {money} {qty} {unit}.
TEMPLATES: dict[str, tuple[tuple[str, str, str], ...]] = {
    "train": (
        (("Memo: {person} moved to {city} on {date} and now commutes {qty} {unit} to work.\n"
         "Restate the memo in one sentence."),
         "{person} has lived in {city} since {date} and commutes {qty} {unit}.", "distance"),
        (("Offer letter: {company} offers {person} a salary of {money} dollars, starting {date}.\n"
         "What does the letter say?"),
         "{person} gets {money} dollars a year from {company} from {date}.", "distance"),
        (("Log: the truck left {city} on {date} carrying {qty} {unit} of grain for {company}.\n"
         "Summarise the log."),
         "On {date} a {company} truck took {qty} {unit} of grain out of {city}.", "mass"),
        (("Receipt: {person} paid {money} dollars for {qty} {unit} of paint in {city}.\n"
         "What does the receipt show?"),
         "In {city}, {person} spent {money} dollars on {qty} {unit} of paint.", "volume"),
        (("Report: {company} opened an office in {city} on {date}; it is {qty} {unit} from the station.\n"
         "Give the key facts."),
         "The {city} office of {company} opened on {date}, {qty} {unit} from the station.", "distance"),
        (("Note: {person} ran {qty} {unit} on {date} and raised {money} dollars for charity.\n"
         "Repeat the note briefly."),
         "{person} raised {money} dollars by running {qty} {unit} on {date}.", "distance"),

        (("Email from {company}: your order of {qty} {unit} of rice ships from {city} on {date}.\n"
         "What does the email tell me?"),
         "Your {qty} {unit} of rice from {company} will ship from {city} on {date}.", "mass"),
        (("Minutes: {person} proposed a {money} dollar grant for the {city} library, due {date}.\n"
         "Summarise the minutes in one line."),
         "A {money} dollar grant for the library in {city}, proposed by {person}, is due {date}.", "distance"),
        (("Shipping notice: {qty} {unit} of olive oil, sold by {company} to {person}, arrives {date}.\n"
         "Restate the notice."),
         "{person} will receive {qty} {unit} of olive oil from {company} on {date}.", "volume"),
        (("Diary, {date}: I walked {qty} {unit} around {city} with {person}.\n"
         "Retell this diary entry."),
         "On {date} the writer and {person} walked {qty} {unit} around {city}.", "distance"),
        (("Contract: {company} will pay {person} {money} dollars to move {qty} {unit} of steel by {date}.\n"
         "What are the terms?"),
         "By {date}, {person} must move {qty} {unit} of steel; {company} pays {money} dollars.", "mass"),
        (("News: a storm hit {city} on {date}, and {company} pledged {money} dollars in aid.\n"
         "Give me the headline facts."),
         "{company} pledged {money} dollars after the {date} storm in {city}.", "distance"),
        (("Lab note: {person} measured {qty} {unit} of water in the {city} tank on {date}.\n"
         "Paraphrase the lab note."),
         "The {city} tank held {qty} {unit} of water when {person} measured it on {date}.", "volume"),
        (("Bank record: on {date}, {person} moved {money} dollars from {company} stock into savings.\n"
         "Explain the record briefly."),
         "{person} took {money} dollars out of {company} stock on {date}.", "distance"),
        (("Race results: {person} of {city} finished {qty} {unit} of hills on {date}.\n"
         "Report the result."),
         "Runner {person} from {city} completed {qty} {unit} of hills on {date}.", "distance"),
        (("Customs form: {company} imported {qty} {unit} of coffee through {city} on {date}.\n"
         "State what the form declares."),
         "Through {city}, {company} brought in {qty} {unit} of coffee on {date}.", "mass"),
        (("Ticket: {person} booked a trip to {city} for {date}, paying {money} dollars.\n"
         "Describe the booking."),
         "The trip to {city} on {date} cost {person} {money} dollars.", "distance"),
        (("Farm log: on {date} the {company} farm near {city} pumped {qty} {unit} of milk.\n"
         "What happened on the farm?"),
         "Near {city}, the {company} farm pumped {qty} {unit} of milk on {date}.", "volume"),
        (("Press release: {company} hired {person} in {city} on a {money} dollar contract.\n"
         "Sum up the release."),
         "{company} signed {person} in {city} for {money} dollars.", "distance"),
        (("Weather station: {qty} {unit} of rain fell on {city} on {date}, says {person}.\n"
         "Restate the reading."),
         "According to {person}, {city} got {qty} {unit} of rain on {date}.", "volume"),
    ),
    "heldout": (
        (("Announcement: on {date}, {person} became head of {company} with a budget of {money} dollars.\n"
         "What was announced?"),
         "{company} named {person} head on {date}, with {money} dollars to spend.", "distance"),
        ("Travel diary: {person} drove {qty} {unit} from {city} on {date}.\nSum up the entry.",
         "{person} covered {qty} {unit} leaving {city} on {date}.", "distance"),
        (("Invoice: {company} billed {money} dollars for {qty} {unit} of fuel delivered to {city}.\n"
         "What is on the invoice?"),
         "{city} received {qty} {unit} of fuel from {company}, billed at {money} dollars.", "volume"),
    ),
}
SLOT_KIND = {"person": "entity", "city": "entity", "company": "entity", "date": "date", "money": "number",
             "qty": "number", "unit": "unit"}


@dataclass(frozen=True)
class Pair:
    """One preference pair; spans are ``[start, end)`` character offsets of the differing fact in each answer."""

    prompt: str
    chosen: str
    rejected: str
    kind: str
    slot: str
    span_chosen: tuple[int, int]
    span_rejected: tuple[int, int]
    template: int
    split: str

    def to_dict(self) -> dict:
        return asdict(self)


def _number(rng: random.Random) -> int:
    """Amounts in thousands: one or two significant digits at two magnitudes, so 25 and 250 both occur."""
    return rng.randint(1, 99) * rng.choice((1, 10))


def _corrupt_number(rng: random.Random, value: int, low: int, high: int) -> int:
    """A near miss that is itself a valid value in the pool: a magnitude slip, swapped or changed digit."""
    candidates = {value * 10, value // 10, int(str(value)[::-1]) if str(value)[-1] != "0" else value}
    digits = str(value)
    for i in range(len(digits)):
        for d in "0123456789":
            candidates.add(int(digits[:i] + d + digits[i + 1:]))
    candidates = sorted(c for c in candidates if low <= c <= high and c != value and len(str(c)) >= 1)
    return rng.choice(candidates)


def _values(rng: random.Random, split: str, unit_category: str) -> dict[str, str]:
    return {
        "person": rng.choice(PEOPLE[split]),
        "city": rng.choice(CITIES[split]),
        "company": rng.choice(COMPANIES[split]),
        "date": f"{rng.randint(1, 28)} {rng.choice(MONTHS)} {rng.randint(1990, 2024)}",
        "money": f"{_number(rng)}K",
        "qty": str(rng.randint(2, 95)),
        "unit": rng.choice(UNITS[unit_category]),
    }


def _corrupt(rng: random.Random, slot: str, value: str, split: str, unit_category: str) -> str:
    if slot == "person":
        return rng.choice([v for v in PEOPLE[split] if v != value])
    if slot == "city":
        return rng.choice([v for v in CITIES[split] if v != value])
    if slot == "company":
        return rng.choice([v for v in COMPANIES[split] if v != value])
    if slot == "unit":
        return rng.choice([v for v in UNITS[unit_category] if v != value])
    if slot == "money":
        return f"{_corrupt_number(rng, int(value[:-1]), 1, 990)}K"
    if slot == "qty":
        return str(_corrupt_number(rng, int(value), 2, 95))
    day, month, year = value.split()
    part = rng.randrange(3)
    if part == 0:
        day = str(_corrupt_number(rng, int(day), 1, 28))
    elif part == 1:
        month = rng.choice([m for m in MONTHS if m != month])
    else:
        year = str(_corrupt_number(rng, int(year), 1990, 2024))
    return f"{day} {month} {year}"


def _fill(template: str, values: dict[str, str]) -> tuple[str, dict[str, tuple[int, int]]]:
    """Fill slots left to right, recording each slot's character span in the output."""
    out, spans, pos = [], {}, 0
    for match in re.finditer(r"\{(\w+)\}", template):
        out.append(template[pos:match.start()])
        start = sum(len(p) for p in out)
        out.append(values[match.group(1)])
        spans[match.group(1)] = (start, start + len(values[match.group(1)]))
        pos = match.end()
    out.append(template[pos:])
    return "".join(out), spans


def make_pairs(split: Split, n: int, seed: int = 0) -> list[Pair]:
    """``n`` pairs of ``split``: kinds are balanced (number, date, entity, unit), then the slot is random."""
    if split not in TEMPLATES:
        raise ValueError(f"split must be one of {', '.join(TEMPLATES)}, got {split!r}")
    rng = random.Random(f"{split}-{seed}")
    pairs = []
    for i in range(n):
        t = rng.randrange(len(TEMPLATES[split]))
        prompt_t, answer_t, unit_category = TEMPLATES[split][t]
        slots = re.findall(r"\{(\w+)\}", answer_t)
        kind = KINDS[i % len(KINDS)]
        slot = rng.choice([s for s in slots if SLOT_KIND[s] == kind] or slots)
        values = _values(rng, split, unit_category)
        wrong = dict(values, **{slot: _corrupt(rng, slot, values[slot], split, unit_category)})
        prompt, _ = _fill(prompt_t, values)
        chosen, spans_c = _fill(answer_t, values)
        rejected, spans_r = _fill(answer_t, wrong)
        pairs.append(Pair(prompt, chosen, rejected, SLOT_KIND[slot], slot, spans_c[slot], spans_r[slot], t, split))
    return pairs
