"""Batched multi-turn sampling for any HF causal LM, with text injected mid-generation (tool output).

``model.generate`` cannot append a different tool output to each sequence and continue, and re-encoding every
turn would pay the prompt again for each sample. This decoder keeps one KV cache for the whole batch: the
shared prompt is encoded once and its cache copied to every sample, and each step feeds every live sequence
either its next sampled token or its queue of injected tokens. Sequences that need fewer tokens in a step get
masked filler slots, so rows stay aligned while positions stay exact; an explicit 4D mask keeps every token
attending to its own sequence's real tokens only. Finished rows are dropped from the cache as they end.

The batching assumes the model places each token by ``position_ids`` and honours an additive 4D mask. A one-time
probe checks that against plain forwards; a model where it fails (ALiBi models such as BLOOM and MPT take no
``position_ids``) decodes one sequence at a time instead, with plain forwards only: slower, never wrong. A model
whose state does not fit a ``DynamicCache`` (recurrent ones: RWKV, Mamba) re-reads each sequence whole at every
step: quadratic in its length, still exact.

Only transformers' public cache API is used: we own a ``DynamicCache`` (filled in place by each forward) and
pass it under the name the model's ``forward`` declares (``past_key_values`` up to 5.2x, ``cache`` after the
rename), so the decoder runs on every transformers version the suite tests (see scripts/test.sh).
"""

from __future__ import annotations

import inspect
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from diag.device import additive_mask, paths_agree
from diag.errors import DiagError


@dataclass
class Sequence:
    """One sample: ``pending`` tokens are fed before sampling resumes; ``generated`` counts sampled tokens only."""

    pending: list[int]
    tokens: list[int] = field(default_factory=list)  # everything after the prompt, sampled and injected
    generated: int = 0
    done: bool = False


# Called after every sampled token: may ``inject`` tokens (tool output) or set ``seq.done``.
OnToken = Callable[[int, Sequence], None]


def inject(seq: Sequence, token_ids: list[int]) -> None:
    """Queue text the model did not write (tool output) to be fed before the next sampled token."""
    seq.pending.extend(token_ids)
    seq.tokens.extend(token_ids)


# Per model, how it decodes exactly (probed once: a sampling run makes a decoder per batch): "batched" (filler
# slots, a 4D mask and explicit positions reproduce plain forwards), "cached" (one sequence at a time through its
# DynamicCache) or "reread" (no usable cache: every step reads the whole sequence).
_DECODING_MODE: weakref.WeakKeyDictionary[torch.nn.Module, str] = weakref.WeakKeyDictionary()
# What a probe of a mode this model lacks raises: BLOOM's ALiBi takes no 4D mask; a recurrent model's cache layers
# cannot be copied per row.
_PROBE_ERRORS = (RuntimeError, ValueError, TypeError, IndexError, AttributeError)


class BatchDecoder:
    """Sample continuations of one prompt per group, ``copies`` samples per group, in one batched cache."""

    def __init__(self, model: torch.nn.Module, temperature: float, max_generated: int, generator: torch.Generator,
                 pad_id: int) -> None:
        if temperature <= 0:
            raise DiagError(f"temperature must be > 0 for pass@k (got {temperature}); greedy samples are all equal")
        self.model = model
        self.temperature = temperature
        self.max_generated = max_generated
        self.generator = generator
        self.pad_id = pad_id
        self.device = next(model.parameters()).device
        self.cache_arg = cache_argument(model)  # None: the model takes no KV cache; sequences are re-read

    @torch.no_grad()
    def prefix_cache(self, prefix_ids: list[int]) -> object:
        """Encode the prompt part every sequence shares, once."""
        from transformers import DynamicCache

        cache = DynamicCache(config=self.model.config)
        ids = torch.tensor([prefix_ids], device=self.device)
        self.model(input_ids=ids, use_cache=True, **{self.cache_arg: cache})
        return cache

    @property
    def mode(self) -> str:
        """"batched", "cached" or "reread": the fastest way this model decodes as plain forwards read it."""
        if self.model not in _DECODING_MODE:
            _DECODING_MODE[self.model] = self._probe_mode()
        return _DECODING_MODE[self.model]

    @property
    def batches_exactly(self) -> bool:
        return self.mode == "batched"

    @property
    def caches_exactly(self) -> bool:
        return self.mode != "reread"

    def _probe_mode(self) -> str:
        if self.cache_arg is None:
            return "reread"
        for mode, agrees in (("batched", self._batching_agrees), ("cached", self._cache_agrees)):
            try:
                with torch.no_grad():
                    if agrees():
                        return mode
            except _PROBE_ERRORS:
                pass
        return "reread"

    def _batching_agrees(self) -> bool:
        """Two rows of a short probe, fed unequal numbers of tokens in two steps, against each row's plain
        forward, on the log-probs of the plain forward's 5 likeliest tokens (the vocabulary's tail is all
        rounding). The rounding of this model in its dtype: a plain forward against the same tokens fed through a
        KV cache."""
        prefix, groups, second = [5, 6, 7], [[8], [9, 10, 11]], [[12, 13, 14], [15]]
        cache = self.prefix_cache(prefix)
        cache.batch_repeat_interleave(2)
        rows = [Sequence(pending=list(g)) for g in groups]
        valid = torch.ones(2, len(prefix), dtype=torch.bool, device=self.device)
        positions = torch.full((2,), len(prefix), dtype=torch.long, device=self.device)
        first, valid, positions = self._step(rows, cache, valid, positions)
        for row, tokens in zip(rows, second, strict=True):
            row.pending = list(tokens)
        then, _, _ = self._step(rows, cache, valid, positions)
        sequences = (prefix + groups[0], prefix + groups[1], prefix + groups[0] + second[0],
                     prefix + groups[1] + second[1])
        plain = torch.stack([self.model(input_ids=torch.tensor([ids], device=self.device)).logits[0, -1]
                             for ids in sequences]).float().log_softmax(-1)
        cached = self.prefix_cache(prefix)
        rest = torch.tensor([sequences[-1][len(prefix):]], device=self.device)
        incremental = self.model(input_ids=rest, use_cache=True, **{self.cache_arg: cached}).logits[0, -1]
        top = plain.topk(5, dim=-1).indices
        batched = torch.cat([first, then]).float().log_softmax(-1)
        noise = (incremental.float().log_softmax(-1)[top[-1]] - plain[-1, top[-1]]).abs().max()
        return paths_agree(batched.gather(1, top), plain.gather(1, top), float(noise),
                           next(self.model.parameters()).dtype)

    def _cache_agrees(self) -> bool:
        """Whether this model continues a sequence from its ``DynamicCache`` as a plain forward reads it whole."""
        prefix, rest = [5, 6, 7], [8, 9]
        cache = self.prefix_cache(prefix)
        step = self.model(input_ids=torch.tensor([rest], device=self.device), use_cache=True,
                          **{self.cache_arg: cache}).logits[0, -1]
        plain = self.model(input_ids=torch.tensor([prefix + rest], device=self.device)).logits[0, -1]
        return paths_agree(step.float().log_softmax(-1), plain.float().log_softmax(-1), 0.0,
                           next(self.model.parameters()).dtype)

    @torch.no_grad()
    def run(self, prefix_ids: list[int], group_ids: list[list[int]], copies: int, on_token: OnToken,
            ) -> list[Sequence]:
        """Feed ``prefix + group_ids[g]`` and sample ``copies`` continuations of each; returns G*copies sequences."""
        if self.mode == "batched":
            return self._run(prefix_ids, group_ids, copies, on_token, plain=False)
        if self.mode == "cached":  # one sequence at a time: no filler slots, so no mask or positions needed
            return [seq for ids in group_ids for _ in range(copies)
                    for seq in self._run(prefix_ids, [ids], 1, on_token, plain=True)]
        return [self._reread(prefix_ids + ids, on_token) for ids in group_ids for _ in range(copies)]

    def _reread(self, prompt_ids: list[int], on_token: OnToken) -> Sequence:
        """One sequence with no cache: every step reads the prompt and everything after it again."""
        seq = Sequence(pending=[])
        while not seq.done:
            ids = torch.tensor([prompt_ids + seq.tokens], device=self.device)
            self._sample_into([seq], self.model(input_ids=ids).logits[:, -1], on_token)
            seq.pending = []  # nothing is fed incrementally: the next step reads seq.tokens whole
        return seq

    def _run(self, prefix_ids: list[int], group_ids: list[list[int]], copies: int, on_token: OnToken,
             plain: bool) -> list[Sequence]:
        cache = self.prefix_cache(prefix_ids)
        n_prefix = len(prefix_ids)
        groups = [Sequence(pending=list(ids)) for ids in group_ids]
        cache.batch_repeat_interleave(len(groups))
        valid = torch.ones(len(groups), n_prefix, dtype=torch.bool, device=self.device)
        positions = torch.full((len(groups),), n_prefix, dtype=torch.long, device=self.device)
        # Encode each group's own prompt once, then copy its cache to its samples.
        logits, valid, positions = self._step(groups, cache, valid, positions, plain)
        cache.batch_repeat_interleave(copies)
        valid = valid.repeat_interleave(copies, 0)
        positions = positions.repeat_interleave(copies, 0)
        logits = logits.repeat_interleave(copies, 0)
        seqs = [Sequence(pending=[]) for _ in groups for _ in range(copies)]
        live = list(range(len(seqs)))  # row r of the cache holds seqs[live[r]]
        while live:
            self._sample_into([seqs[i] for i in live], logits, on_token)
            keep = [r for r, i in enumerate(live) if not seqs[i].done]
            if len(keep) < len(live):
                if not keep:
                    break
                index = torch.tensor(keep, device=self.device)
                cache.batch_select_indices(index)
                valid, positions = valid[index], positions[index]
                live = [live[r] for r in keep]
            logits, valid, positions = self._step([seqs[i] for i in live], cache, valid, positions, plain)
        return seqs

    def _placement(self, real: torch.Tensor, all_valid: torch.Tensor, positions: torch.Tensor
                   ) -> dict[str, torch.Tensor]:
        """The positions and 4D mask that place each row's real tokens after its own past, skipping filler
        (``all_valid``: the past slots' and these slots' real-token flags)."""
        width = real.shape[1]
        past = all_valid.shape[1] - width
        offsets = real.long().cumsum(1) - 1
        pos = torch.where(real, positions[:, None] + offsets, positions[:, None])
        # Query j may see past slots and current slots <= j, all restricted to real tokens of its row.
        causal = torch.ones(width, width, dtype=torch.bool, device=self.device).tril()
        visible = torch.cat([torch.ones(width, past, dtype=torch.bool, device=self.device), causal], dim=1)
        allowed = (visible[None] & all_valid[:, None, :])[:, None]
        return {"attention_mask": additive_mask(allowed, next(self.model.parameters()).dtype), "position_ids": pos}

    def _sample_into(self, rows: list[Sequence], logits: torch.Tensor, on_token: OnToken) -> None:
        # Sampled on the host with the host generator: the same seed draws the same tokens on every device (a
        # CUDA tensor cannot take a CPU generator), and the tokens go to the host next anyway.
        probs = torch.softmax(logits.float() / self.temperature, dim=-1).cpu()
        sampled = torch.multinomial(probs, 1, generator=self.generator).squeeze(1).tolist()
        for seq, token in zip(rows, sampled, strict=True):
            # The sampled token is fed next step; on_token may queue injected text after it (see ``inject``).
            seq.pending.append(token)
            seq.tokens.append(token)
            seq.generated += 1
            on_token(token, seq)
            if seq.generated >= self.max_generated:
                seq.done = True

    def _step(self, rows: list[Sequence], cache: object, valid: torch.Tensor, positions: torch.Tensor,
              plain: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Feed each row's pending tokens (right-aligned, filler on the left) and return next-token logits.
        ``plain``: one row, no filler, so the model places and masks the tokens itself."""
        width = max(1, max(len(s.pending) for s in rows))
        batch = len(rows)
        ids = torch.full((batch, width), self.pad_id, dtype=torch.long)
        real = torch.zeros(batch, width, dtype=torch.bool)
        for r, seq in enumerate(rows):
            feed = seq.pending
            if feed:
                ids[r, width - len(feed):] = torch.tensor(feed)
                real[r, width - len(feed):] = True
            seq.pending = []
        ids, real = ids.to(self.device), real.to(self.device)
        all_valid = torch.cat([valid, real], dim=1)
        edits = {} if plain else self._placement(real, all_valid, positions)
        out = self.model(input_ids=ids, use_cache=True, **edits, **{self.cache_arg: cache})
        return out.logits[:, -1], all_valid, positions + real.sum(1)


def cache_argument(model: torch.nn.Module) -> str | None:
    """The keyword a causal LM's ``forward`` takes its KV cache by: ``cache`` (transformers >= 5.24) or
    ``past_key_values`` (earlier 5.x); None when it takes neither (RWKV keeps a ``state`` instead)."""
    parameters = inspect.signature(model.forward).parameters
    return next((name for name in ("cache", "past_key_values") if name in parameters), None)
