"""A batch of sequences as one token tree: shared prefixes computed once, logits only where a response token is
predicted, and (on CPU) attention run one prompt at a time instead of over the dense tree mask."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from diag.credit.encoding import Encoded, prompt_groups
from diag.device import additive_mask


@dataclass(frozen=True)
class AttentionSegment:
    """Query nodes one prompt's sequences added, the nodes they can see (their paths), and the mask between them."""

    queries: torch.Tensor  # [q] node indices
    keys: torch.Tensor  # [k] node indices, ascending
    attention: torch.Tensor  # [1, 1, q, k] additive mask


@dataclass(frozen=True)
class TokenTree:
    """A batch of sequences merged into one prefix tree, laid out as a single row in insertion order.

    Each token attends to its ancestors and itself only and sits at position = its depth, so every sequence is
    scored exactly as if alone, while shared prefixes (the chat template's system turn, a prompt answered twice,
    the words a chosen and a rejected answer share before they differ) are computed once.
    """

    ids: torch.Tensor  # [1, nodes]
    attention: torch.Tensor  # [1, 1, nodes, nodes] additive mask (0 = attend)
    positions: torch.Tensor  # [1, nodes]
    scored_nodes: torch.Tensor  # [k] nodes whose logits predict some response token
    sources: torch.Tensor  # [sequences, max_response_len] index into scored_nodes predicting each response token
    targets: torch.Tensor  # [sequences, max_response_len]
    mask: torch.Tensor  # [sequences, max_response_len] 1 for real response tokens
    segments: tuple[AttentionSegment, ...]  # one per prompt: the same attention in pieces (``segment_attention``)


def build_tree(batch: Sequence[Encoded], device: torch.device, dtype: torch.dtype) -> TokenTree:
    """Merge ``batch`` into a ``TokenTree``; a node's parent always comes before it, so order stays causal."""
    tokens: list[int] = []
    creators: list[int] = []  # the sequence that added each node
    child: dict[tuple[int, int], int] = {}  # (parent node, token id) -> node
    paths = []
    for i, e in enumerate(batch):
        node, path = -1, []
        for token in e.ids:
            if (node, token) not in child:
                child[(node, token)] = len(tokens)
                tokens.append(token)
                creators.append(i)
            node = child[(node, token)]
            path.append(node)
        paths.append(path)
    n = len(tokens)
    # A node's ancestors are the nodes before it on any path through it: one lower-triangular block per path.
    ancestry = torch.zeros((n, n), dtype=torch.bool)
    depth = torch.zeros(n, dtype=torch.long)
    for path in paths:
        index = torch.tensor(path)
        ancestry[index[:, None], index[None, :]] = torch.ones(len(path), len(path), dtype=torch.bool).tril()
        depth[index] = torch.arange(len(path))
    n_resp = max(len(e.response_ids) for e in batch)
    predicting = torch.zeros((len(batch), n_resp), dtype=torch.long)  # node predicting each response token
    targets = torch.zeros((len(batch), n_resp), dtype=torch.long)
    mask = torch.zeros((len(batch), n_resp), dtype=torch.float32)
    for i, (e, path) in enumerate(zip(batch, paths, strict=True)):
        k = len(e.response_ids)
        predicting[i, :k] = torch.tensor(path[e.response_start - 1:len(e.ids) - 1])
        targets[i, :k] = torch.tensor(e.response_ids)
        mask[i, :k] = 1
    scored_nodes, sources = torch.unique(predicting[mask.bool()], return_inverse=True)
    source_index = torch.zeros_like(predicting)
    source_index[mask.bool()] = sources
    attention = additive_mask(ancestry.to(device), dtype)[None, None]  # made there: 1/4 of the bytes travel
    segments = []
    if device.type in SEGMENTED_ON:  # only where attention runs by segment (``segment_attention``)
        for members in prompt_groups(batch):
            queries = torch.tensor([node for node, creator in enumerate(creators) if creator in members])
            if len(queries):
                keys = torch.tensor(sorted(set().union(*(paths[i] for i in members))))
                segments.append(AttentionSegment(queries.to(device), keys.to(device),
                                                 attention[:, :, queries][..., keys]))
    return TokenTree(torch.tensor([tokens], device=device), attention, depth[None].to(device),
                     scored_nodes.to(device), source_index.to(device), targets.to(device), mask.to(device),
                     tuple(segments))


def tree_logps(model: torch.nn.Module, tree: TokenTree, inputs_embeds: torch.Tensor | None = None) -> torch.Tensor:
    """log p of every response token, ``[sequences, max_response_len]`` (0 at padding); logits only where needed."""
    tokens = {"input_ids": tree.ids} if inputs_embeds is None else {"inputs_embeds": inputs_embeds}
    with segment_attention(model) as supported:
        segments = {"tree_segments": tree.segments} if supported and tree.segments else {}
        logits = model(**tokens, attention_mask=tree.attention, position_ids=tree.positions,
                       logits_to_keep=tree.scored_nodes, use_cache=False, **segments).logits[0].float()
    # Normalise each scored node once, then look up scalars: a node predicting two sequences' tokens (where a
    # chosen and a rejected answer part) is not copied, and no [sequences, length, vocab] tensor is made.
    return torch.log_softmax(logits, dim=-1)[tree.sources, tree.targets] * tree.mask


SEGMENT_ATTENTION = "diag_tree_segments"
# Device types where tree attention runs one prompt at a time. On CPU that beats the dense mask (kernels do not
# skip masked blocks); on CUDA the per-prompt calls are launch-bound (2.35x two bare forwards at batch 64 on an
# H200), so CUDA takes the single dense-mask SDPA call. Same mask, same softmax either way.
SEGMENTED_ON = frozenset({"cpu"})


def _segmented_sdpa(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                    attention_mask: torch.Tensor | None, tree_segments: Sequence[AttentionSegment] | None = None,
                    **kwargs) -> tuple[torch.Tensor, None]:
    """SDPA over a token tree one prompt at a time: each prompt's nodes see only their own paths.

    The dense tree mask hides all but ~1/6 of the node pairs, and CPU attention kernels do not skip masked
    blocks; the pieces compute the same softmax over the same visible keys (the mask is exact in both forms).
    """
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if tree_segments is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    out = query.new_empty(query.shape[0], query.shape[2], query.shape[1], query.shape[3])  # [b, nodes, heads, d]
    for segment in tree_segments:
        part, _ = sdpa_attention_forward(module, query[:, :, segment.queries], key[:, :, segment.keys],
                                         value[:, :, segment.keys], segment.attention, **kwargs)
        out[:, segment.queries] = part
    return out, None


@contextlib.contextmanager
def segment_attention(model: torch.nn.Module) -> Iterator[bool]:
    """Switch ``model`` to segmented tree attention for one call; yields False (dense mask) if it cannot switch
    or its device type is not in ``SEGMENTED_ON``."""
    from transformers import AttentionInterface

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = getattr(base, "config", None)
    previous = getattr(config, "_attn_implementation", None)
    on_device = next(base.parameters()).device.type in SEGMENTED_ON
    if previous != "sdpa" or not hasattr(base, "set_attn_implementation") or not on_device:
        yield False
        return
    AttentionInterface.register(SEGMENT_ATTENTION, _segmented_sdpa)
    base.set_attn_implementation(SEGMENT_ATTENTION)
    try:
        yield True
    finally:
        base.set_attn_implementation(previous)
