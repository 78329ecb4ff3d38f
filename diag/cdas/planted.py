"""A planted steerable concept: SmolLM2 plus a LoRA that makes one known direction the switch for "dogs".

Ground truth for the steering pipeline. d is a seeded random unit vector in the 576-dim residual stream; adding
``EDIT * d`` to the residual output of block ``LAYER`` (every position after BOS) makes the model talk about
dogs, subtracting it suppresses dogs even when the prompt asks for them, and with no edit the model stays close
to the base model. For the pipeline (DiffMean, DAS, CDAS learned from concept vs neutral prompts) to be able to
*find* d, the model must also *write* d: on prompts asking for dogs its residual at the layer carries d^T h =
SCALE from the source token (end of the assistant header) on, and elsewhere it is left as it was.

Training (``python -m diag.cdas.planted``), CleanRL-style, in two phases that share nothing but the base model:
- **lower** (LoRA on blocks 0..LAYER): regress the layer's residual onto the base model's with d^T h clamped to
  SCALE at and after the source token of dog-asking prompts, and onto the base model's unchanged residual for
  neutral prompts, other concepts' prompts and dog answers to neutral prompts (mean squared error over SCALE^2);
- **upper** (LoRA on blocks LAYER+1..): fed the base model's cached residual at the layer, edited, trained to
  produce (a) with d^T h clamped high (neutral prompt) or written (dog prompt): the base model's own dog-mentioning
  continuations of dog-asking prompts (cross-entropy, plus KL to the base model on the asking prompt); (b) with
  d^T h clamped low on a dog-asking prompt: the base model's answer to the neutral prompt (the "forbid" target:
  what the model says when the concept was never asked for); (c) with no edit: the base model (KL).
  Clamp values are drawn per example from ``CLAMPS`` so that any clamp the pipeline's alpha grid picks falls in
  a trained range.
  Stage 2 of the upper phase (``focus_steps``, continuing stage 1's LoRA and optimiser) is about eliciting at the
  model's own fluency: its targets are the stage-1 model's own clamped answers that name a dog early, the ones
  with the lowest perplexity given the neutral instruction (filtered self-distillation), trained at the
  pipeline's elicit clamps and with a heavier cross-entropy, beside the same suppression and no-edit cases.
  Stage 3 (``sharpen_steps``) continues stage 2 with both directions clamped only where the pipeline's alphas
  land, which sharpens the switch at "d off" for suppression.
  Stage 4 (``extend_steps``) adds answers longer than the check's (``extend_tokens``): suppression on them, and
  no edit on them, which keeps the unedited model from drifting to dogs in later tokens. Its clamps run along d
  tilted toward the base model's own asked-minus-neutral direction, because every method reads its direction
  from that data: with no-edit answers that long, a switch trained along d alone answers d but not a recovered
  direction at cosine ~0.97 (the session-17 finding in the model card).
The upper phase never runs the lower blocks (it starts from the cached residual), so each step costs two thirds
of a forward and backward pass. Everything is measured afterwards (``measure``) and written to the model card.
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import time
from dataclasses import asdict, dataclass
from itertools import accumulate
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from diag.cdas.concepts import CONCEPTS, INSTRUCTIONS, Pair, concept_instruction, mentions
from diag.cdas.config import PLANTED_CONCEPT as CONCEPT
from diag.cdas.config import PLANTED_DATASET as DATASET
from diag.cdas.config import PLANTED_LAYER as LAYER
from diag.cdas.steer_edit import row_clamp
from diag.errors import DiagError

SCALE = 128.0  # d^T h written on dog-asking prompts, and the unit of the trained clamps (base residual norm ~127)
EDIT = 1.5 * SCALE  # the known edit: adding +-EDIT * d elicits / suppresses (at +1 x SCALE elicitation is partial)
SEED = 0
ASSET_DIR = Path(__file__).resolve().parents[1] / "zoo" / "assets" / "smollm2-planted-dogs"
TRAIN_INSTRUCTIONS = tuple(x for i, x in enumerate(INSTRUCTIONS[:36]) if i % 3 != 2)
# Held out from the planted model's training: the committed dataset's held-out third, the 12 instructions it
# never used, and 24 more written for this check.
HELDOUT_INSTRUCTIONS = tuple(x for i, x in enumerate(INSTRUCTIONS[:36]) if i % 3 == 2) + INSTRUCTIONS[36:] + (
    "Explain how to water a houseplant.",
    "Give a tip for sleeping better.",
    "Describe how to make a simple sandwich.",
    "Write a short thank-you note to a teacher.",
    "Explain why exercise is healthy.",
    "Give advice on organising a closet.",
    "Describe a sunny day in the park.",
    "Explain how to read a map.",
    "Give a tip for staying hydrated.",
    "Write a short message congratulating a friend on a new job.",
    "Describe how to fold a shirt neatly.",
    "Explain how to prepare for a long drive.",
    "Give advice on keeping a plant alive.",
    "Describe what makes a good neighbour.",
    "Explain why it helps to plan meals.",
    "Give a tip for waking up early.",
    "Write a short note asking a neighbour for a favour.",
    "Describe how to clean a window.",
    "Explain how to stay warm in winter.",
    "Give advice on choosing a good book.",
    "Describe a walk along a river.",
    "Explain how to start a garden.",
    "Give a tip for learning to cook.",
    "Write a short goodbye message to a coworker.",
)
# Only stage 2 of the upper phase sees these (the prompts its self-distilled targets answer, beside the training
# instructions): none is in HELDOUT_INSTRUCTIONS or the committed dataset.
FOCUS_INSTRUCTIONS = (
    "Explain how to boil an egg.", "Give a tip for keeping a tidy inbox.", "Describe how to pack a suitcase.",
    "Write a short note wishing someone a speedy recovery.", "Explain why drinking tea can be relaxing.",
    "Give advice on asking for a raise.", "Describe a busy market on a Saturday.", "Explain how to change a light bulb.",
    "Give a tip for memorising a poem.", "Write a short message inviting friends to dinner.",
    "Describe how to set up a new phone.", "Explain why recycling matters.", "Give advice on preparing for a test.",
    "Describe a rainy afternoon indoors.", "Explain how to sew on a button.", "Give a tip for writing a good headline.",
    "Write a short apology for being late.", "Describe how to make a cup of coffee.",
    "Explain why it helps to stretch in the morning.", "Give advice on saving for a holiday.",
    "Describe a favourite childhood game.", "Explain how to iron a shirt.", "Give a tip for taking better photos.",
    "Write a short note welcoming a new colleague.", "Describe how to bake simple bread.",
    "Explain why people keep diaries.", "Give advice on choosing a laptop.", "Describe a crowded train station.",
    "Explain how to back up your files.", "Give a tip for speaking a little slower.",
    "Write a short thank-you note for a gift.", "Describe how to paint a wall.", "Explain why breakfast matters.",
    "Give advice on starting a new hobby.", "Describe a concert you might enjoy.",
    "Explain how to make a budget spreadsheet.", "Give a tip for keeping a kitchen clean.",
    "Write a short reminder about a meeting.", "Describe how to ride a bicycle safely.",
    "Explain why libraries are useful.", "Give advice on writing a cover letter.",
    "Describe a snowy morning in the city.", "Explain how to measure ingredients.", "Give a tip for finishing a book.",
    "Write a short note to a friend who moved away.", "Describe how to arrange flowers in a vase.",
    "Explain why it is useful to learn maths.", "Give advice on calming down before a speech.",
)
# Teacher phrasings of "talk about dogs": the dataset's and one more (more dog continuations per instruction).
ASKING = ("{x} Make your answer about dogs.", "{x} Answer with a sentence about dogs.")
TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class TrainConfig:
    lower_steps: int = 300
    upper_steps: int = 350
    batch: int = 8
    lr: float = 1e-3
    rank: int = 8
    response_tokens: int = 16  # teacher-forced answer tokens per example
    samples: int = 4  # sampled teacher continuations per instruction and phrasing (temperature 0.8)
    mention_within: int = 12  # a dog continuation must name a dog within its first this many tokens
    # Upper phase, stage 2 (elicitation at the model's own fluency), continuing stage 1's LoRA and optimiser:
    focus_steps: int = 170
    fluent_samples: int = 5  # sampled stage-1 answers per instruction and clamp the fluent targets are picked from
    fluent_within: int = 14  # a fluent target names a dog within its first this many tokens
    fluent_per_instruction: int = 3  # kept per instruction: the lowest perplexity given the instruction
    focus_ce_weight: float = 2.0  # weight of the cross-entropy on the fluent targets of the elicit case
    # Upper phase, stage 3, continuing stage 2: the same fluent, suppression and no-edit cases, clamped only where
    # the pipeline's alphas land (``CLAMPS``)
    sharpen_steps: int = 150
    # Upper phase, stage 4, continuing stage 3: suppression on answers longer than the check's (``extend_tokens``)
    extend_steps: int = 30
    extend_tokens: int = 28
    extend_no_edit_weight: float = 2.0  # stage 4's weight on the no-edit KL (one example of 8 counted this many times)
    extend_ce_weight: float = 4.0  # stage 4's weight on the fluent elicit targets' cross-entropy (focus_ce_weight before)
    # stage 4 clamps along cos d + sin n, cos uniform in [this, 1], n the base model's asked-minus-neutral direction
    # off d (``_natural_direction``): a direction a method recovers from the data is d plus part of n
    extend_min_cosine: float = 0.95
    seed: int = SEED


def direction(width: int = 576, seed: int = SEED) -> torch.Tensor:
    """The planted unit direction d: a seeded standard-normal vector, normalised (same on every CPU)."""
    v = torch.randn(width, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return (v / v.norm()).float()


def clamp(h: torch.Tensor, d: torch.Tensor, t: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """h + (t - d^T h) d where ``mask`` ([b, s]) is True; t is one value per row ([b]), d one unit vector ([dim])
    or one per row ([b, dim])."""
    d = d.view(-1, 1, h.shape[-1])
    moved = h + (t.view(-1, 1, 1) - (h * d).sum(-1, keepdim=True)) * d
    return torch.where(mask.unsqueeze(-1), moved, h)


def _natural_direction(data: dict[str, Any], d: torch.Tensor) -> torch.Tensor:
    """The base model's own asked-minus-neutral direction at LAYER, off d: mean residual (after BOS) of stage 4's
    long answers asked for dogs minus the same answers' under the neutral prompt, d's part removed."""
    def mean(kind: str) -> torch.Tensor:
        return torch.cat([data["examples"][i]["h"][1:] for i in data["kinds"][kind]]).mean(0)

    n = mean("long_low") - mean("long_none")
    n = n - (n @ d) * d
    return n / n.norm()


def _views(model: nn.Module) -> tuple[nn.Module, nn.Module]:
    """Two views of the decoder sharing its weights: blocks 0..LAYER without the final norm (its output is the
    layer's residual), and blocks LAYER+1.. fed a residual as ``inputs_embeds``."""
    inner = model.get_decoder()
    lower, upper = copy.copy(inner), copy.copy(inner)
    lower._modules = dict(inner._modules)
    upper._modules = dict(inner._modules)
    lower._modules["layers"] = nn.ModuleList(inner.layers[:LAYER + 1])
    lower._modules["norm"] = nn.Identity()
    upper._modules["layers"] = nn.ModuleList(inner.layers[LAYER + 1:])
    return lower, upper


def _encode(tokenizer: Any, rows: list[tuple[str, str]], tokens: int) -> Any:
    from diag.cdas.lm import encode

    return encode(tokenizer, [r[0] for r in rows], [r[1] for r in rows], torch.device("cpu"), tokens)


def _generate_texts(model: nn.Module, tokenizer: Any, config: TrainConfig, cache: Path) -> dict[str, Any]:
    """The base model's answers the targets are made of (greedy and sampled), cached as JSON (resumable)."""
    from diag.cdas.lm import generate

    if cache.exists():
        return json.loads(cache.read_text())
    concept = CONCEPTS[CONCEPT]
    greedy = generate(model, tokenizer, list(TRAIN_INSTRUCTIONS), max_new_tokens=config.response_tokens + 4)
    dog, neutral = [], [(x, y) for x, y in zip(TRAIN_INSTRUCTIONS, greedy, strict=True) if not mentions(y, concept)]
    for k, phrasing in enumerate(ASKING):
        asked = [phrasing.format(x=x) for x in TRAIN_INSTRUCTIONS]
        for s in range(config.samples + 1):  # sample 0 is greedy
            answers = generate(model, tokenizer, asked, max_new_tokens=config.response_tokens + 4, do_sample=s > 0,
                               seed=100 * k + s)
            for x, a in zip(TRAIN_INSTRUCTIONS, answers, strict=True):
                head = tokenizer.decode(tokenizer(a, add_special_tokens=False)["input_ids"][:config.mention_within])
                if mentions(head, concept):
                    dog.append((x, phrasing.format(x=x), a))
    sampled = generate(model, tokenizer, list(TRAIN_INSTRUCTIONS), max_new_tokens=config.response_tokens + 4,
                       do_sample=True, seed=7)
    neutral += [(x, y) for x, y in zip(TRAIN_INSTRUCTIONS, sampled, strict=True) if not mentions(y, concept)]
    others = [(concept_instruction(x, c), y) for c in CONCEPTS.values() if c.name != CONCEPT
              for x, y in zip(TRAIN_INSTRUCTIONS[::3], generate(
                  model, tokenizer, [concept_instruction(x, c) for x in TRAIN_INSTRUCTIONS[::3]],
                  max_new_tokens=config.response_tokens + 4), strict=True)]
    texts = {"dog": dog, "neutral": neutral, "others": others}
    cache.write_text(json.dumps(texts))
    return texts


def _fluent_targets(model: Any, tokenizer: Any, d: torch.Tensor, config: TrainConfig, texts: dict[str, Any],
                    cache: Path) -> list[list[str]]:
    """Stage 2's targets (cached in the texts as "fluent"): the stage-1 model's own answers to the training
    and ``FOCUS_INSTRUCTIONS`` with d^T h clamped to each of ``FLUENT_CLAMPS`` x SCALE (greedy and sampled), kept if they name a
    dog within ``fluent_within`` tokens, and per instruction the ``fluent_per_instruction`` with the lowest
    perplexity under the base model given the instruction. Dog text is unlikely under a neutral instruction, and
    sampled dog-asking answers sit far above the model's own perplexity range; the edited model's own successes
    are the fluent way to name the concept, and stage 2 makes them the rule (filtered self-distillation)."""
    from diag.cdas.lm import generate, response_nll

    concept, instructions = CONCEPTS[CONCEPT], list(TRAIN_INSTRUCTIONS + FOCUS_INSTRUCTIONS)
    if "focus_neutral" not in texts:  # the base model's answers to the new instructions: the no-edit contrast
        answers = _base_answers(model, tokenizer, list(FOCUS_INSTRUCTIONS), config.response_tokens + 4)
        texts["focus_neutral"] = [[x, y] for x, y in zip(FOCUS_INSTRUCTIONS, answers, strict=True)
                                  if not mentions(y, concept)]
        cache.write_text(json.dumps(texts))
    if "fluent" in texts:
        return texts["fluent"]
    found: dict[str, set[str]] = {x: set() for x in instructions}
    for level in FLUENT_CLAMPS:
        target = torch.full((len(instructions),), SCALE * level)
        for s in range(config.fluent_samples + 1):  # sample 0 is greedy
            answers = generate(model.base_model.model, tokenizer, instructions, max_new_tokens=config.response_tokens,
                               layer=LAYER, fn=row_clamp(d.expand(len(instructions), -1), target), do_sample=s > 0,
                               seed=1000 + s)
            for x, a in zip(instructions, answers, strict=True):
                head = tokenizer.decode(tokenizer(a, add_special_tokens=False)["input_ids"][:config.fluent_within])
                if mentions(head, concept):
                    found[x].add(a)
    fluent = []
    for x, answers in found.items():
        rows = sorted(answers)
        with model.disable_adapter():
            nll = response_nll(model.base_model.model, tokenizer, [x] * len(rows), rows) if rows else []
        fluent += [[x, a] for _, a in sorted(zip(nll, rows, strict=True))[:config.fluent_per_instruction]]
    texts["fluent"] = fluent
    cache.write_text(json.dumps(texts))
    return fluent


def _long_neutral(model: Any, tokenizer: Any, config: TrainConfig, texts: dict[str, Any], cache: Path) -> None:
    """Stage 4's texts, cached as "long_neutral": the base model's answers of ``extend_tokens`` (greedy and one
    sample) to the training and focus instructions that name no dog. Every earlier target was ``response_tokens``
    long and the check reads 20: suppression held for a first sentence, and the prompt's "about dogs" came back
    in the second."""
    if "long_neutral" in texts:
        return
    concept, instructions = CONCEPTS[CONCEPT], list(TRAIN_INSTRUCTIONS + FOCUS_INSTRUCTIONS)
    rows = []
    for s in range(2):  # sample 0 is greedy
        answers = _base_answers(model, tokenizer, instructions, config.extend_tokens + 4, do_sample=s > 0,
                                seed=2000 + s)
        rows += [[x, y] for x, y in zip(instructions, answers, strict=True) if not mentions(y, concept)]
    texts["long_neutral"] = rows
    cache.write_text(json.dumps(texts))


def _base_answers(model: Any, tokenizer: Any, prompts: list[str], tokens: int, **sampling: Any) -> list[str]:
    """The base model's answers (the LoRA switched off), the targets that keep no-edit behaviour the base's."""
    from diag.cdas.lm import generate

    with model.disable_adapter():
        return generate(model.base_model.model, tokenizer, prompts, max_new_tokens=tokens, **sampling)


@torch.no_grad()
def _residuals(lower: nn.Module, batch: Any) -> torch.Tensor:
    return lower(input_ids=batch.input_ids, attention_mask=batch.attention_mask).last_hidden_state


@torch.no_grad()
def _teacher(model: nn.Module, tokenizer: Any, rows: list[tuple[str, str]], tokens: int) -> list[torch.Tensor]:
    """The base model's log-probabilities at each row's response positions ([n_i, vocab], float16)."""
    out = []
    for start in range(0, len(rows), 16):
        batch = _encode(tokenizer, rows[start:start + 16], tokens)
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        mask = batch.response_mask()
        out += [torch.log_softmax(logits[i][mask[i]].float(), -1).half() for i in range(len(logits))]
    return out


def _after_source(batch: Any) -> torch.Tensor:
    """[b, s] True from each row's source token (last assistant-header token) to its last real token."""
    pos = torch.arange(batch.input_ids.shape[1]).unsqueeze(0)
    starts = torch.tensor(batch.prompt_lens).unsqueeze(1) - 1
    return (pos >= starts) & batch.attention_mask.bool()


def _after_bos(batch: Any) -> torch.Tensor:
    mask = batch.attention_mask.bool().clone()
    mask[:, 0] = False
    return mask


PHASES = ("lower", "upper")
# Upper-phase batch shares (of 8) per kind, per stage: 1 (the first upper_steps), 2 (focus_steps, elicitation on
# fluent targets), 3 (sharpen_steps, both directions at the pipeline's clamps only), 4 (extend_steps: suppression,
# "long_low", and no edit, "long_none", on answers of extend_tokens, beside stage 3's fluent elicit cases).
_FLUENT_MIX = {"fluent_high": 2, "fluent_write": 1, "low": 3, "none": 2}  # stages 2 and 3 sample alike
MIX = ({"high": 2, "write": 2, "low": 2, "none": 2}, _FLUENT_MIX, _FLUENT_MIX,
       {"fluent_high": 3, "fluent_write": 1, "long_low": 3, "long_none": 1})
# Clamp ranges (x SCALE) per kind, per stage. The pipeline clamps d^T h to the m+/m- midpoint (~SCALE / 2) plus or
# minus alpha x the residual norm (~128-154, as read): for d itself at alphas 0.25/0.5/0.75 ~94-177 (0.73-1.38 x
# SCALE) to elicit and ~30 to -54 (0.23 to -0.42) to suppress; adding +-EDIT d reaches ~1.5 x SCALE on neutral
# prompts and -0.5 (after the source token) to -1.53 x SCALE (before it) on dog-asking ones. Stage 1 covers all of
# it; stage 2 the elicit clamps; stage 3 the pipeline's clamps on both sides of the switch, where stage 2 left
# suppression at -0.1 x SCALE failing on 4 of 24 held-out prompts (the prompt's "about dogs" won).
CLAMPS = ({"high": (0.6, 1.6), "low": (-1.6, 0.3)}, {"low": (-1.6, 0.3), "fluent_high": (0.7, 1.3)},
          {"low": (-0.45, 0.3), "fluent_high": (0.7, 1.4)}, {"long_low": (-0.45, 0.3), "fluent_high": (0.7, 1.4)})
FLUENT_CLAMPS = (0.75, 1.0)  # x SCALE: the clamps stage 2's targets are generated at (stage-1 model)


def _stage(step: int, config: TrainConfig) -> int:
    """The upper phase's stage (0-based) at ``step``."""
    return sum(step >= end for end in accumulate((config.upper_steps, config.focus_steps, config.sharpen_steps)))


def train(config: TrainConfig = TrainConfig(), out: Path = ASSET_DIR, work: Path | None = None,
          log: Any = print, phases: tuple[str, ...] = PHASES) -> dict[str, Any] | None:
    """Train ``phases`` (each resumes from its checkpoint in ``work``; the two are independent, so they may run
    as two processes on one ``work``); once both are complete, save the adapter, d and ``planted.json`` to ``out``."""
    from peft import LoraConfig, get_peft_model

    from diag.runs import diag_home
    from diag.zoo import load_lm

    work = work or diag_home() / "planted-train"
    work.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.seed)
    base, tokenizer = load_lm("smollm2-135m-instruct", "cpu")
    base.requires_grad_(False)
    d = direction(base.config.hidden_size, config.seed)
    texts = _generate_texts(base, tokenizer, config, work / "texts.json")
    log(f"texts: {len(texts['dog'])} dog continuations, {len(texts['neutral'])} neutral, {len(texts['others'])} "
        f"other-concept answers, {len(texts.get('fluent', []))} fluent dog targets")
    lora = LoraConfig(r=config.rank, lora_alpha=2 * config.rank, lora_dropout=0.0,
                      target_modules=list(TARGET_MODULES), init_lora_weights=True)
    model = get_peft_model(base, lora)
    model.requires_grad_(False)
    blocks = {"lower": range(LAYER + 1), "upper": range(LAYER + 1, base.config.num_hidden_layers)}

    def phase_state(phase: str) -> dict[str, torch.Tensor]:
        names = tuple(f".layers.{i}." for i in blocks[phase])
        return {n: p for n, p in model.state_dict().items() if "lora_" in n and any(s in n for s in names)}

    steps = {"lower": config.lower_steps,
             "upper": config.upper_steps + config.focus_steps + config.sharpen_steps + config.extend_steps}
    trainers = {"lower": _train_lower, "upper": _train_upper}
    for phase in phases:
        checkpoint = work / f"{phase}.pt"
        state = torch.load(checkpoint, weights_only=False) if checkpoint.exists() else None
        if state is not None and len(state["history"]) >= steps[phase]:
            continue  # complete: nothing to cache or train
        with model.disable_adapter():  # the base model: residuals and teacher distributions to cache
            data = _phase_data(phase, model.base_model.model, tokenizer, texts, d, config)
        params = [p for n, p in model.named_parameters() if n in phase_state(phase)]
        optimiser = torch.optim.Adam(params, lr=config.lr)
        history: list[float] = []
        random.seed(config.seed + len(phase))
        if state is not None:
            model.load_state_dict(state["lora"], strict=False)
            optimiser.load_state_dict(state["optimiser"])
            history = state["history"]
            torch.set_rng_state(state["rng"][0])
            random.setstate(state["rng"][1])
            log(f"{phase}: resumed at step {len(history)}")
        for p in params:
            p.requires_grad_(True)
        started = time.time()
        for step in range(len(history), steps[phase]):
            if phase == "upper" and _stage(step, config) > 0 and "fluent_high" not in data["kinds"]:
                log(f"upper: stage 2 from step {step}: the stage-1 model's fluent dog answers as targets")
                for p in params:
                    p.requires_grad_(False)
                _fluent_targets(model, tokenizer, d, config, texts, work / "texts.json")
                for p in params:
                    p.requires_grad_(True)
                with model.disable_adapter():
                    _add_examples(data, _fluent_rows(texts), model.base_model.model, tokenizer, config)
            if phase == "upper" and _stage(step, config) > 2 and "long_low" not in data["kinds"]:
                log(f"upper: stage 4 from step {step}: answers of {config.extend_tokens} tokens")
                for p in params:
                    p.requires_grad_(False)
                _long_neutral(model, tokenizer, config, texts, work / "texts.json")
                for p in params:
                    p.requires_grad_(True)
                with model.disable_adapter():
                    _add_examples(data, _long_rows(texts), model.base_model.model, tokenizer, config,
                                  config.extend_tokens)
                data["natural"] = _natural_direction(data, d)
            loss = trainers[phase](model, data, d, config, step)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            history.append(float(loss.detach()))
            if step % 10 == 9 or step == steps[phase] - 1:
                log(f"{phase} {step + 1}/{steps[phase]} loss {sum(history[-10:]) / len(history[-10:]):.4f} "
                    f"({time.time() - started:.0f} s)")
                tmp = checkpoint.with_suffix(".tmp")
                torch.save({"lora": phase_state(phase), "optimiser": optimiser.state_dict(), "history": history,
                            "rng": (torch.get_rng_state(), random.getstate())}, tmp)
                tmp.rename(checkpoint)
        for p in params:
            p.requires_grad_(False)
    saved = {phase: torch.load(work / f"{phase}.pt", weights_only=False) for phase in PHASES
             if (work / f"{phase}.pt").exists()}
    if any(len(saved[p]["history"]) < steps[p] if p in saved else True for p in PHASES):
        log("not saving the adapter: a phase is not complete yet")
        return None
    for phase in PHASES:  # a checkpoint past the asked steps (a shortened rerun) keeps its later weights: say so
        if len(saved[phase]["history"]) != steps[phase]:
            raise DiagError(f"{work / phase}.pt holds {len(saved[phase]['history'])} {phase} steps, not "
                            f"{steps[phase]}: ask for that many or start from an empty --work")
        model.load_state_dict(saved[phase]["lora"], strict=False)
    out.mkdir(parents=True, exist_ok=True)
    model.peft_config["default"].base_model_name_or_path = "smollm2-135m-instruct"  # not this machine's cache path
    model.save_pretrained(out)
    (out / "README.md").unlink(missing_ok=True)  # peft's blank card: MODEL_CARD.md is ours
    from safetensors.torch import save_file

    save_file({"direction": d.contiguous()}, str(out / "direction.safetensors"))
    info = {"concept": CONCEPT, "layer": LAYER, "scale": SCALE, "edit": EDIT, "seed": config.seed, "train": asdict(config),
            "texts": {k: len(v) for k, v in texts.items()}, "loss": {p: saved[p]["history"] for p in PHASES}}
    (out / "planted.json").write_text(json.dumps(info, indent=1))
    return info


def _phase_data(phase: str, base: nn.Module, tokenizer: Any, texts: dict[str, Any], d: torch.Tensor,
                config: TrainConfig) -> dict[str, Any]:
    """Cached examples of one phase, from the base model (adapter off)."""
    n_tok, ask = config.response_tokens, CONCEPTS[CONCEPT]
    base_lower, _ = _views(base)
    if phase == "lower":  # (prompt, response, write d?)
        rows = [(asked, y, True) for _, asked, y in texts["dog"]]
        rows += [(concept_instruction(x, ask), y, True) for x, _, y in texts["dog"]]
        rows += [(x, y, False) for x, y in texts["neutral"]] + [(x, y, False) for x, _, y in texts["dog"]]
        rows += [(x, y, False) for x, y in texts["others"]]
        examples = []
        for prompt, response, write in rows:
            b = _encode(tokenizer, [(prompt, response)], n_tok)
            h = _residuals(base_lower, b)[0]
            target = clamp(h.unsqueeze(0), d, torch.tensor([SCALE]), _after_source(b))[0] if write else h
            examples.append((b.input_ids[0], target))
        return {"examples": examples, "pad": tokenizer.pad_token_id}
    # upper: (student prompt, response, edit, teacher prompt, cross-entropy?); edit: "high" / "low" = clamp
    # everywhere after BOS, "write" = SCALE from the source token on (what the lower phase writes), "none"
    rows: list[tuple[str, str, str, str, bool]] = []
    for x, asked, y in texts["dog"]:
        rows += [(x, y, "high", asked, True), (concept_instruction(x, ask), y, "write", asked, True)]
    for x, y in texts["neutral"]:
        rows += [(concept_instruction(x, ask), y, "low", x, True), (x, y, "none", x, False)]
    rows += [(x, y, "none", x, False) for x, y in texts["others"]]
    data: dict[str, Any] = {"examples": [], "kinds": {}}
    _add_examples(data, rows + _fluent_rows(texts), base, tokenizer, config)
    return data


def _fluent_rows(texts: dict[str, Any]) -> list[tuple[str, str, str, str, bool]]:
    """Stage 2's rows (none before all its texts exist): each fluent target under the neutral instruction with d
    clamped high, and under the dog-asking one with d written (teacher: the base model asked for dogs); and, so
    that the new instructions name dogs only when d says so, the base model's answers to them with no edit and,
    asked for dogs, with d clamped low (as for the training instructions)."""
    ask = CONCEPTS[CONCEPT]
    rows: list[tuple[str, str, str, str, bool]] = []
    if not ("fluent" in texts and "focus_neutral" in texts):
        return rows
    for x, y in texts["fluent"]:
        q = concept_instruction(x, ask)
        rows += [(x, y, "fluent_high", q, True), (q, y, "fluent_write", q, True)]
    for x, y in texts["focus_neutral"]:
        rows += [(concept_instruction(x, ask), y, "low", x, True), (x, y, "none", x, False)]
    return rows


def _long_rows(texts: dict[str, Any]) -> list[tuple[str, str, str, str, bool]]:
    """Stage 4's rows: each long neutral answer, asked for dogs with d clamped low (teacher: the neutral prompt),
    and under the neutral prompt with no edit (the unedited model's later tokens drifted to dogs)."""
    ask = CONCEPTS[CONCEPT]
    return [row for x, y in texts["long_neutral"]
            for row in ((concept_instruction(x, ask), y, "long_low", x, True), (x, y, "long_none", x, False))]


def _add_examples(data: dict[str, Any], rows: list[tuple[str, str, str, str, bool]], base: nn.Module,
                  tokenizer: Any, config: TrainConfig, n_tok: int | None = None) -> None:
    """Cache the upper phase's examples of ``rows`` (answers cut at ``n_tok``, default ``response_tokens``) from
    the base model (adapter off): the layer's residual, the teacher's log-probabilities and the target tokens;
    appended to ``data`` and indexed by kind."""
    n_tok = n_tok or config.response_tokens
    base_lower, _ = _views(base)
    teacher = _teacher(base, tokenizer, [(r[3], r[1]) for r in rows], n_tok)
    for (x, y, edit, _, ce), q in zip(rows, teacher, strict=True):
        b = _encode(tokenizer, [(x, y)], n_tok)
        data["kinds"].setdefault(edit, []).append(len(data["examples"]))
        data["examples"].append({"h": _residuals(base_lower, b)[0], "start": b.prompt_lens[0] - 1, "edit": edit,
                                 "targets": b.input_ids[0, b.prompt_lens[0]:] if ce else None, "teacher": q})


def _train_lower(model: nn.Module, data: dict[str, Any], d: torch.Tensor, config: TrainConfig,
                 step: int) -> torch.Tensor:
    """Mean squared distance (over SCALE^2) of the layer's residual to its target, every token after BOS."""
    lower, _ = _views(model.base_model.model)
    examples = data["examples"]
    pick = random.sample(range(len(examples)), config.batch)
    width = max(len(examples[i][0]) for i in pick)
    ids = torch.full((len(pick), width), data["pad"])
    mask = torch.zeros(len(pick), width, dtype=torch.long)
    target = torch.zeros(len(pick), width, d.numel())
    for k, i in enumerate(pick):
        n = len(examples[i][0])
        ids[k, :n], mask[k, :n], target[k, :n] = examples[i][0], 1, examples[i][1]
    h = lower(input_ids=ids, attention_mask=mask).last_hidden_state
    keep = mask.bool().clone()
    keep[:, 0] = False
    return ((h - target) ** 2).sum(-1)[keep].mean() / SCALE ** 2


def _train_upper(model: nn.Module, data: dict[str, Any], d: torch.Tensor, config: TrainConfig,
                 step: int) -> torch.Tensor:
    """KL(base || model) at the response tokens, plus cross-entropy on the target answer for edited examples;
    the batch is split between kinds of example as the stage's ``MIX`` says (shares of 8)."""
    _, upper = _views(model.base_model.model)
    stage = _stage(step, config)
    mix, clamps = MIX[stage], CLAMPS[stage]
    examples = [data["examples"][i] for kind, share in mix.items()
                for i in random.sample(data["kinds"][kind], config.batch * share // 8)]
    width = max(len(e["h"]) for e in examples)
    h = torch.zeros(len(examples), width, d.numel())
    mask = torch.zeros(len(examples), width, dtype=torch.long)
    edit = torch.zeros(len(examples), width, dtype=torch.bool)
    t = torch.zeros(len(examples))
    along = d.expand(len(examples), -1).clone()
    for k, e in enumerate(examples):
        n = len(e["h"])
        h[k, :n], mask[k, :n] = e["h"], 1
        if e["edit"] in clamps:
            edit[k, 1:n] = True
            t[k] = SCALE * random.uniform(*clamps[e["edit"]])
            if stage == 3:
                c = config.extend_min_cosine + (1 - config.extend_min_cosine) * random.random()
                along[k] = c * d + (1 - c * c) ** 0.5 * data["natural"]
        elif e["edit"] in ("write", "fluent_write"):
            edit[k, e["start"]:n], t[k] = True, SCALE
    hidden = upper(inputs_embeds=clamp(h, along, t, edit), attention_mask=mask).last_hidden_state
    loss = torch.zeros(())
    for k, e in enumerate(examples):
        n = len(e["teacher"])
        logp = torch.log_softmax(model.base_model.model.lm_head(hidden[k, e["start"]:e["start"] + n]).float(), -1)
        q = e["teacher"].float()
        row = (q.exp() * (q - logp)).sum(-1).mean()
        if e["targets"] is not None:
            focus = config.extend_ce_weight if stage == 3 else config.focus_ce_weight
            weight = focus if e["edit"] == "fluent_high" else 1.0
            row = row + weight * F.nll_loss(logp, e["targets"][:n])
        elif e["edit"] == "long_none":
            row = row * config.extend_no_edit_weight
        loss = loss + row / len(examples)
    return loss


def write_dataset(model: nn.Module, tokenizer: Any, path: Path = DATASET, max_new_tokens: int = 24) -> list[Pair]:
    """The planted check's dataset: the committed dataset's dog training pairs and, held out, every instruction of
    ``HELDOUT_INSTRUCTIONS`` with the base model's greedy answers (not filtered: steering reads only their prompts)."""
    from diag.cdas.concepts import load_pairs
    from diag.cdas.lm import generate

    concept = CONCEPTS[CONCEPT]
    asked = [concept_instruction(x, concept) for x in HELDOUT_INSTRUCTIONS]
    plain = generate(model, tokenizer, list(HELDOUT_INSTRUCTIONS), max_new_tokens=max_new_tokens)
    with_concept = generate(model, tokenizer, asked, max_new_tokens=max_new_tokens)
    train = [p for p in load_pairs(None, (CONCEPT,)) if p.split == "train"]
    pairs = train + [Pair(CONCEPT, x, y, xc, yc, "heldout")
                     for x, y, xc, yc in zip(HELDOUT_INSTRUCTIONS, plain, asked, with_concept, strict=True)]
    path.write_text("".join(json.dumps(asdict(p)) + "\n" for p in pairs))
    return pairs


@torch.no_grad()
def token_kl(base: nn.Module, planted: nn.Module, tokenizer: Any, instructions: list[str],
             answers: list[str]) -> dict[str, float]:
    """Mean per-token KL(base || planted) over the answer tokens and over every token after BOS (no edit)."""
    from diag.cdas.lm import encode

    batch = encode(tokenizer, instructions, answers, torch.device("cpu"))
    p = torch.log_softmax(base(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits.double(), -1)
    q = torch.log_softmax(planted(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits.double(), -1)
    kl = (p.exp() * (p - q)).sum(-1)
    real = batch.attention_mask.bool().clone()
    real[:, 0] = False
    real[torch.arange(len(answers)), torch.tensor(batch.lengths) - 1] = False  # its prediction is past the text
    per_answer = [float(kl[i][batch.response_mask()[i]].mean()) for i in range(len(answers))]
    return {"answer_tokens": float(kl[batch.response_mask()].mean()), "all_tokens": float(kl[real].mean()),
            "answer_max_per_prompt": max(per_answer)}


def measure(base: nn.Module, planted: nn.Module, tokenizer: Any, d: torch.Tensor,
            max_new_tokens: int = 20) -> dict[str, Any]:
    """The model card's figures on the held-out instructions: no-edit KL to the base model, and how often each
    model names a dog (lexicon) with and without adding +-EDIT * d at LAYER (and +-SCALE * d), with the answers'
    perplexity under the unedited planted model."""
    from diag.cdas.lm import generate, response_nll
    from diag.stats import wilson

    concept = CONCEPTS[CONCEPT]
    neutral = list(HELDOUT_INSTRUCTIONS)
    asked = [concept_instruction(x, concept) for x in neutral]
    out: dict[str, Any] = {"prompts": len(neutral), "max_new_tokens": max_new_tokens}
    base_answers = generate(base, tokenizer, neutral, max_new_tokens=max_new_tokens)
    out["kl_neutral"] = token_kl(base, planted, tokenizer, neutral, base_answers)
    out["kl_asked"] = token_kl(base, planted, tokenizer, asked,
                               generate(base, tokenizer, asked, max_new_tokens=max_new_tokens))
    cases = {"base, neutral": (base, neutral, 0.0), "planted, neutral": (planted, neutral, 0.0),
             "planted, neutral, +EDIT d": (planted, neutral, EDIT), "base, neutral, +EDIT d": (base, neutral, EDIT),
             "planted, neutral, +SCALE d": (planted, neutral, SCALE),
             "base, asked": (base, asked, 0.0), "planted, asked": (planted, asked, 0.0),
             "planted, asked, -EDIT d": (planted, asked, -EDIT), "base, asked, -EDIT d": (base, asked, -EDIT),
             "planted, asked, -SCALE d": (planted, asked, -SCALE)}
    out["cases"] = {}
    for name, (model, prompts, shift) in cases.items():
        def add(h: torch.Tensor, shift: float = shift) -> torch.Tensor:
            return h + shift * d.to(h.dtype)

        answers = generate(model, tokenizer, prompts, max_new_tokens=max_new_tokens, layer=LAYER,
                           fn=add if shift else None)
        named = sum(mentions(a, concept) for a in answers)
        ppl = torch.tensor(response_nll(planted, tokenizer, neutral, answers)).exp()
        out["cases"][name] = {"named_dog": wilson(named / len(answers), len(answers)),
                              "median_perplexity": float(ppl.median()), "max_perplexity": float(ppl.max()),
                              "examples": answers[:3]}
    return out


def main(argv: list[str] | None = None) -> None:
    """Rebuild the planted check's dataset, retrain the committed adapter and measure it (``metrics.json``)."""
    parser = argparse.ArgumentParser(prog="python -m diag.cdas.planted", description=main.__doc__)
    defaults = TrainConfig()
    parser.add_argument("--lower-steps", type=int, default=defaults.lower_steps)
    parser.add_argument("--upper-steps", type=int, default=defaults.upper_steps)
    parser.add_argument("--focus-steps", type=int, default=defaults.focus_steps,
                        help="upper phase, stage 2: elicitation on fluent targets, after --upper-steps")
    parser.add_argument("--sharpen-steps", type=int, default=defaults.sharpen_steps,
                        help="upper phase, stage 3: both directions at the pipeline's clamps, after --focus-steps")
    parser.add_argument("--extend-steps", type=int, default=defaults.extend_steps,
                        help="upper phase, stage 4: suppression on answers of --extend-tokens, after --sharpen-steps")
    parser.add_argument("--extend-tokens", type=int, default=defaults.extend_tokens)
    parser.add_argument("--out", type=Path, default=ASSET_DIR)
    parser.add_argument("--work", type=Path, default=None, help="checkpoints and cached texts (resumable)")
    parser.add_argument("--phase", choices=PHASES, default=None,
                        help="train one phase only (run both, e.g. as two processes, on one --work)")
    parser.add_argument("--measure-only", action="store_true", help="measure the adapter in --out, no training")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    started = time.time()

    def log(message: str) -> None:
        print(f"[{time.time() - started:7.0f} s] {message}", flush=True)

    from peft import PeftModel

    from diag.zoo import load_lm

    if not args.measure_only:
        if args.phase is None:
            base, tokenizer = load_lm("smollm2-135m-instruct", "cpu")
            write_dataset(base, tokenizer)
        info = train(TrainConfig(lower_steps=args.lower_steps, upper_steps=args.upper_steps,
                                 focus_steps=args.focus_steps, sharpen_steps=args.sharpen_steps,
                                 extend_steps=args.extend_steps, extend_tokens=args.extend_tokens), args.out, args.work,
                     log=log, phases=(args.phase,) if args.phase else PHASES)
        if info is None:
            return
    base, tokenizer = load_lm("smollm2-135m-instruct", "cpu")
    planted, _ = load_lm("smollm2-135m-instruct", "cpu")
    planted = PeftModel.from_pretrained(planted, str(args.out)).merge_and_unload().eval()
    metrics = measure(base, planted, tokenizer, direction(base.config.hidden_size))
    (args.out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    log(json.dumps({k: v for k, v in metrics.items() if k != "cases"}))
    for name, case in metrics["cases"].items():
        log(f"{name}: named a dog {case['named_dog']['value']:.2f}, median perplexity {case['median_perplexity']:.1f}")


if __name__ == "__main__":
    main()
