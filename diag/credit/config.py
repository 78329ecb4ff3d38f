"""What the credit analyses accept, and their declarations: torch-free, so ``diag credit ... --help`` is fast.

The computations live in analysis.py (per-token credit of a policy/reference pair), dpo.py (training our DPO
adapter) and tabular.py (the ground truth in a token MDP).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypedDict

from diag.contract import MAX_SEED, Analysis, Cli, DtypeName, checked, validated

COMMITTED_ADAPTER = "smollm2-dpo-credit"


@dataclass(frozen=True)
@validated
class ScoreConfig:
    # an adapter dir or name (reference = adapter disabled), a model with `reference`, or a TRL DPOTrainer output
    # dir (its final model, else its latest checkpoint-N) or one checkpoint-N dir
    policy: str = checked(COMMITTED_ADAPTER, cli=Cli(argument="optional"))
    reference: str | None = None  # a model or adapter dir; for an adapter policy, default: its base, adapter off
    # None: the beta recorded (TRL's training_args.bin, or our adapter's metadata)
    beta: float | None = checked(None, above=0, high=1000)
    # "heldout" or "train" (fresh generated pairs), or a JSONL file of pairs or responses
    data: str = checked("heldout", kind="file", names=("heldout", "train"))
    n_pairs: int = checked(32, low=1, high=100_000)  # per seed, for generated data
    # each seed: fresh held-out pairs and its own bootstrap
    seeds: tuple[int, ...] = checked((0, 1, 2), low=0, high=MAX_SEED, max_len=1000)
    # LayerIntegratedGradients steps; 0 skips the captum baseline
    captum_steps: int = checked(8, low=0, high=10_000)
    # pairs per seed that also get the captum baseline (it costs 2 x steps passes each)
    captum_pairs: int = checked(4, low=0, high=100_000)
    n_boot: int = checked(1000, low=1, high=1_000_000)  # bootstrap resamples
    batch_size: int = checked(16, low=1, high=4096)  # pairs per forward pass
    device: str = checked("auto", kind="device")  # auto, cpu or cuda[:N]
    # bfloat16 / float16: the result carries the measured KL to float32 ("numerics")
    dtype: DtypeName = "float32"
    allow_tf32: bool = False  # TF32 matmuls in the captum attributions (off: as exact as float32 allows)
    # Filled in by pin_inputs, so a changed data file, adapter or local model is a new run, never a stale reuse.
    data_sha256: str | None = None
    policy_sha256: str | None = None
    reference_sha256: str | None = None


@dataclass(frozen=True)
@validated
class TrainConfig:
    model: str = checked("smollm2-135m-instruct", kind="model")  # base model the LoRA adapter trains on
    model_sha256: str | None = None  # set by Analysis.pin for a local model dir: edits make a new run
    n_train: int = checked(320, low=1, high=100_000)  # preference pairs from diag.credit.data (train split)
    # held-out templates and entities, for preference accuracy
    n_heldout: int = checked(64, low=1, high=100_000)
    steps: int = checked(200, low=1, high=1_000_000)  # DPO steps
    batch_pairs: int = checked(4, low=1, high=1024)  # preference pairs per step
    beta: float = checked(0.1, above=0, high=1000)  # DPO beta
    lr: float = checked(8e-4, above=0, high=10)  # AdamW learning rate for the LoRA weights
    # + weight * mean NLL per chosen token (RPO): keeps shared tokens near the reference
    nll_weight: float = checked(1.0, low=0, high=1000)
    # + weight * mean per-token KL(pi_ref || pi) over both answers (as in token-level DPO): moving a token the
    # reference finds likely costs more than moving an unlikely one, so the margin is bought at the wrong token
    token_kl_weight: float = checked(0.0, low=0, high=1000)
    # + weight * mean squared per-token log-ratio log(pi/pi_ref) on the reference's own sampled answers to the
    # training prompts: holds the implicit reward at zero on phrasing that carries no preference, so template
    # words the training answers never use do not drift (they did: " to" in "dollars to spend", r_t -1.5)
    anchor_weight: float = checked(1.0, low=0, high=1000)
    lora_rank: int = checked(8, low=1, high=1024)  # LoRA rank
    # LoRA on the top N decoder layers: steps run only these, from a cached residual
    lora_layers: int = checked(6, low=1, high=999)
    seed: int = checked(0, low=0, high=MAX_SEED)  # seed (data, initialisation, batches)
    # steps between checkpoints (a killed run resumes there)
    checkpoint_every: int = checked(5, low=1, high=1_000_000)
    # trains in float32 (LoRA in a lowered dtype would need mixed precision, not a cast)
    device: str = checked("auto", kind="device")
    allow_tf32: bool = False  # TF32 matmuls in training (off: gradients as exact as float32 allows)


@dataclass(frozen=True)
@validated
class TabularConfig:
    vocab: int = checked(5, low=2, high=1000)  # tokens per step of the token MDP
    length: int = checked(4, low=1, high=20)  # tokens per sequence
    beta: float = checked(0.5, above=0, high=1000)  # DPO beta
    reward_scale: float = checked(1.0, above=0, high=1000)  # standard deviation of the true per-token rewards
    # data-limited below ~1e5: rare deep states need many comparisons
    n_pairs: int = checked(200_000, low=1, high=10_000_000)
    steps: int = checked(300, low=1, high=1_000_000)  # training steps of the table
    lr: float = checked(0.05, above=0, high=10)  # Adam learning rate of the table
    # each seed: a new MDP, new pairs, a new trained table
    seeds: tuple[int, ...] = checked((0, 1, 2), low=0, high=MAX_SEED, max_len=1000)
    device: str = checked("auto", kind="device")  # where the table trains (float64; pairs drawn on the host)


# What each Result.summary() holds (``--json``, the report, the app).
Interval = dict[str, float]  # value, low, high (and n where counted)
ScoreSummary = TypedDict("ScoreSummary", {
    "scores": dict[str, Any], "policy": str, "reference": str, "beta": float, "beta_from": str, "policy_loaded": str,
    "trl_training_args": dict[str, Any], "policy_global_step": int | None, "reference_loaded": str | None,
    "numerics": dict[str, Any], "n_pairs": int, "n_responses": int, "seeds": list[int],
    "preference_accuracy": Interval | None, "preference_ties": Interval | None,
    "preference_counts": dict[str, int] | None, "consistency_max_abs_diff": float | None, "consistency_n": int,
    "interval": str, "localisation_read": str, "localisation_by_type": dict[str, Any],
    "localisation_by_preference": dict[str, Any]})
TrainSummary = TypedDict("TrainSummary", {
    "steps": int, "beta": float, "final_loss": float, "heldout_preference_accuracy": Interval,
    "heldout_mean_margin": float, "n_heldout": int, "numerics": dict[str, Any]})
TabularSummary = TypedDict("TabularSummary", {
    "spearman_vs_advantage": Interval, "pearson_vs_advantage": Interval, "rmse_vs_advantage": Interval,
    "spearman_vs_reward": Interval, "heldout_preference_accuracy": float, "seeds": int, "interval": str})


SCORE = Analysis(
    name="credit", config=ScoreConfig, module="diag.credit.analysis",
    pin_inputs="diag.credit.inputs:pin_inputs",
    check_inputs="diag.credit.inputs:check_inputs", command=("credit", "score"),
    summary=ScoreSummary, comparable="diag.compare:credit_quantities",
    description="Per-token implicit rewards of POLICY vs its reference, with localisation scores and baselines.",
)
TRAIN = Analysis(
    name="credit-train", config=TrainConfig, module="diag.credit.dpo", command=("credit", "train"),
    summary=TrainSummary,
    description="Train a LoRA DPO adapter on SmolLM2 (resumes a killed run from its checkpoint).",
)
TABULAR = Analysis(
    name="credit-tabular", config=TabularConfig, module="diag.credit.tabular", command=("credit", "tabular"),
    summary=TabularSummary, comparable="diag.compare:tabular_quantities",
    description="Ground truth: DPO's per-token log-ratio vs the optimal advantage A* in a tabular token MDP.",
)
