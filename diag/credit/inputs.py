"""What a score run reads: the policy (the committed adapter by name, or a model, directory or adapter), its
reference, and the pairs or responses (generated, or a JSONL file), each checked and fingerprinted into the run id
before any run directory exists.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from diag.credit.config import COMMITTED_ADAPTER
from diag.credit.config import ScoreConfig as Config
from diag.credit.sources import TRAINING_ARGS
from diag.errors import DiagError
from diag.files import check_text_file, fingerprint, message_text, read_json_lines


def committed_adapter_dir(name: str = COMMITTED_ADAPTER) -> Path:
    return Path(__file__).resolve().parent.parent / "zoo" / "assets" / name


def resolve_policy(policy: str) -> str:
    """The committed adapter by name, or whatever the user gave (a model name, directory or adapter)."""
    return str(committed_adapter_dir()) if policy == COMMITTED_ADAPTER else policy


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Pairs ``{prompt, chosen, rejected[, span_chosen, span_rejected, type]}`` or ``{prompt, response}``, in
    TRL's dataset formats too (``normalise_record``).

    ``type`` (or ``kind``, as generated pairs carry it) names the corruption; localisation is reported per type.

    Every line is checked before anything is used; the first bad line fails the whole import.
    """
    records = []
    for number, raw in read_json_lines(path, "data file"):
        where = f"{path}:{number}"
        record = normalise_record(where, raw)
        is_pair = "chosen" in record
        for key in ("chosen", "rejected") if is_pair else ("response",):
            if not isinstance(record.get(key), str) or not record[key].strip():
                raise DiagError(f"{where}: field {key!r} must be a non-empty string")
        for key in ("span_chosen", "span_rejected"):
            if key in record:
                span, text = record[key], record["chosen" if key == "span_chosen" else "rejected"]
                if not (isinstance(span, list) and len(span) == 2 and all(isinstance(v, int) for v in span)
                        and 0 <= span[0] < span[1] <= len(text)):
                    raise DiagError(f"{where}: {key} must be [start, end) character offsets inside the text")
        for key in ("type", "kind"):
            if key in record and (not isinstance(record[key], str) or not record[key].strip()):
                raise DiagError(f"{where}: field {key!r} must be a non-empty string when given")
        records.append(record)
    return records


def normalise_record(where: str, record: dict[str, Any]) -> dict[str, Any]:
    """One data line in our schema: ``prompt`` (a string, or the conversation before the answer as chat
    messages), and ``chosen`` / ``rejected`` or ``response`` as strings.

    TRL's formats are read as TRL reads them: ``completion`` for ``response`` (prompt-completion); answers as
    conversations (``[{"role", "content"}, ...]``, the last message the assistant's answer), with the prompt
    given (a string or messages) or implicit (the messages before the answer, identical in chosen and rejected,
    as in UltraFeedback-binarized or HH-RLHF in TRL's layout).
    """
    record = dict(record)
    if "completion" in record and "response" not in record:
        record["response"] = record.pop("completion")
    sides = ("chosen", "rejected") if "chosen" in record or "rejected" in record else ("response",)
    contexts = []
    for side in sides:
        if isinstance(record.get(side), list):
            context, record[side] = _split_answer(f"{where}: {side}", record[side])
            contexts.append(context)
    prompt = record.get("prompt")
    if isinstance(prompt, list):
        record["prompt"] = _messages(f"{where}: prompt", prompt)
    elif prompt is None and contexts:
        if len(contexts) != len(sides) or any(c != contexts[0] for c in contexts) or not contexts[0]:
            raise DiagError(f"{where}: no prompt, and the {' and '.join(sides)} conversations do not share the "
                            "messages before their answers")
        record["prompt"] = contexts[0]
    prompt = record.get("prompt")
    if not (isinstance(prompt, list) or (isinstance(prompt, str) and prompt.strip())):
        raise DiagError(f"{where}: field 'prompt' must be a non-empty string or a list of chat messages")
    return record


def _messages(where: str, messages: Any) -> list[dict[str, str]]:
    """Chat messages as ``{"role", "content"}`` with string content (OpenAI text parts are joined)."""
    if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
        raise DiagError(f"{where}: must be a non-empty list of chat messages")
    out = []
    for m in messages:
        if not isinstance(m.get("role"), str) or "content" not in m:
            raise DiagError(f"{where}: each message needs a string role and content")
        out.append({"role": m["role"], "content": message_text(where, m.get("content"))})
    return out


def _split_answer(where: str, conversation: Any) -> tuple[list[dict[str, str]], str]:
    """(messages before the answer, the answer) of a conversation ending in an assistant message."""
    messages = _messages(where, conversation)
    if messages[-1]["role"] != "assistant":
        raise DiagError(f"{where}: the conversation must end with the assistant's answer")
    if not messages[-1]["content"]:
        raise DiagError(f"{where}: the assistant's answer has no text to score")
    return messages[:-1], messages[-1]["content"]


def prompt_text(prompt: str | list[dict[str, str]]) -> str:
    """A prompt for display: the string (a lone user turn's text), or the conversation as ``role: text`` lines."""
    if isinstance(prompt, str):
        return prompt
    if len(prompt) == 1 and prompt[0]["role"] == "user":
        return prompt[0]["content"]
    return "\n".join(f"{m['role']}: {m['content']}" for m in prompt)


def load_records(config: Config) -> list[tuple[int, dict[str, Any]]]:
    """(seed, record) for every pair or response the run scores."""
    from diag.credit.data import make_pairs

    if config.data in ("heldout", "train"):  # "train": fresh draws from the training templates and entities
        return [(seed, p.to_dict()) for seed in config.seeds for p in make_pairs(config.data, config.n_pairs, seed)]
    return [(0, r) for r in read_jsonl(Path(config.data))]


def _local_fingerprint(model: str | None) -> str | None:
    """Fingerprint of the local model or adapter directory that will load (for a TRL output: the final model or
    latest checkpoint, so a new checkpoint is a new run); None for hub ids (their revision is the hub's)."""
    from diag.credit.sources import resolve

    if model is None:
        return None
    path = Path(resolve(resolve_policy(model), with_args=False).model_dir)
    return fingerprint(path) if path.exists() else None


def check_pair(config: Config) -> None:
    """What the pair needs and lacks, as one line before any run exists: a reference, and a beta."""
    from diag.credit.adapters import ADAPTER_META
    from diag.credit.sources import is_adapter_dir, recorded_beta, resolve

    policy = resolve(resolve_policy(config.policy))
    adapter = is_adapter_dir(policy.model_dir)
    if config.reference is None and not adapter:
        raise DiagError(f"{config.policy!r} is not a PEFT adapter directory, so a reference model is needed "
                        "(--reference)")
    if config.beta is None and recorded_beta(policy) is None:
        raise DiagError(f"{config.policy} records no beta (no {TRAINING_ARGS} with one"
                        f"{f', no {ADAPTER_META}' if adapter else ''}); pass --beta")


def pin_inputs(config: Config) -> Config:
    """Record the hashes of the JSONL file and of local policy/reference weights in the config (and run id)."""
    data_sha256 = None
    if config.data not in ("heldout", "train"):
        path = Path(config.data)
        check_text_file(path, f"data file {path}")
        data_sha256 = fingerprint(path)
    return dataclasses.replace(config, data_sha256=data_sha256, policy_sha256=_local_fingerprint(config.policy),
                               reference_sha256=_local_fingerprint(config.reference))


def check_inputs(config: Config) -> None:
    """Read the data file through and check the pair: bad input fails before a run directory exists."""
    if config.data not in ("heldout", "train"):
        read_jsonl(Path(config.data))
    check_pair(config)
