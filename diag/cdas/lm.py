"""Chat formatting, teacher-forced batches and generation with a residual edit, for SmolLM2-style chat LMs.

Every CDAS piece that touches the LM goes through here so the positions an intervention touches are decided
in one place: the *source position* is the last token of the assistant header (the token right before the
response), and *base positions* are every token after BOS.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from probes import Edit, Site, editing, run_to

HiddenFn = Callable[[torch.Tensor], torch.Tensor]


def chat_prompt(tokenizer: object, instruction: str) -> str:
    """The instruction as one user turn, ending where the answer starts (``answer_prefix``)."""
    from diag.zoo.lm import answer_prefix

    return answer_prefix(tokenizer, [{"role": "user", "content": instruction}])


@dataclass
class Batch:
    """Right-padded prompt+response token ids, with where each response starts and ends."""

    input_ids: torch.Tensor  # [b, t]
    attention_mask: torch.Tensor  # [b, t]
    prompt_lens: list[int]  # index of the first response token; prompt_lens - 1 is the source position
    lengths: list[int]  # total real tokens

    def response_mask(self) -> torch.Tensor:
        """[b, t] True at positions whose *next-token prediction* is a response token (logits index)."""
        mask = torch.zeros_like(self.input_ids, dtype=torch.bool)
        for i, (start, end) in enumerate(zip(self.prompt_lens, self.lengths, strict=True)):
            mask[i, start - 1:end - 1] = True
        return mask

    def source_index(self) -> torch.Tensor:
        return torch.tensor([p - 1 for p in self.prompt_lens])


def encode(tokenizer: object, instructions: Sequence[str], responses: Sequence[str], device: torch.device,
           max_response_tokens: int | None = None) -> Batch:
    """Tokenise chat prompt + response per row (response followed by nothing: we score its tokens only),
    keeping at most ``max_response_tokens`` response tokens."""
    rows, prompt_lens = [], []
    for instruction, response in zip(instructions, responses, strict=True):
        prompt = tokenizer(chat_prompt(tokenizer, instruction), add_special_tokens=False)["input_ids"]  # type: ignore
        answer = tokenizer(response, add_special_tokens=False)["input_ids"][:max_response_tokens]  # type: ignore
        rows.append(prompt + answer)
        prompt_lens.append(len(prompt))
    width = max(len(r) for r in rows)
    pad = tokenizer.pad_token_id  # type: ignore[attr-defined]
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, :len(row)] = torch.tensor(row)
        mask[i, :len(row)] = 1
    return Batch(ids.to(device), mask.to(device), prompt_lens, [len(r) for r in rows])


@contextmanager
def hidden_hook(model: nn.Module, layer: int, fn: HiddenFn, skip_first: torch.Tensor | None = None) -> Iterator[None]:
    """Apply ``fn`` to the residual output of ``layer`` at every position except BOS, for every forward.

    ``skip_first`` ([b] long) is the index of each row's BOS in the first (prompt) forward; later single-token
    forwards (generation with a KV cache) are edited everywhere.
    """

    def edit(h: torch.Tensor) -> torch.Tensor:
        new = fn(h)
        if skip_first is not None and h.shape[1] > 1:
            keep = torch.zeros(h.shape[:2], dtype=torch.bool, device=h.device)
            keep[torch.arange(h.shape[0]), skip_first.to(h.device)] = True
            new = torch.where(keep.unsqueeze(-1), h, new)
        return new

    with editing(model, [Edit(Site(layer, "resid_post"), edit, "hidden")]):
        yield


@torch.no_grad()
def residual_at(model: nn.Module, layer: int, **inputs: torch.Tensor) -> torch.Tensor:
    """Residual output of ``layer`` ([b, t, d]), stopping the forward there: a DII source needs nothing above it."""
    return run_to(model, Site(layer, "resid_post"), inputs)


@torch.no_grad()
def generate(
    model: nn.Module,
    tokenizer: object,
    instructions: Sequence[str],
    *,
    max_new_tokens: int = 40,
    layer: int | None = None,
    fn: HiddenFn | None = None,
    do_sample: bool = False,
    seed: int = 0,
) -> list[str]:
    """Answer each instruction (left-padded batch), optionally editing the residual at ``layer`` with ``fn``."""
    device = next(model.parameters()).device
    prompts = [chat_prompt(tokenizer, x) for x in instructions]
    tokenizer.padding_side = "left"  # type: ignore[attr-defined]
    enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)  # type: ignore
    tokenizer.padding_side = "right"  # type: ignore[attr-defined]
    enc = {k: v.to(device) for k, v in enc.items()}
    first_real = (enc["attention_mask"] == 0).sum(dim=1)
    torch.manual_seed(seed)
    kwargs = {"max_new_tokens": max_new_tokens, "do_sample": do_sample,
              "pad_token_id": tokenizer.pad_token_id}  # type: ignore[attr-defined]
    if do_sample:
        kwargs.update(temperature=0.7, top_p=0.9)
    else:
        kwargs.update(temperature=None, top_p=None, top_k=None)
    if fn is None or layer is None:
        out = model.generate(**enc, **kwargs)  # type: ignore[operator]
    else:
        with hidden_hook(model, layer, fn, skip_first=first_real):
            out = model.generate(**enc, **kwargs)  # type: ignore[operator]
    new_tokens = out[:, enc["input_ids"].shape[1]:]
    return [tokenizer.decode(t, skip_special_tokens=True).strip() for t in new_tokens]  # type: ignore


@torch.no_grad()
def response_nll(model: nn.Module, tokenizer: object, instructions: Sequence[str], responses: Sequence[str],
                 batch_size: int = 16) -> list[float]:
    """Mean negative log-likelihood per response token under the (unsteered) model, one value per row."""
    device = next(model.parameters()).device
    out: list[float] = []
    for start in range(0, len(instructions), batch_size):
        batch = encode(tokenizer, instructions[start:start + batch_size], responses[start:start + batch_size], device)
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
        targets = batch.input_ids[:, 1:]
        token_lp = logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        mask = batch.response_mask()[:, :-1].float()
        n = mask.sum(dim=1).clamp(min=1)
        out.extend((-(token_lp * mask).sum(dim=1) / n).tolist())
    return out
