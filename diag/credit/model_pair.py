"""A policy and its reference, scored token by token: r_t = beta * (log pi(a_t|s_t) - log pi_ref(a_t|s_t)).

The pair is either two causal LMs sharing one tokenizer, or one PEFT model whose reference is the same
weights with the adapter disabled (no second copy in memory). Prompts go through the policy tokenizer's chat
template (``diag.credit.encoding``); only response tokens (the answer and the end-of-turn token) are scored. A
batch runs as one token tree (``diag.credit.token_tree``).

Shared trunk: when the adapter sits only on the top blocks (ours: the top 6 of 30), the blocks below it are the
same network with the adapter on or off, so the reference pass starts from the residual stream the policy pass
left at the first adapted block (``probes.recording`` / ``probes.starting_at``). A one-time check on a short
input confirms the shortcut reproduces the full reference pass for this architecture before it is used; another
confirms the token tree reproduces plain forwards (``tree_is_exact``).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from diag.credit.adapters import adapter_meta, first_adapted_block, load_adapter
from diag.credit.batches import collate, response_logps
from diag.credit.encoding import Encoded, prompt_groups
from diag.credit.token_tree import build_tree, tree_logps
from diag.device import paths_agree
from diag.errors import DiagError
from diag.progress import Progress, no_progress
from probes import Site, recording, starting_at


def check_compatible(tokenizer_a, tokenizer_b, model_a: torch.nn.Module, model_b: torch.nn.Module) -> None:
    """Token-level rewards compare the same token under two models: vocabularies must be identical."""
    vocab_a, vocab_b = tokenizer_a.get_vocab(), tokenizer_b.get_vocab()
    if vocab_a != vocab_b:
        differing = sorted(set(vocab_a.items()) ^ set(vocab_b.items()))[:3]
        raise DiagError(f"policy and reference tokenizers differ ({len(vocab_a)} vs {len(vocab_b)} tokens; "
                        f"e.g. {differing}): per-token rewards need one shared tokenizer")
    rows_a = model_a.get_output_embeddings().weight.shape[0]
    rows_b = model_b.get_output_embeddings().weight.shape[0]
    if rows_a != rows_b:
        raise DiagError(f"policy and reference vocabularies differ: output layers have {rows_a} vs {rows_b} rows")


class ModelPair:
    """A policy and its reference; ``reference=None`` means a PEFT policy scored against its disabled adapter."""

    def __init__(self, policy: torch.nn.Module, tokenizer, reference: torch.nn.Module | None = None,
                 reference_tokenizer=None, beta: float = 0.1) -> None:
        if beta <= 0:
            raise DiagError(f"beta must be positive, got {beta}")
        if reference is None and not hasattr(policy, "disable_adapter"):
            raise DiagError("no reference model given and the policy has no adapter to disable")
        if reference is not None:
            check_compatible(tokenizer, reference_tokenizer or tokenizer, policy, reference)
        self.policy, self.reference, self.tokenizer, self.beta = policy, reference, tokenizer, beta
        self.numerics: dict = {}  # device, dtype and its measured faithfulness (set by load_pair)

    @property
    def device(self) -> torch.device:
        return next(self.policy.parameters()).device

    @contextlib.contextmanager
    def as_reference(self) -> Iterator[torch.nn.Module]:
        """The reference model: the second model, or the policy with its adapter switched off."""
        if self.reference is not None:
            yield self.reference
        else:
            with self.policy.disable_adapter():
                yield self.policy

    @functools.cached_property
    def shared_blocks(self) -> int:
        """How many bottom blocks the reference pass can take from the policy pass (0: run it in full)."""
        if self.reference is not None:
            return 0
        first = first_adapted_block(self.policy)
        if first == 0:
            return 0
        probe = torch.tensor([[self.tokenizer.pad_token_id or 0, 1, 2, 3]], device=self.device)
        attention, positions = torch.ones_like(probe), torch.arange(4, device=self.device)[None]
        targets = probe[:, 1:]
        inlet = Site(first, "resid_pre")
        with torch.no_grad(), self.as_reference() as model:
            with recording(self.policy, [inlet]) as captured:
                full = response_logps(model, probe, attention, positions, targets)
            with starting_at(self.policy, first):
                short = response_logps(model, probe, attention, positions, targets, inputs_embeds=captured[inlet])
        return first if torch.allclose(full, short, atol=1e-4, rtol=0) else 0

    @functools.cached_property
    def _probe(self) -> tuple[list[Encoded], tuple[torch.Tensor, ...], list[tuple[torch.Tensor, ...]]]:
        """What the fast-path checks compare against: three short chat pairs of unequal length, two sharing a
        prompt, scored as one padded batch of plain forwards and each alone."""
        from diag.credit.encoding import encode

        probe = [encode(self.tokenizer, p, r) for p, r in (("Name a colour.", "Red."), ("Name a colour.", "Blue!"),
                                                            ("Count to two.", "1, 2"))]
        return probe, self._plain_logps(probe), [self._plain_logps([e]) for e in probe]

    @functools.cached_property
    def tree_is_exact(self) -> bool:
        """Whether this architecture scores a token tree as it scores the same sequences in plain forwards
        (checked once on ``_probe``; rounding measured as the padded batch against each sequence alone). A model
        that places tokens without ``position_ids`` or cannot take a 4D mask (ALiBi: BLOOM, MPT) fails and is
        scored in plain forwards."""
        probe, plain, alone = self._probe
        try:
            tree = self._tree_logps(probe)
        except (RuntimeError, ValueError, TypeError, IndexError):  # e.g. BLOOM's ALiBi cannot take a 4D mask
            return False
        noise = max(float(((one[model][0] - plain[model][row, :one[0].shape[1]]) * one[2][0]).abs().max())
                    for row, one in enumerate(alone) for model in (0, 1))
        dtype = next(self.policy.parameters()).dtype
        return all(paths_agree(a * plain[2], b * plain[2], noise, dtype)
                   for a, b in zip(plain[:2], tree[:2], strict=True))

    @functools.cached_property
    def pads_exactly(self) -> bool:
        """Whether a padded batch scores each sequence as it scores alone (checked once on ``_probe``). A model
        that reads its filler (recurrent ones such as RWKV ignore the attention mask) does not, and is scored one
        sequence at a time. Rounding is measured as a batch of two copies of one sequence, unpadded, against that
        sequence alone."""
        probe, padded, alone = self._probe
        twice = self._plain_logps([probe[0], probe[0]])
        dtype = next(self.policy.parameters()).dtype
        for model in (0, 1):
            noise = float((twice[model][0] - alone[0][model][0]).abs().max())
            for row, one in enumerate(alone):
                n = one[0].shape[1]
                if not paths_agree(padded[model][row, :n], one[model][0], noise, dtype):
                    return False
        return True

    def token_logps(self, batch: Sequence[Encoded]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(policy, reference, mask) log-probs of each response token, ``[batch, max_response_len]``, left-aligned.

        The batch runs as one token tree (shared prefixes computed once, see ``TokenTree``) where the
        architecture scores trees exactly (``tree_is_exact``), else as a padded batch of plain forwards where
        padding is exact (``pads_exactly``), else one sequence at a time.
        """
        if self.tree_is_exact:
            return self._tree_logps(batch)
        if self.pads_exactly:
            return self._plain_logps(batch)
        width = max(len(e.response_ids) for e in batch)
        rows = [self._plain_logps([e]) for e in batch]
        return tuple(torch.cat([F.pad(row[k], (0, width - row[k].shape[1])) for row in rows])  # type: ignore
                     for k in range(3))

    def _both(self, logps: Callable[[torch.nn.Module, torch.Tensor | None], torch.Tensor]
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """``logps(model, inputs_embeds)`` for the policy, then the reference (from the shared trunk if any)."""
        shared = self.shared_blocks
        inlet = Site(shared, "resid_pre")  # the residual stream entering the first block the passes do not share
        with torch.no_grad():
            with recording(self.policy, [inlet] if shared else []) as captured:
                policy = logps(self.policy, None)
            with self.as_reference() as model, starting_at(self.policy, shared):
                ref = logps(model, captured.get(inlet))
        return policy, ref

    def _tree_logps(self, batch: Sequence[Encoded]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        tree = build_tree(batch, self.device, next(self.policy.parameters()).dtype)
        return (*self._both(lambda model, embeds: tree_logps(model, tree, inputs_embeds=embeds)), tree.mask)

    def _plain_logps(self, batch: Sequence[Encoded]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        ids, attention, positions, targets, mask = collate(batch, self.tokenizer.pad_token_id or 0, self.device)
        policy, ref = self._both(lambda model, embeds: response_logps(model, ids, attention, positions, targets,
                                                                      inputs_embeds=embeds))
        # collate right-aligns the responses; the tree (and callers) read them from column 0
        shift = (mask.shape[1] - mask.sum(1)).long()
        index = (torch.arange(mask.shape[1], device=mask.device)[None] + shift[:, None]).clamp(max=mask.shape[1] - 1)
        left = (torch.arange(mask.shape[1], device=mask.device)[None] < mask.sum(1)[:, None]).float()
        return policy.gather(1, index) * left, ref.gather(1, index) * left, left

    def score(self, encoded: Sequence[Encoded], batch_size: int = 16,
              progress: Progress = no_progress) -> list[TokenScores]:
        """Per-token policy/reference log-probs and rewards for each sequence (batched, order kept).

        Batches hold whole prompt groups (up to ``batch_size`` sequences, at least one group) of similar length.
        """
        ordered = sorted(prompt_groups(encoded), key=lambda g: max(len(encoded[i].ids) for i in g))
        batches: list[list[int]] = []
        for group in ordered:
            if batches and len(batches[-1]) + len(group) <= batch_size:
                batches[-1].extend(group)
            else:
                batches.append(list(group))
        scored: dict[int, TokenScores] = {}
        for chunk in batches:
            policy, ref, _ = self.token_logps([encoded[i] for i in chunk])
            policy, ref = policy.double().cpu(), ref.double().cpu()  # one host copy per batch, for numpy
            for row, i in enumerate(chunk):
                n = len(encoded[i].response_ids)
                p, r = policy[row, :n], ref[row, :n]
                scored[i] = TokenScores(p.numpy(), r.numpy(), (self.beta * (p - r)).numpy())
            progress(len(scored), len(encoded), "scoring")
        return [scored[i] for i in range(len(encoded))]


@dataclass
class TokenScores:
    """Response-token log-probs under both models and r_t = beta * (policy - reference), float64."""

    policy: np.ndarray
    reference: np.ndarray
    reward: np.ndarray


def load_adapter_pair(adapter: str, beta: float | None = None, device: str = "auto",
                      dtype: str = "float32") -> ModelPair:
    """A PEFT adapter against its own base with the adapter disabled (one model in memory, two passes).

    Other pairs (two models, an adapter against another model) go through ``diag.credit.sources.load_pair``.
    """
    model, tokenizer, numerics = load_adapter(adapter, device, dtype)
    beta = beta if beta is not None else adapter_meta(adapter).get("beta")
    if beta is None:
        raise DiagError(f"adapter {adapter} records no beta; pass --beta")
    pair = ModelPair(model, tokenizer, beta=beta)
    pair.numerics = numerics
    return pair
