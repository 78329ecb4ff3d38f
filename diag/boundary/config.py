"""What the boundary analyses accept, and their declarations: torch-free, so ``diag boundary ... --help`` is fast.

The computations live in analysis.py (RA-NLD over policies and conditions) and episodes.py (recorded play).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypedDict

from diag.contract import MAX_SEED, Analysis, checked, validated


@dataclass(frozen=True)
@validated
class BoundaryConfig:
    # comma-separated shipped policy names or policy files
    policies: tuple[str, ...] = checked(("roadrunner-vanilla", "roadrunner-robust"), max_len=16)
    # set by pin_inputs: retrained checkpoints make a new run
    policies_sha256: tuple[str | None, ...] = checked((), min_len=0)
    game: str | None = None  # for files that do not record it (CleanRL, SB3): pong, Pong, ALE/Pong-v5, ...
    full_action_space: bool = False  # all 18 ALE actions instead of the game's minimal set
    device: str = checked("auto", kind="device")  # auto = CUDA when present
    allow_tf32: bool = False  # TF32 moved RA-NLD gradients by 3% on an H200: off unless allowed
    episodes: int = checked(10, low=2, high=1000)  # per state set, as in the paper (a direction needs 2+)
    max_steps: int = checked(300, low=2, high=100_000)  # agent steps recorded per episode
    conditions: tuple[str, ...] = checked(  # comma-separated shifts and attacks
        ("brightness", "contrast", "blur", "rotation", "perspective", "jpeg", "fgsm", "pgd"), max_len=32)
    eps: float = checked(1 / 255, low=0, high=1)  # attack radius in [0, 1] pixel units
    pgd_steps: int = checked(10, low=1, high=10_000)  # Madry et al.: 10 steps of 2.5 eps / 10, random start
    # share of pixels counted as "most sensitive" for disjointness
    topk_fraction: float = checked(0.01, above=0, high=1)
    # states (evenly spaced over the clean set) given to the captum baselines
    attribution_states: int = checked(32, low=1, high=100_000)
    ig_steps: int = checked(16, low=1, high=10_000)  # integrated-gradients steps of the captum baseline
    # bootstrap resamples of each state set for Lambda's 95% percentile interval
    n_bootstrap: int = checked(200, low=20, high=100_000)
    seed: int = checked(0, low=0, high=MAX_SEED)  # seed for play and attacks


@dataclass(frozen=True)
@validated
class EpisodesConfig:
    policy: str = "roadrunner-vanilla"  # shipped policy name or policy file
    policy_sha256: str | None = None  # set by pin_inputs: a retrained checkpoint is a new run, never a stale reuse
    game: str | None = None  # for files that do not record it (CleanRL, SB3): pong, Pong, ALE/Pong-v5, ...
    full_action_space: bool = False  # all 18 ALE actions instead of the game's minimal set
    device: str = checked("auto", kind="device")  # auto = CUDA when present
    allow_tf32: bool = False  # attacks take gradients: TF32 off unless allowed
    episodes: int = checked(20, low=1, high=10_000)  # greedy episodes to record
    # agent steps per episode (8,000 frames); capped episodes are flagged
    max_steps: int = checked(2000, low=1, high=1_000_000)
    condition: str = "clean"  # clean, a shift or an attack (see diag.boundary.condition.CONDITIONS)
    eps: float = checked(1 / 255, low=0, high=1)  # attack radius in [0, 1] pixel units
    pgd_steps: int = checked(10, low=1, high=10_000)  # PGD steps (attack pgd)
    seed: int = checked(0, low=0, high=MAX_SEED)  # seed for play and attacks
    random_baseline: bool = True  # also score a uniformly random policy
    keep_frames: bool = True  # store every frame in the run


# What each Result.summary() holds (``--json``, the report, the app); "{policy}" is each policy's name.
PolicySummary = TypedDict("PolicySummary", {
    "format": str, "lambda": dict[str, float], "score_within_cap": dict[str, float], "oscillation": dict[str, float],
    # condition -> [low, high], the 95% bootstrap percentile interval of Lambda over resampled states
    "lambda_interval": dict[str, list[float]],
    "attribution_agreement": dict[str, dict[str, float]]})
BoundarySummary = TypedDict("BoundarySummary", {
    "game": str, "action_set": str, "device": str, "tf32": bool, "lambda_formula": str,
    "paper_lambda_vanilla": dict[str, float], "disjointness": dict[str, Any], "{policy}": PolicySummary})
Interval = dict[str, float]  # mean, low, high
EpisodesSummary = TypedDict("EpisodesSummary", {
    "game": str, "format": str, "action_set": str, "condition": str, "score": Interval, "episodes": int,
    "capped_episodes": int, "mean_length": float, "most_frequent_action": dict[str, float],
    "actions_above_1pct": int, "random_score": Interval})


BOUNDARY = Analysis(
    name="boundary", config=BoundaryConfig, module="diag.boundary.analysis", pin_inputs="diag.boundary.analysis:pin_inputs",
    command=("boundary", "analyse"), summary=BoundarySummary, comparable="diag.compare:boundary_quantities",
    description="RA-NLD: Lambda table, gradient-norm oscillation, disjointness and captum baselines; figures in the "
                "run.",
)
EPISODES = Analysis(
    name="boundary-episodes", config=EpisodesConfig, module="diag.boundary.episodes", pin_inputs="diag.boundary.episodes:pin_inputs",
    command=("boundary", "record"), summary=EpisodesSummary, comparable="diag.compare:episodes_quantities",
    description="Play and record greedy episodes (frames, actions, Q-values, rewards); prints the score with a 95% "
                "CI.",
)
