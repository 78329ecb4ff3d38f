"""Our DPO loop: a LoRA adapter on SmolLM2-135M-Instruct trained on pairs that differ in one known span.

Reads top to bottom like CleanRL: hyperparameters in ``Config``, then data, model, reference log-probs
(computed once: the reference never changes), the loss, the resumable step loop, the held-out evaluation.
The same ``dpo_loss`` trains the tabular ground-truth policy in ``diag.credit.tabular``.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from diag.atomic import atomic_dir, write_bytes_atomic
from diag.credit.adapters import ADAPTER_META
from diag.credit.batches import collate, response_logits, response_logps
from diag.credit.config import TRAIN as ANALYSIS  # noqa: F401 -- the declared value, for callers
from diag.credit.config import TrainConfig as Config
from diag.credit.data import Pair, make_pairs
from diag.credit.encoding import Encoded, encode
from diag.credit.model_pair import ModelPair
from diag.errors import DiagError
from diag.progress import Progress, report_metrics
from diag.report.figures import integer_ticks
from diag.report.sections import UNIT, Guide, Metric
from diag.run_dir import Run
from diag.zoo.lm import answer_prefix
from probes import Site, recording, starting_at

EncodedPair = tuple[Encoded, Encoded]  # (chosen, rejected)


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
        run.write_figure("dpo_loss", self.loss_figure())

    def loss_figure(self) -> Any:
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 3))
        ax.plot(self.losses, lw=0.8, label="loss (DPO + NLL + anchor)")
        if len(self.losses) >= 10:  # "valid" on a shorter curve would slide the curve over the window instead
            ax.plot(np.convolve(self.losses, np.ones(10) / 10, mode="valid"), lw=2, label="10-step mean")
        ax.set_xlabel("step")
        integer_ticks(ax.xaxis)
        ax.legend()
        return fig

    @classmethod
    def load(cls, run: Run) -> Result:
        arrays = run.read_arrays("training")
        return cls(run.path("adapter"), arrays["losses"], arrays["margins"], arrays["heldout_margins"], run.config)


def compute(config: Config, run: Run, progress: Progress) -> Result:
    from diag.checkpoint import run_steps
    from diag.device import exact_matmul, seed_everything
    from diag.zoo import load_lm

    seed_everything(config.seed)
    base, tokenizer = load_lm(config.model, config.device)
    train_pairs, train, heldout = preference_data(config, tokenizer)
    model, first_lora = lora_model(config, base)
    pair = ModelPair(model, tokenizer, beta=config.beta)
    frozen = frozen_pass(run, pair, first_lora, train_pairs, train, config.anchor_weight > 0, progress)
    steps = DPOSteps(config, pair, frozen, first_lora, progress)
    with exact_matmul(config.allow_tf32):
        state = run_steps(run, config.steps, {"adapter": None, "optimizer": None, "losses": [], "margins": []},
                          steps.step, every=config.checkpoint_every, progress=progress, message="DPO steps")
    if state["adapter"] is not None:
        model.load_state_dict(state["adapter"], strict=False)
    model.eval()
    margins = heldout_margins(pair, heldout, progress)
    save_adapter(model, config, run)
    return Result(run.path("adapter"), np.array(state["losses"]), np.array(state["margins"]), np.array(margins),
                  run.config)


def preference_data(config: Config, tokenizer) -> tuple[list[Pair], list[EncodedPair], list[EncodedPair]]:
    """1. Data: chosen/rejected answers differ in one fact; held-out pairs use unseen templates and entities.
    Returns the training pairs and both splits encoded as (chosen, rejected)."""
    train_pairs = make_pairs("train", config.n_train, seed=config.seed)
    train = [(encode(tokenizer, p.prompt, p.chosen), encode(tokenizer, p.prompt, p.rejected)) for p in train_pairs]
    heldout = [(encode(tokenizer, p.prompt, p.chosen), encode(tokenizer, p.prompt, p.rejected))
               for p in make_pairs("heldout", config.n_heldout, seed=config.seed)]
    return train_pairs, train, heldout


def lora_model(config: Config, base: torch.nn.Module) -> tuple[torch.nn.Module, int]:
    """2. Model: LoRA on every linear map of the top decoder layers (the reference is the adapter switched off),
    and the index of the first LoRA layer."""
    from peft import LoraConfig, get_peft_model

    n_layers = base.config.num_hidden_layers
    if not 0 < config.lora_layers < n_layers:  # steps start from the residual entering the first LoRA layer
        raise DiagError(f"lora_layers must be 1..{n_layers - 1} for this {n_layers}-layer model, "
                        f"got {config.lora_layers}")
    first_lora = n_layers - config.lora_layers
    lora = LoraConfig(r=config.lora_rank, lora_alpha=2 * config.lora_rank, lora_dropout=0.0,
                      target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
                      layers_to_transform=list(range(first_lora, n_layers)))
    return get_peft_model(base, lora), first_lora


@dataclass
class FrozenPass:
    """3. What the frozen model computes once (kept in the run, so a resumed run reuses it): per answer, its
    per-token reference log-probs and the residual stream entering the first LoRA layer (everything below is
    frozen, so steps start there).

    Answer j < 2 * n_train is training pair j % n_train, chosen if j < n_train; answers from 2 * n_train on are
    the reference's own answers to the training prompts (the anchor, when anchor_weight > 0).
    """

    answers: list[Encoded]
    reference: list[torch.Tensor]
    hidden: list[torch.Tensor]
    n_train: int

    @property
    def n_pair_answers(self) -> int:
        return 2 * self.n_train


def frozen_pass(run: Run, pair: ModelPair, first_lora: int, train_pairs: list[Pair], train: list[EncodedPair],
                anchor: bool, progress: Progress) -> FrozenPass:
    """One pass of the frozen model over every training answer (and, with ``anchor``, its own answers)."""
    path = run.path("frozen_pass.pt")
    tokenizer = pair.tokenizer
    frozen = torch.load(path) if path.exists() else {
        "anchor_texts": reference_answers(pair.policy, tokenizer, [p.prompt for p in train_pairs], progress)
        if anchor else []}
    texts = frozen["anchor_texts"]
    answers = [c for c, _ in train] + [r for _, r in train]
    answers += [encode(tokenizer, p.prompt, t) for p, t in zip(train_pairs[:len(texts)], texts, strict=True)]
    if "reference" not in frozen:
        inlet = Site(first_lora, "resid_pre")
        frozen.update(reference=[None] * len(answers), hidden=[None] * len(answers))
        for start in range(0, len(answers), 16):
            chunk = answers[start:start + 16]
            ids, attention, positions, targets, _ = collate(chunk, tokenizer.pad_token_id, pair.device)
            with torch.no_grad(), pair.as_reference() as reference, recording(pair.policy, [inlet]) as got:
                logps = response_logps(reference, ids, attention, positions, targets)
            for row, encoded in enumerate(chunk):
                frozen["reference"][start + row] = logps[row, -len(encoded.response_ids):].cpu().clone()
                frozen["hidden"][start + row] = got[inlet][row, -len(encoded.ids):].cpu().clone()
            progress(start + len(chunk), len(answers), "frozen pass")
        buffer = io.BytesIO()
        torch.save(frozen, buffer)
        write_bytes_atomic(path, buffer.getvalue())
    return FrozenPass(answers, frozen["reference"], frozen["hidden"], len(train))


class DPOSteps:
    """4. The loop: sample pairs, DPO loss on summed response log-probs (+ NLL, token KL, anchor), AdamW on the
    LoRA weights; every step runs the LoRA layers only, from the frozen pass's residual stream."""

    def __init__(self, config: Config, pair: ModelPair, frozen: FrozenPass, first_lora: int,
                 progress: Progress) -> None:
        self.config, self.pair, self.frozen, self.first_lora = config, pair, frozen, first_lora
        self.progress = progress  # where each step's loss and margin are streamed
        self.model = pair.policy
        self.optimizer = torch.optim.AdamW([p for p in self.model.parameters() if p.requires_grad], lr=config.lr,
                                           weight_decay=0.0)
        self.ref_logps = torch.tensor([float(frozen.reference[j].sum()) for j in range(frozen.n_pair_answers)],
                                      device=pair.device).view(2, -1).T  # [pair, chosen/rejected], on the model
        self.loaded = False

    def policy_logps(self, rows: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-token response log-probs of the answers ``rows`` (right-aligned), their mask, and each answer's
        mean per-token KL(ref || policy)."""
        pair, frozen = self.pair, self.frozen
        encoded = [frozen.answers[j] for j in rows]
        ids, attention, positions, targets, mask = collate(encoded, pair.tokenizer.pad_token_id, pair.device)
        hidden = torch.zeros(len(rows), ids.shape[1], self.model.config.hidden_size, device=pair.device)
        for row, j in enumerate(rows):
            h = frozen.hidden[j]
            hidden[row, -len(h):] = h
        n = targets.shape[1]
        with starting_at(self.model, self.first_lora):
            log_probs = torch.log_softmax(response_logits(self.model, ids, attention, positions, n,
                                                          inputs_embeds=hidden), -1)
            kl = torch.zeros(len(rows), device=pair.device)
            if self.config.token_kl_weight > 0:
                with torch.no_grad(), pair.as_reference() as reference:
                    ref_log_probs = torch.log_softmax(
                        response_logits(reference, ids, attention, positions, n, inputs_embeds=hidden), -1)
                per_token = (ref_log_probs.exp() * (ref_log_probs - log_probs)).sum(-1)
                kl = (per_token * mask).sum(-1) / mask.sum(-1)
        return log_probs.gather(-1, targets[..., None]).squeeze(-1) * mask, mask, kl

    def anchor_penalty(self, i: int) -> torch.Tensor:
        """Mean over a batch of reference answers of the mean squared per-token log(pi/pi_ref)."""
        config, frozen = self.config, self.frozen
        rows = torch.randint(frozen.n_pair_answers, len(frozen.answers), (config.batch_pairs,),
                             generator=torch.Generator().manual_seed(config.seed * 1_000_033 + i)).tolist()
        policy, mask, _ = self.policy_logps(rows)
        ref = torch.zeros_like(policy)
        for row, j in enumerate(rows):
            ref[row, ref.shape[1] - len(frozen.reference[j]):] = frozen.reference[j]
        return ((((policy - ref) * mask) ** 2).sum(-1) / mask.sum(-1)).mean()

    def step(self, state: dict[str, Any], i: int) -> dict[str, Any]:
        """One optimiser step; the first call (fresh or resumed) brings the live objects to the saved state."""
        config, model, optimizer = self.config, self.model, self.optimizer
        if not self.loaded:
            if state["adapter"] is not None:
                model.load_state_dict(state["adapter"], strict=False)
                optimizer.load_state_dict(state["optimizer"])
            self.loaded = True
        model.train()
        n_train = self.frozen.n_train
        idx = torch.randint(n_train, (config.batch_pairs,), generator=torch.Generator().manual_seed(
            config.seed * 1_000_003 + i))
        policy, mask, kl = self.policy_logps(idx.tolist() + (idx + n_train).tolist())
        policy_chosen, policy_rejected = policy.sum(-1).view(2, -1)
        rows = idx.to(self.pair.device)
        losses, margins = dpo_loss(policy_chosen, policy_rejected, self.ref_logps[rows, 0], self.ref_logps[rows, 1],
                                   config.beta)
        chosen_tokens = mask.sum(-1).view(2, -1)[0]
        losses = losses - config.nll_weight * policy_chosen / chosen_tokens
        losses = losses + config.token_kl_weight * kl.view(2, -1).sum(0)
        loss = losses.mean() + (config.anchor_weight * self.anchor_penalty(i) if config.anchor_weight > 0 else 0.0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        report_metrics(self.progress, i + 1, loss=loss.item(), margin=margins.mean().item())
        return {
            "adapter": {k: v.detach().clone() for k, v in model.state_dict().items() if "lora_" in k},
            "optimizer": optimizer.state_dict(),
            "losses": state["losses"] + [loss.item()],
            "margins": state["margins"] + [margins.mean().item()],
        }


def heldout_margins(pair: ModelPair, heldout: list[EncodedPair], progress: Progress) -> list[float]:
    """5. Held-out reward margins r(chosen) - r(rejected); preference accuracy is the share above zero."""
    margins: list[float] = []
    for start in range(0, len(heldout), 8):
        chunk = heldout[start:start + 8]
        policy, ref, _ = pair.token_logps([c for c, _ in chunk] + [r for _, r in chunk])
        _, batch_margins = dpo_loss(*policy.sum(-1).view(2, -1), *ref.sum(-1).view(2, -1), pair.beta)
        margins.extend(batch_margins.tolist())
        progress(start + len(chunk), len(heldout), "held-out accuracy")
    return margins


def save_adapter(model: torch.nn.Module, config: Config, run: Run) -> None:
    """6. The adapter, named after its base and with our metadata (beta, training config), written whole into the
    run's ``adapter`` folder (staged, then renamed)."""
    with atomic_dir(run.path("adapter")) as staging:
        model.save_pretrained(staging)
        adapter_config = json.loads((staging / "adapter_config.json").read_text())
        adapter_config["base_model_name_or_path"] = config.model
        (staging / "adapter_config.json").write_text(json.dumps(adapter_config, indent=2))
        (staging / ADAPTER_META).write_text(json.dumps({"beta": config.beta, "base": config.model,
                                                        "steps": config.steps, "train_config": run.config}, indent=2))


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
        texts = [answer_prefix(tokenizer, [{"role": "user", "content": p}]) for p in chunk]
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


def _headline(summary: dict[str, Any]) -> list[Metric]:
    acc = summary["heldout_preference_accuracy"]
    return [Metric(f"held-out preference accuracy (n={acc['n']})", acc["value"], acc["low"], acc["high"], bounds=UNIT),
            Metric("held-out mean reward margin", summary["heldout_mean_margin"]),
            Metric("final loss (mean of the last 10% of steps)", summary["final_loss"]),
            Metric("steps", summary["steps"])]


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
    headline=_headline,
)


def audit_config(scale: float = 1.0) -> Config:
    """A few DPO steps: checks the loop moves the loss, not that it converges (the committed adapter does)."""
    return Config(n_train=16, n_heldout=8, steps=max(2, int(4 * scale)), batch_pairs=2, checkpoint_every=2)
