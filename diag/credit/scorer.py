"""Per-token implicit reward r_t = beta * (log pi(a_t|s_t) - log pi_ref(a_t|s_t)) for any policy/reference pair.

The pair is either two causal LMs sharing one tokenizer, or one PEFT model whose reference is the same
weights with the adapter disabled (no second copy in memory). Prompts go through the policy tokenizer's chat
template; only response tokens (the answer and the end-of-turn token) are scored. Sequences are left-padded
so every response ends at the last position and the LM head runs only on the response positions.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from diag.errors import DiagError
from diag.progress import Progress, no_progress

ADAPTER_META = "diag_dpo.json"  # written next to adapters we train: beta, base model, training data


@dataclass(frozen=True)
class Encoded:
    """One (prompt, response) as token ids; response tokens are ``ids[response_start:]``."""

    ids: tuple[int, ...]
    response_start: int
    offsets: tuple[tuple[int, int], ...]  # character span of each response token in the response text

    @property
    def response_ids(self) -> tuple[int, ...]:
        return self.ids[self.response_start:]


def encode(tokenizer, prompt: str, response: str) -> Encoded:
    """Tokenize with the chat template (user turn, assistant header), the response, then end-of-turn."""
    if getattr(tokenizer, "chat_template", None):
        prefix = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                               add_generation_prompt=True)
        full = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}], tokenize=False)
        if not full.startswith(prefix + response):
            raise DiagError("the chat template rewrites the assistant turn; cannot locate the response tokens")
        suffix = full[len(prefix) + len(response):].rstrip()
    else:
        prefix, suffix = prompt + "\n", tokenizer.eos_token or ""
    prefix_ids = tokenizer(prefix, add_special_tokens=False)["input_ids"]
    body = tokenizer(response, add_special_tokens=False, return_offsets_mapping=True)
    suffix_ids = tokenizer(suffix, add_special_tokens=False)["input_ids"] if suffix else []
    offsets = [tuple(o) for o in body["offset_mapping"]] + [(len(response), len(response))] * len(suffix_ids)
    response_ids = list(body["input_ids"]) + list(suffix_ids)
    if not response_ids:
        raise DiagError("empty response: nothing to score")
    return Encoded(tuple(prefix_ids + response_ids), len(prefix_ids), tuple(offsets))


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

    def token_logps(self, batch: Sequence[Encoded], grad: bool = False,
                    reference: bool = True) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """(policy, reference, mask) log-probs of each response token, ``[batch, max_response_len]``.

        ``reference=False`` skips the reference pass (training precomputes it once).
        """
        ids, attention, positions, targets, mask = collate(batch, self.tokenizer.pad_token_id, self.device)
        with torch.set_grad_enabled(grad):
            policy = response_logps(self.policy, ids, attention, positions, targets) * mask
        if not reference:
            return policy, None, mask
        with torch.no_grad(), self.as_reference() as model:
            ref = response_logps(model, ids, attention, positions, targets) * mask
        return policy, ref, mask

    def score(self, encoded: Sequence[Encoded], batch_size: int = 16,
              progress: Progress = no_progress) -> list[TokenScores]:
        """Per-token policy/reference log-probs and rewards for each sequence (batched, order kept)."""
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i].ids))  # similar lengths, less padding
        scored: dict[int, TokenScores] = {}
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            policy, ref, _ = self.token_logps([encoded[i] for i in chunk])
            for row, i in enumerate(chunk):
                n = len(encoded[i].response_ids)
                p, r = policy[row, -n:].double(), ref[row, -n:].double()
                scored[i] = TokenScores(p.numpy(), r.numpy(), (self.beta * (p - r)).numpy())
            progress(min(start + batch_size, len(order)), len(order), "scoring")
        return [scored[i] for i in range(len(encoded))]


@dataclass
class TokenScores:
    """Response-token log-probs under both models and r_t = beta * (policy - reference), float64."""

    policy: np.ndarray
    reference: np.ndarray
    reward: np.ndarray


def collate(batch: Sequence[Encoded], pad_id: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    """Left-pad to one tensor; responses end at the last position, so their targets are the last columns."""
    width = max(len(e.ids) for e in batch)
    n_resp = max(len(e.response_ids) for e in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(batch), width), dtype=torch.long)
    mask = torch.zeros((len(batch), n_resp), dtype=torch.float32)
    for row, e in enumerate(batch):
        ids[row, width - len(e.ids):] = torch.tensor(e.ids)
        attention[row, width - len(e.ids):] = 1
        mask[row, n_resp - len(e.response_ids):] = 1
    positions = (attention.cumsum(-1) - 1).clamp(min=0)
    targets = ids[:, width - n_resp:]
    return ids.to(device), attention.to(device), positions.to(device), targets.to(device), mask.to(device)


def response_logps(model: torch.nn.Module, ids: torch.Tensor, attention: torch.Tensor, positions: torch.Tensor,
                   targets: torch.Tensor, inputs_embeds: torch.Tensor | None = None) -> torch.Tensor:
    """log p(target) at the last ``targets.shape[1]`` positions; logits are computed only there."""
    n = targets.shape[1]
    tokens = {"input_ids": ids} if inputs_embeds is None else {"inputs_embeds": inputs_embeds}
    logits = model(**tokens, attention_mask=attention, position_ids=positions,
                   logits_to_keep=n + 1).logits[:, :-1].float()
    return logits.gather(-1, targets[..., None]).squeeze(-1) - torch.logsumexp(logits, dim=-1)


def is_adapter(path: str) -> bool:
    return (Path(path) / "adapter_config.json").is_file()


def adapter_meta(path: str) -> dict:
    """Training metadata we store beside our adapters (beta, base); empty for foreign adapters."""
    meta = Path(path) / ADAPTER_META
    return json.loads(meta.read_text()) if meta.is_file() else {}


def load_pair(policy: str, reference: str | None = None, beta: float | None = None,
              device: str = "auto") -> ModelPair:
    """Load a pair from names: two models (zoo names, dirs, HF ids), or a PEFT adapter dir (reference = base)."""
    from diag.zoo import load_lm

    if is_adapter(policy):
        from peft import PeftModel

        config = json.loads((Path(policy) / "adapter_config.json").read_text())
        base_name = config.get("base_model_name_or_path")
        if reference is not None and reference != base_name:
            raise DiagError(f"adapter {policy} was trained on {base_name!r}; its reference is that base with the "
                            f"adapter disabled, not {reference!r}")
        base, tokenizer = load_lm(base_name, device)
        try:
            model = PeftModel.from_pretrained(base, policy)
        except Exception as exc:
            raise DiagError(f"cannot load adapter {policy}: {str(exc).splitlines()[0]}") from exc
        model.eval()
        beta = beta if beta is not None else adapter_meta(policy).get("beta")
        if beta is None:
            raise DiagError(f"adapter {policy} records no beta; pass --beta")
        return ModelPair(model, tokenizer, beta=beta)
    if reference is None:
        raise DiagError(f"{policy!r} is not a PEFT adapter directory, so a reference model is needed")
    if beta is None:
        raise DiagError("beta is needed to turn log-ratios into rewards; pass --beta")
    policy_model, tokenizer = load_lm(policy, device)
    reference_model, reference_tokenizer = load_lm(reference, device)
    return ModelPair(policy_model, tokenizer, reference_model, reference_tokenizer, beta=beta)
