"""A (prompt, response) as the token ids both models score: the chat template's user turn and assistant header,
then the response and the end-of-turn token. Only response tokens are scored."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from diag.errors import DiagError


@dataclass(frozen=True)
class Encoded:
    """One (prompt, response) as token ids; response tokens are ``ids[response_start:]``."""

    ids: tuple[int, ...]
    response_start: int
    offsets: tuple[tuple[int, int], ...]  # character span of each response token in the response text

    @property
    def response_ids(self) -> tuple[int, ...]:
        return self.ids[self.response_start:]


def encode(tokenizer, prompt: str | list[dict[str, str]], response: str) -> Encoded:
    """Tokenize with the chat template (the prompt as one user turn, or the conversation given, then the
    assistant header), the response, then end-of-turn."""
    from diag.zoo.lm import answer_prefix

    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
    prefix = answer_prefix(tokenizer, messages)
    if getattr(tokenizer, "chat_template", None):
        full = tokenizer.apply_chat_template([*messages, {"role": "assistant", "content": response}], tokenize=False)
        if not full.startswith(prefix + response):
            raise DiagError("the chat template rewrites the assistant turn; cannot locate the response tokens")
        suffix = full[len(prefix) + len(response):].rstrip()
    else:  # a base model: the answer ends with EOS
        suffix = tokenizer.eos_token or ""
    prefix_ids = tokenizer(prefix, add_special_tokens=False)["input_ids"]
    body = tokenizer(response, add_special_tokens=False, return_offsets_mapping=True)
    suffix_ids = tokenizer(suffix, add_special_tokens=False)["input_ids"] if suffix else []
    offsets = [tuple(o) for o in body["offset_mapping"]] + [(len(response), len(response))] * len(suffix_ids)
    response_ids = list(body["input_ids"]) + list(suffix_ids)
    if not response_ids:
        raise DiagError("empty response: nothing to score")
    return Encoded(tuple(prefix_ids + response_ids), len(prefix_ids), tuple(offsets))


def prompt_groups(encoded: Sequence[Encoded]) -> list[list[int]]:
    """Indices of the sequences that share each prompt (the tokens before the response), in first-seen order."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, e in enumerate(encoded):
        groups.setdefault(e.ids[:e.response_start], []).append(i)
    return list(groups.values())
