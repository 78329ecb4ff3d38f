"""Our DPO loop: a LoRA adapter on SmolLM2-135M-Instruct trained on pairs that differ in one known span.

Reads top to bottom like CleanRL: hyperparameters in ``Config``, then data, model, reference log-probs
(computed once: the reference never changes), the loss, the resumable step loop, the held-out evaluation.
The same ``dpo_loss`` trains the tabular ground-truth policy in ``diag.credit.tabular``.
"""

from __future__ import annotations

import io
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from diag.credit.config import TRAIN as ANALYSIS  # noqa: F401 -- the declared value, for callers
from diag.credit.config import TrainConfig as Config
from diag.errors import DiagError
from diag.progress import Progress
from diag.report.sections import Guide
from diag.runs import Run, write_bytes_atomic


def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
             ref_rejected: torch.Tensor, beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """-log sigmoid(beta * (log-ratio chosen - log-ratio rejected)) per pair, and the reward margin."""
    margin = beta * ((policy_chosen - ref_chosen) - (policy_rejected - ref_rejected))
    return -F.logsigmoid(margin), margin


@dataclass
class Result:
    adapter_dir: Path
    losses: np.ndarray
    margins: np.ndarray
    heldout_margins: np.ndarray
    config: dict[str, Any]

    def summary(self) -> dict[str, Any]:
        from diag.credit.metrics import bootstrap_mean

        wins = (self.heldout_margins > 0).astype(float)
        tail = max(1, len(self.losses) // 10)
        return {
            "steps": len(self.losses),
            "beta": self.config["beta"],
            "final_loss": float(self.losses[-tail:].mean()),
            "heldout_preference_accuracy": bootstrap_mean(wins, seed=0),
            "heldout_mean_margin": float(self.heldout_margins.mean()),
            "n_heldout": len(self.heldout_margins),
            "numerics": {"device": self.config.get("device"), "dtype": "float32",
                         "allow_tf32": self.config.get("allow_tf32", False)},
        }

    def save(self, run: Run) -> None:
        run.write_arrays("training", {"losses": self.losses, "margins": self.margins,
                                      "heldout_margins": self.heldout_margins})
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 3))
        ax.plot(self.losses, lw=0.8, label="loss (DPO + NLL + anchor)")
        ax.plot(np.convolve(self.losses, np.ones(10) / 10, mode="valid"), lw=2, label="10-step mean")
        ax.set_xlabel("step")
        ax.legend()
        run.write_figure("dpo_loss", fig)

    @classmethod
    def load(cls, run: Run) -> Result:
        arrays = run.read_arrays("training")
        return cls(run.path("adapter"), arrays["losses"], arrays["margins"], arrays["heldout_margins"], run.config)


def compute(config: Config, run: Run, progress: Progress) -> Result:
    from peft import LoraConfig, get_peft_model

    from diag.checkpoint import run_steps
    from diag.credit.data import make_pairs
    from diag.credit.scorer import (
        ADAPTER_META,
        ModelPair,
        capture_block_input,
        collate,
        encode,
        from_block,
        response_logits,
        response_logps,
    )
    from diag.device import exact_matmul, seed_everything
    from diag.zoo import load_lm

    seed_everything(config.seed)
    # 1. data: chosen/rejected answers differ in one fact; held-out pairs use unseen templates and entities
    base, tokenizer = load_lm(config.model, config.device)
    train_pairs = make_pairs("train", config.n_train, seed=config.seed)
    train = [(encode(tokenizer, p.prompt, p.chosen), encode(tokenizer, p.prompt, p.rejected)) for p in train_pairs]
    heldout = [(encode(tokenizer, p.prompt, p.chosen), encode(tokenizer, p.prompt, p.rejected))
               for p in make_pairs("heldout", config.n_heldout, seed=config.seed)]

    # 2. model: LoRA on every linear map of the top decoder layers; the reference is the adapter switched off
    n_layers = base.config.num_hidden_layers
    if not 0 < config.lora_layers < n_layers:  # steps start from the residual entering the first LoRA layer
        raise DiagError(f"lora_layers must be 1..{n_layers - 1} for this {n_layers}-layer model, "
                        f"got {config.lora_layers}")
    lora = LoraConfig(r=config.lora_rank, lora_alpha=2 * config.lora_rank, lora_dropout=0.0,
                      target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
                      layers_to_transform=list(range(n_layers - config.lora_layers, n_layers)))
    model = get_peft_model(base, lora)
    pair = ModelPair(model, tokenizer, beta=config.beta)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.lr, weight_decay=0.0)

    # 3. one pass of the frozen model over every training answer: its per-token reference log-probs, and the
    #    residual stream entering the first LoRA layer (everything below it is frozen, so steps start from there)
    first_lora = n_layers - config.lora_layers
    answers = [c for c, _ in train] + [r for _, r in train]  # answer j: pair j % n_train, chosen if j < n_train
    n_answers = len(answers)  # rows from n_answers on: the reference's own answers (anchor_weight > 0)
    frozen = torch.load(run.path("frozen_pass.pt")) if run.path("frozen_pass.pt").exists() else {
        "anchor_texts": reference_answers(model, tokenizer, [p.prompt for p in train_pairs], progress)
        if config.anchor_weight > 0 else []}
    texts = frozen["anchor_texts"]
    answers += [encode(tokenizer, p.prompt, t) for p, t in zip(train_pairs[:len(texts)], texts, strict=True)]
    if "reference" not in frozen:
        frozen.update(reference=[None] * len(answers), hidden=[None] * len(answers))
        for start in range(0, len(answers), 16):
            chunk = answers[start:start + 16]
            ids, attention, positions, targets, _ = collate(chunk, tokenizer.pad_token_id, pair.device)
            with torch.no_grad(), pair.as_reference() as reference, capture_block_input(model, first_lora) as got:
                logps = response_logps(reference, ids, attention, positions, targets)
            for row, encoded in enumerate(chunk):
                frozen["reference"][start + row] = logps[row, -len(encoded.response_ids):].cpu().clone()
                frozen["hidden"][start + row] = got["h"][row, -len(encoded.ids):].cpu().clone()
            progress(start + len(chunk), len(answers), "frozen pass")
        buffer = io.BytesIO()
        torch.save(frozen, buffer)
        write_bytes_atomic(run.path("frozen_pass.pt"), buffer.getvalue())
    ref_logps = torch.tensor([float(frozen["reference"][j].sum()) for j in range(n_answers)],
                             device=pair.device).view(2, -1).T  # every tensor follows the model

    def policy_logps_from_cache(rows: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-token response log-probs of the answers ``rows`` (right-aligned), their mask, and each answer's
        mean per-token KL(ref || policy)."""
        encoded = [answers[j] for j in rows]
        ids, attention, positions, targets, mask = collate(encoded, tokenizer.pad_token_id, pair.device)
        hidden = torch.zeros(len(rows), ids.shape[1], base.config.hidden_size, device=pair.device)
        for row, j in enumerate(rows):
            h = frozen["hidden"][j]
            hidden[row, -len(h):] = h
        n = targets.shape[1]
        with from_block(model, first_lora):
            log_probs = torch.log_softmax(response_logits(model, ids, attention, positions, n, inputs_embeds=hidden), -1)
            kl = torch.zeros(len(rows), device=pair.device)
            if config.token_kl_weight > 0:
                with torch.no_grad(), pair.as_reference() as reference:
                    ref_log_probs = torch.log_softmax(
                        response_logits(reference, ids, attention, positions, n, inputs_embeds=hidden), -1)
                per_token = (ref_log_probs.exp() * (ref_log_probs - log_probs)).sum(-1)
                kl = (per_token * mask).sum(-1) / mask.sum(-1)
        return log_probs.gather(-1, targets[..., None]).squeeze(-1) * mask, mask, kl

    def anchor_penalty(i: int) -> torch.Tensor:
        """Mean over a batch of reference answers of the mean squared per-token log(pi/pi_ref)."""
        rows = torch.randint(n_answers, len(answers), (config.batch_pairs,),
                             generator=torch.Generator().manual_seed(config.seed * 1_000_033 + i)).tolist()
        policy, mask, _ = policy_logps_from_cache(rows)
        ref = torch.zeros_like(policy)
        for row, j in enumerate(rows):
            ref[row, ref.shape[1] - len(frozen["reference"][j]):] = frozen["reference"][j]
        return ((((policy - ref) * mask) ** 2).sum(-1) / mask.sum(-1)).mean()

    # 4. the loop: sample pairs, DPO loss on summed response log-probs, AdamW on the LoRA weights
    loaded = {"step": None}

    def step(state: dict[str, Any], i: int) -> dict[str, Any]:
        if loaded["step"] is None:  # first call (fresh or resumed): bring the live objects to the saved state
            if state["adapter"] is not None:
                model.load_state_dict(state["adapter"], strict=False)
                optimizer.load_state_dict(state["optimizer"])
            loaded["step"] = i
        model.train()
        idx = torch.randint(len(train), (config.batch_pairs,), generator=torch.Generator().manual_seed(
            config.seed * 1_000_003 + i))
        policy, mask, kl = policy_logps_from_cache(idx.tolist() + (idx + len(train)).tolist())
        policy_chosen, policy_rejected = policy.sum(-1).view(2, -1)
        rows = idx.to(pair.device)
        losses, margins = dpo_loss(policy_chosen, policy_rejected, ref_logps[rows, 0], ref_logps[rows, 1],
                                   config.beta)
        chosen_tokens = mask.sum(-1).view(2, -1)[0]
        losses = losses - config.nll_weight * policy_chosen / chosen_tokens
        losses = losses + config.token_kl_weight * kl.view(2, -1).sum(0)
        loss = losses.mean() + (config.anchor_weight * anchor_penalty(i) if config.anchor_weight > 0 else 0.0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return {
            "adapter": {k: v.detach().clone() for k, v in model.state_dict().items() if "lora_" in k},
            "optimizer": optimizer.state_dict(),
            "losses": state["losses"] + [loss.item()],
            "margins": state["margins"] + [margins.mean().item()],
        }

    with exact_matmul(config.allow_tf32):
        state = run_steps(run, config.steps, {"adapter": None, "optimizer": None, "losses": [], "margins": []},
                          step, every=config.checkpoint_every, progress=progress, message="DPO steps")
    if state["adapter"] is not None:
        model.load_state_dict(state["adapter"], strict=False)
    model.eval()

    # 5. held-out preference accuracy: implicit reward of chosen above rejected
    heldout_margins = []
    for start in range(0, len(heldout), 8):
        chunk = heldout[start:start + 8]
        policy, ref, _ = pair.token_logps([c for c, _ in chunk] + [r for _, r in chunk])
        _, margins = dpo_loss(*policy.sum(-1).view(2, -1), *ref.sum(-1).view(2, -1), config.beta)
        heldout_margins.extend(margins.tolist())
        progress(start + len(chunk), len(heldout), "held-out accuracy")

    staging = run.path("adapter.partial")
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging)
    adapter_config = json.loads((staging / "adapter_config.json").read_text())
    adapter_config["base_model_name_or_path"] = config.model
    (staging / "adapter_config.json").write_text(json.dumps(adapter_config, indent=2))
    (staging / ADAPTER_META).write_text(json.dumps({"beta": config.beta, "base": config.model,
                                                    "steps": config.steps, "train_config": run.config}, indent=2))
    shutil.rmtree(run.path("adapter"), ignore_errors=True)
    staging.rename(run.path("adapter"))
    return Result(run.path("adapter"), np.array(state["losses"]), np.array(state["margins"]),
                  np.array(heldout_margins), run.config)


def reference_answers(model: torch.nn.Module, tokenizer, prompts: list[str], progress: Progress,
                      max_new_tokens: int = 48) -> list[str]:
    """The frozen model's own answer to each prompt (adapter off), sampled at temperature 1.

    Sampled rather than greedy: the anchor should cover the phrasing the reference spreads its probability over,
    not only its single most likely wording (greedy anchors left held-out top-1 at 0.85 and 0.77; sampled: 0.90
    and 0.83, see the model card).
    """
    answers = []
    for start in range(0, len(prompts), 16):
        chunk = prompts[start:start + 16]
        texts = [tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                               add_generation_prompt=True) for p in chunk]
        batch = tokenizer(texts, return_tensors="pt", padding=True, padding_side="left",
                          add_special_tokens=False).to(model.device)
        with torch.no_grad(), model.disable_adapter():
            torch.manual_seed(start)  # the same anchor text whatever ran before (a resumed run reuses it anyway)
            out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=True, temperature=1.0,
                                 pad_token_id=tokenizer.pad_token_id)
        for row in out[:, batch["input_ids"].shape[1]:]:
            answers.append(tokenizer.decode(row, skip_special_tokens=True).strip() or ".")
        progress(start + len(chunk), len(prompts), "reference answers")
    return answers


GUIDE = Guide(
    question=("Does a LoRA DPO adapter trained on pairs that differ in one known span learn the preference? Held-out "
              "preference accuracy (chosen answer's implicit reward above the rejected one's) on new templates and "
              "entities, with the training loss; `diag credit score` then asks where the reward lands."),
    limitations=[
        "Synthetic pairs (diag.credit.data): the corrupted span is known by construction, unlike real preferences.",
        ("The loss adds an NLL term on chosen answers and an anchor on the reference's own answers to plain DPO "
         "(weights in the config); a low loss says the objective was met, not that the credit localises."),
        "Audit budgets train a few steps only: they check that the loop runs and moves the loss, not convergence.",
    ],
)


def audit_config(scale: float = 1.0) -> Config:
    """A few DPO steps: checks the loop moves the loss, not that it converges (the committed adapter does)."""
    return Config(n_train=16, n_heldout=8, steps=max(2, int(4 * scale)), batch_pairs=2, checkpoint_every=2)
