"""Left-padded batches of encoded responses and the log-probs of their response tokens (plain forwards).

The DPO loop, captum's attributions and the scorer's one-time trunk check use these; scoring itself runs a
batch as a token tree (``diag.credit.token_tree``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from diag.credit.encoding import Encoded


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


def target_logps(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log-softmax of ``logits`` at ``targets``.

    The full log-softmax is five times faster than gather minus ``torch.logsumexp`` on CPU (torch 2.13: 29 vs
    160 ms for 335 x 49,152 logits): logsumexp's kernel is not vectorised like softmax's.
    """
    return torch.log_softmax(logits, dim=-1).gather(-1, targets[..., None]).squeeze(-1)


def response_logits(model: torch.nn.Module, ids: torch.Tensor, attention: torch.Tensor, positions: torch.Tensor,
                    n: int, inputs_embeds: torch.Tensor | None = None) -> torch.Tensor:
    """Logits predicting each of the last ``n`` tokens, ``[batch, n, vocab]``, float32.

    Logits are computed only at those positions (the LM head is a fifth of SmolLM2's per-token cost).
    """
    tokens = {"input_ids": ids} if inputs_embeds is None else {"inputs_embeds": inputs_embeds}
    logits = model(**tokens, attention_mask=attention, position_ids=positions, logits_to_keep=n + 1,
                   use_cache=False).logits
    return logits[:, :-1].float()


def response_logps(model: torch.nn.Module, ids: torch.Tensor, attention: torch.Tensor, positions: torch.Tensor,
                   targets: torch.Tensor, inputs_embeds: torch.Tensor | None = None) -> torch.Tensor:
    """log p(target) at the last ``targets.shape[1]`` positions."""
    return target_logps(response_logits(model, ids, attention, positions, targets.shape[1], inputs_embeds), targets)
