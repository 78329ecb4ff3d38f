"""What the TIR analysis accepts, and its declaration: torch-free, so ``diag tir ... --help`` is fast.

The computation (sampling or importing rollouts, then pass@k and support sets) lives in analysis.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, TypedDict

from diag.contract import MAX_SEED, Analysis, Cli, checked, validated
from diag.tir.problems import FAMILIES, LEVELS


@dataclass(frozen=True)
@validated
class Config:
    """Sampling settings (on the generated suite, or on the user's ``problems_file``), or ``rollouts_file`` (+ its
    sha256, so edits make a new run) to import instead."""

    model: str = checked("smollm2-135m-instruct", kind="model")  # named model, local HF directory or hub id
    model_sha256: str | None = None  # set by Analysis.pin for a local model dir: edits make a new run
    # JSONL rollouts to import instead of sampling (see diag/tir/importer.py)
    rollouts_file: str | None = checked(None, kind="file")
    rollouts_sha256: str | None = None
    # JSONL problems {question, answer; optional problem_id, family, level} (GSM8K's as it ships; answers exact, see
    # diag/tir/answers.py): sampled instead of the generated suite, or what grades imported lines without "correct"
    problems_file: str | None = checked(None, kind="file")
    problems_sha256: str | None = None
    suite_seed: int = checked(0, low=0, high=MAX_SEED)  # seed of the generated problem suite
    # problems per (family, level): 4 families x 3 levels x 10 = 120
    per_cell: int = checked(10, low=1, high=1000)
    families: tuple[str, ...] = checked(FAMILIES, max_len=16)  # comma-separated problem families
    # comma-separated difficulty levels (1..3)
    levels: tuple[int, ...] = checked(LEVELS, low=1, high=3, max_len=3)
    n_samples: int = checked(32, low=1, high=4096, cli=Cli(option="--n"))  # samples per problem per mode
    temperature: float = checked(0.7, above=0, high=10)  # sampling temperature (> 0)
    max_new_tokens: int = checked(48, low=1, high=32_768)  # sampled tokens per rollout
    max_tool_calls: int = checked(2, low=0, high=100)  # tool calls per rollout
    problems_per_batch: int = checked(2, low=1, high=1024)  # problems sampled together (x n rows)
    dtype: Literal["float32", "bfloat16"] = "float32"  # bfloat16: ~1.4x faster on CPU, KL to float32 ~1e-3/token
    workers: int = checked(2, low=1, high=64)  # sandbox worker processes
    n_bootstrap: int = checked(1000, low=1, high=1_000_000)  # bootstrap replicates over problems
    seed: int = checked(0, low=0, high=MAX_SEED)  # sampling seed
    device: str = checked("auto", kind="device")  # auto, cpu or cuda[:N]


# What Result.summary() holds (``--json``, the report, the app); "pass@{k}" for k = 1, 4, 16, 64, 256 below
# k_max, and k_max.
Interval = dict[str, float]  # value, low, high
TirSummary = TypedDict("TirSummary", {
    "warning": str | None, "problems": int, "n_per_mode": dict[str, int], "k_max": int, "k_equals_n": str,
    "source": dict[str, Any], "pass@{k}": dict[str, Interval], "support_size": dict[str, int],
    "expansion": list[str], "shrinkage": list[str], "split_at_n": dict[str, Any], "split_at_k1": dict[str, float],
    "tokens_per_correct": dict[str, Any], "tool_calls": dict[str, Any], "execution_audit": dict[str, Any],
    "pass@1_by_family": dict[str, Any],
    # in runs stored before per-mode n: one n for both modes, and the split at k = that n
    "samples_per_problem_per_mode": int, "split_at_k{n}": dict[str, float]})


TIR = Analysis(
    name="tir", config=Config, module="diag.tir.analysis",
    pin_inputs="diag.tir.analysis:pin_inputs",
    check_inputs="diag.tir.analysis:check_inputs", command=("tir", "sample"),
    summary=TirSummary, comparable="diag.compare:tir_quantities",
    description="Sample N tool-using and N text-only rollouts per problem, then analyse them (resumes after a kill).",
)
