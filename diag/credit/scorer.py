"""Per-token implicit reward r_t = beta * (log pi(a_t|s_t) - log pi_ref(a_t|s_t)) for any policy/reference pair.

The pair is either two causal LMs sharing one tokenizer, or one PEFT model whose reference is the same
weights with the adapter disabled (no second copy in memory). Prompts go through the policy tokenizer's chat
template; only response tokens (the answer and the end-of-turn token) are scored. A batch runs as one token
tree (``TokenTree``): shared prefixes are computed once, and the LM head runs only where a response token is
predicted.

Shared trunk: when the adapter sits only on the top blocks (ours: the top 6 of 30), the blocks below it are the
same network with the adapter on or off, so the reference pass starts from the residual stream the policy pass
left at the first adapted block. A one-time check on a short input confirms the shortcut reproduces the full
reference pass for this architecture before it is used.
"""

from __future__ import annotations

import contextlib
import functools
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
        with torch.no_grad(), self.as_reference() as model:
            with capture_block_input(self.policy, first) as captured:
                full = response_logps(model, probe, attention, positions, targets)
            with from_block(self.policy, first):
                short = response_logps(model, probe, attention, positions, targets, inputs_embeds=captured["h"])
        return first if torch.allclose(full, short, atol=1e-4, rtol=0) else 0

    def token_logps(self, batch: Sequence[Encoded]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(policy, reference, mask) log-probs of each response token, ``[batch, max_response_len]``, left-aligned.

        The batch runs as one token tree: shared prefixes are computed once (see ``TokenTree``).
        """
        tree = build_tree(batch, self.device, next(self.policy.parameters()).dtype)
        shared = self.shared_blocks
        with torch.no_grad():
            with capture_block_input(self.policy, shared) as captured:
                policy = tree_logps(self.policy, tree)
            with self.as_reference() as model, from_block(self.policy, shared):
                ref = tree_logps(model, tree, inputs_embeds=captured.get("h"))
        return policy, ref, tree.mask

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
            for row, i in enumerate(chunk):
                n = len(encoded[i].response_ids)
                p, r = policy[row, :n].double().cpu(), ref[row, :n].double().cpu()  # host copies for numpy
                scored[i] = TokenScores(p.numpy(), r.numpy(), (self.beta * (p - r)).numpy())
            progress(len(scored), len(encoded), "scoring")
        return [scored[i] for i in range(len(encoded))]


def prompt_groups(encoded: Sequence[Encoded]) -> list[list[int]]:
    """Indices of the sequences that share each prompt (the tokens before the response), in first-seen order."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, e in enumerate(encoded):
        groups.setdefault(e.ids[:e.response_start], []).append(i)
    return list(groups.values())


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
    parents: list[int] = []
    creators: list[int] = []  # the sequence that added each node
    child: dict[tuple[int, int], int] = {}  # (parent node, token id) -> node
    paths = []
    for i, e in enumerate(batch):
        node, path = -1, []
        for token in e.ids:
            if (node, token) not in child:
                child[(node, token)] = len(tokens)
                tokens.append(token)
                parents.append(node)
                creators.append(i)
            node = child[(node, token)]
            path.append(node)
        paths.append(path)
    n = len(tokens)
    ancestry = torch.zeros((n, n), dtype=torch.bool)
    depth = torch.zeros(n, dtype=torch.long)
    for node, parent in enumerate(parents):
        if parent >= 0:
            ancestry[node] = ancestry[parent]
            depth[node] = depth[parent] + 1
        ancestry[node, node] = True
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
    attention = torch.zeros((n, n), dtype=dtype).masked_fill(~ancestry, torch.finfo(dtype).min)[None, None]
    segments = []
    for members in prompt_groups(batch):
        queries = torch.tensor([node for node, creator in enumerate(creators) if creator in members])
        if len(queries):
            keys = torch.tensor(sorted(set().union(*(paths[i] for i in members))))
            segments.append(AttentionSegment(queries.to(device), keys.to(device),
                                             attention[:, :, queries][..., keys].to(device)))
    return TokenTree(torch.tensor([tokens], device=device), attention.to(device), depth[None].to(device),
                     scored_nodes.to(device), source_index.to(device), targets.to(device), mask.to(device),
                     tuple(segments))


def tree_logps(model: torch.nn.Module, tree: TokenTree, inputs_embeds: torch.Tensor | None = None) -> torch.Tensor:
    """log p of every response token, ``[sequences, max_response_len]`` (0 at padding); logits only where needed."""
    tokens = {"input_ids": tree.ids} if inputs_embeds is None else {"inputs_embeds": inputs_embeds}
    with segment_attention(model) as supported:
        segments = {"tree_segments": tree.segments} if supported else {}
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


def blocks_of(model: torch.nn.Module) -> tuple[torch.nn.Module, str]:
    """The module holding the decoder's block list and the list's attribute name, found by architecture
    through a PEFT wrapper (``probes.site.block_path``); ``from_block`` swaps that attribute."""
    from probes.errors import SiteError
    from probes.site import block_path

    try:
        path = block_path(model)
    except SiteError as exc:
        raise DiagError(str(exc)) from exc
    parent, _, name = path.rpartition(".")
    return model.get_submodule(parent), name


def first_adapted_block(model: torch.nn.Module) -> int:
    """Index of the lowest block holding an adapter; 0 when there is none or it also touches other modules."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    holder, name = blocks_of(model)
    blocks = getattr(holder, name)
    owner = {id(module): i for i, block in enumerate(blocks) for module in block.modules()}
    adapted = [owner.get(id(module), -1) for module in model.modules()
               if isinstance(module, BaseTunerLayer) or "ModulesToSave" in type(module).__name__]
    return max(0, min(adapted)) if adapted else 0


@contextlib.contextmanager
def capture_block_input(model: torch.nn.Module, block: int) -> Iterator[dict[str, torch.Tensor]]:
    """Record the residual stream entering ``block`` as ``captured["h"]`` (nothing is recorded for block 0)."""
    captured: dict[str, torch.Tensor] = {}
    if block == 0:
        yield captured
        return
    holder, name = blocks_of(model)
    hook = getattr(holder, name)[block].register_forward_pre_hook(
        lambda _m, args, kwargs: captured.update(h=args[0] if args else kwargs["hidden_states"]), with_kwargs=True)
    try:
        yield captured
    finally:
        hook.remove()


@contextlib.contextmanager
def from_block(model: torch.nn.Module, block: int) -> Iterator[None]:
    """Run only blocks ``block`` and up; the caller passes the residual stream entering it as ``inputs_embeds``."""
    if block == 0:
        yield
        return
    holder, name = blocks_of(model)
    all_blocks = getattr(holder, name)
    setattr(holder, name, torch.nn.ModuleList(list(all_blocks)[block:]))
    try:
        yield
    finally:
        setattr(holder, name, all_blocks)


def adapter_meta(path: str) -> dict:
    """Training metadata we store beside our adapters (beta, base); empty for foreign adapters."""
    meta = Path(path) / ADAPTER_META
    return json.loads(meta.read_text()) if meta.is_file() else {}


def load_adapter(adapter: str, device: str = "auto", dtype: str = "float32") -> tuple[Any, Any, dict[str, Any]]:
    """A PEFT adapter applied to its base (in ``dtype`` on ``device``), its tokenizer and the base's numerics."""
    from peft import PeftModel

    from diag.zoo.lm import load_lm_numerics

    base_name = json.loads((Path(adapter) / "adapter_config.json").read_text()).get("base_model_name_or_path")
    base, tokenizer, numerics = load_lm_numerics(base_name, device, dtype)
    try:
        model = PeftModel.from_pretrained(base, adapter)
    except Exception as exc:
        raise DiagError(f"cannot load adapter {adapter}: {str(exc).splitlines()[0]}") from exc
    return model.eval(), tokenizer, numerics


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
