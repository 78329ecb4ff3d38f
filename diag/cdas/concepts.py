"""Contrastive concept data (x, y, x_c, y_c), built by SmolLM2 itself and filtered by the offline judge's lexicon.

x is a neutral instruction, y the model's greedy answer to it, x_c the same instruction asking to include the
concept, y_c the model's answer to x_c. A pair is kept when y_c names the concept (lexicon) and y does not.
The committed file ``diag/cdas/data/concepts.jsonl`` was made by ``python -m diag.cdas.concepts`` (see
``diag/cdas/data/README.md``).
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from diag.errors import DiagError
from diag.files import read_json_lines

DATA_PATH = Path(__file__).parent / "data" / "concepts.jsonl"


@dataclass(frozen=True)
class Concept:
    name: str
    phrase: str  # how the instruction names it
    description: str  # what the judge embeds
    lexicon: tuple[str, ...]  # words; the word or its plural (+s/+es) counts as a mention


CONCEPTS: dict[str, Concept] = {c.name: c for c in (
    Concept("dogs", "dogs", "dogs, puppies and their barking, pets and canine companions",
            ("dog", "puppy", "puppies", "canine", "bark", "barking", "pup", "leash", "doggy", "paw")),
    Concept("music", "music", "music, songs, melodies, musical instruments and singing",
            ("music", "musical", "song", "melody", "melodies", "guitar", "piano", "sing", "singing", "rhythm",
             "tune", "musician", "violin", "drum", "concert", "playlist")),
    Concept("space", "outer space", "outer space, stars, planets, galaxies, astronauts and the universe",
            ("space", "star", "planet", "galaxy", "galaxies", "astronaut", "universe", "cosmic", "cosmos",
             "moon", "orbit", "rocket", "spaceship", "spacecraft", "nasa")),
    Concept("food", "food", "food, cooking, meals, recipes and eating",
            ("food", "cook", "cooking", "meal", "recipe", "eat", "eating", "dish", "delicious", "bake", "baking",
             "kitchen", "breakfast", "dinner", "lunch", "snack", "fruit", "vegetable")),
    Concept("ocean", "the ocean", "the ocean, the sea, waves, beaches and marine life",
            ("ocean", "sea", "wave", "beach", "marine", "tide", "coral", "shore", "seashore", "underwater",
             "surf", "seaside", "oceanic", "fish", "whale", "dolphin")),
)}

INSTRUCTIONS: tuple[str, ...] = (
    "Give me one tip for staying focused at work.",
    "Describe how to organise a small desk.",
    "Explain why sleep is important.",
    "Write a short note thanking a colleague.",
    "Suggest a way to start a morning routine.",
    "Describe what makes a good friend.",
    "Give advice on learning a new language.",
    "Explain how to write a clear email.",
    "Describe a relaxing weekend.",
    "Give a tip for saving money.",
    "Explain what a budget is.",
    "Write a sentence encouraging a student before an exam.",
    "Describe how to plan a short trip.",
    "Give advice for a job interview.",
    "Explain why reading books is useful.",
    "Describe a good way to take notes.",
    "Write a short welcome message for new club members.",
    "Give one reason to go for a walk every day.",
    "Explain how to apologise sincerely.",
    "Describe how to keep a room tidy.",
    "Give a tip for public speaking.",
    "Write a short birthday wish for a neighbour.",
    "Explain why teamwork matters.",
    "Describe how to set a goal for the month.",
    "Give advice on managing stress.",
    "Explain how to make a to-do list.",
    "Describe a pleasant afternoon in a small town.",
    "Give a tip for remembering names.",
    "Write a short motivational sentence for Monday.",
    "Explain how to give helpful feedback.",
    "Describe what a good teacher does.",
    "Give advice on keeping a journal.",
    "Explain why being on time matters.",
    "Describe how to welcome a guest.",
    "Give a tip for writing a story.",
    "Write a short message cheering up a friend.",
    "Explain how to learn from a mistake.",
    "Describe a memorable holiday.",
    "Give advice for a first day at a new school.",
    "Explain how to stay calm in traffic.",
    "Describe a cosy evening at home.",
    "Give a tip for being more patient.",
    "Write a short invitation to a picnic.",
    "Explain how to choose a good gift.",
    "Describe an ideal study space.",
    "Give advice on making new friends.",
    "Explain how to keep a promise.",
    "Describe a quiet morning.",
)


def concept_instruction(instruction: str, concept: Concept) -> str:
    return f"{instruction} Make your answer about {concept.phrase}."


def mentions(text: str, concept: Concept) -> bool:
    """Whole-word lexicon match (plurals included): the judge's deterministic half."""
    words = set(re.findall(r"[a-z]+", text.lower()))
    forms = {w for stem in concept.lexicon for w in (stem, stem + "s", stem + "es")}
    return bool(words & forms)


@dataclass(frozen=True)
class Pair:
    concept: str
    instruction: str  # x
    response: str  # y
    concept_instruction: str  # x_c
    concept_response: str  # y_c
    split: str  # "train" or "heldout"


def concept_specs(path: str | Path | None = None) -> dict[str, Concept]:
    """The built-in concepts and the user's: a JSONL file (or JSON array) of ``{"name", "lexicon": [words],
    optional "phrase" (how an instruction asks for it; default the name), "description" (what the judge embeds;
    default the phrase)}``. A user's concept of a built-in name replaces it."""
    specs = dict(CONCEPTS)
    if not path:
        return specs
    for number, row in read_json_lines(Path(path), "concepts file"):
        where = f"{path}:{number}"
        unknown = sorted(set(row) - {"name", "phrase", "description", "lexicon"})
        if unknown:
            raise DiagError(f"{where}: unknown field(s) {', '.join(unknown)}")
        name, lexicon = row.get("name"), row.get("lexicon")
        if not isinstance(name, str) or not name.strip():
            raise DiagError(f"{where}: name must be a non-empty string")
        if not (isinstance(lexicon, list) and lexicon and all(isinstance(w, str) and w.strip() for w in lexicon)):
            raise DiagError(f"{where}: lexicon must be a non-empty list of words (what counts as a mention)")
        phrase = row.get("phrase", name)
        description = row.get("description", phrase)
        if not all(isinstance(v, str) and v.strip() for v in (phrase, description)):
            raise DiagError(f"{where}: phrase and description must be non-empty strings")
        specs[name] = Concept(name, phrase, description, tuple(w.strip().lower() for w in lexicon))
    return specs


def pin_files(config: Any) -> Any:
    """The sha256 of the dataset (the committed one when none is named) and concepts files a config uses, into
    its run id: an edited or regenerated file is a new run, not a stale one reused."""
    from diag.files import fingerprint

    return dataclasses.replace(
        config, dataset_sha256=fingerprint(Path(config.dataset or DATA_PATH)),
        concepts_sha256=fingerprint(Path(config.concepts_file)) if config.concepts_file else None)


def load_pairs(path: Path | None = None, concepts: tuple[str, ...] | None = None,
               specs: Mapping[str, Concept] = CONCEPTS) -> list[Pair]:
    """Read and validate the JSONL dataset; one clear line for a malformed row or a concept without examples
    (``specs``: the concepts known, see ``concept_specs``)."""
    path = Path(path or DATA_PATH)
    pairs = []
    fields = set(Pair.__dataclass_fields__)
    for number, row in read_json_lines(path, "concept dataset"):
        if set(row) != fields:
            raise DiagError(f"{path}:{number}: expected fields {', '.join(sorted(fields))}")
        if not all(isinstance(v, str) and v.strip() for v in row.values()):
            raise DiagError(f"{path}:{number}: every field must be a non-empty string")
        if row["split"] not in ("train", "heldout"):
            raise DiagError(f"{path}:{number}: split must be train or heldout, got {row['split']!r}")
        pairs.append(Pair(**row))
    for name in concepts or ():
        if name not in specs:
            raise DiagError(f"unknown concept {name!r}: choose from {', '.join(specs)}, or define it in a "
                            "concepts file (concepts_file)")
        for split in ("train", "heldout"):
            if not any(p.concept == name and p.split == split for p in pairs):
                raise DiagError(f"concept {name!r} has no {split} examples in {path}")
    return [p for p in pairs if concepts is None or p.concept in concepts]


def build(model: object, tokenizer: object, instructions: tuple[str, ...] = INSTRUCTIONS, max_new_tokens: int = 24,
          heldout_every: int = 3, retries: int = 1, cache: Path | None = None) -> list[Pair]:
    """Generate and filter the dataset (greedy answers; sampled retries for y_c that misses the concept).

    Generations are appended to ``cache`` (JSON lines keyed by stage) so a killed build resumes where it stopped.
    """
    from diag.cdas.lm import generate

    done: dict[str, list[str]] = {}
    if cache is not None and cache.exists():
        for line in cache.read_text().splitlines():
            row = json.loads(line)
            done[row["key"]] = row["answers"]

    def answer(key: str, asked: list[str], do_sample: bool = False, seed: int = 0) -> list[str]:
        if key not in done:
            # One large batch: on CPU the per-step overhead dominates, so batching is nearly free.
            done[key] = generate(model, tokenizer, asked, max_new_tokens=max_new_tokens,  # type: ignore[arg-type]
                                 do_sample=do_sample, seed=seed)
            if cache is not None:
                with cache.open("a") as f:
                    f.write(json.dumps({"key": key, "answers": done[key]}) + "\n")
        print(f"  {key}: {len(done[key])} answers", flush=True)
        return done[key]

    plain = answer("plain", list(instructions))
    pairs = []
    for concept in CONCEPTS.values():
        asked = [concept_instruction(x, concept) for x in instructions]
        with_concept = list(answer(concept.name, asked))
        for attempt in range(retries):
            missing = [i for i, y_c in enumerate(with_concept) if not mentions(y_c, concept)]
            if not missing:
                break
            retried = answer(f"{concept.name}/retry{attempt}", [asked[i] for i in missing], do_sample=True, seed=attempt)
            for i, retry in zip(missing, retried, strict=True):
                with_concept[i] = retry
        for i, (x, y, x_c, y_c) in enumerate(zip(instructions, plain, asked, with_concept, strict=True)):
            if mentions(y_c, concept) and not mentions(y, concept) and y.strip():
                split = "heldout" if i % heldout_every == heldout_every - 1 else "train"
                pairs.append(Pair(concept.name, x, y, x_c, y_c, split))
    return pairs


def main() -> None:
    """Regenerate ``diag/cdas/data/concepts.jsonl`` with the embedded SmolLM2 (deterministic: greedy + seeded)."""
    import torch

    from diag.zoo import load_lm

    torch.manual_seed(0)
    model, tokenizer = load_lm("smollm2-135m-instruct", "cpu")
    pairs = build(model, tokenizer, INSTRUCTIONS[:36], cache=DATA_PATH.with_suffix(".generations.jsonl"))
    DATA_PATH.parent.mkdir(parents=True, exist_ok=True)
    DATA_PATH.write_text("".join(json.dumps(asdict(p)) + "\n" for p in pairs))
    counts = {c: sum(p.concept == c for p in pairs) for c in CONCEPTS}
    print(json.dumps({"pairs": len(pairs), "per_concept": counts}))


if __name__ == "__main__":
    main()
