"""What each CDAS analysis accepts, and its declaration: torch-free, so ``diag cdas ... --help`` starts fast.

The computations live in toy.py (ground truth), train.py (one DII), steer.py (steering both ways) and
by_layer.py (the steering study per layer); the declarations name them and they are imported when a run starts.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal, TypedDict, get_args

from diag.contract import MAX_SEED, Analysis, DtypeName, checked, validated
from diag.errors import DiagError

OBJECTIVES = ("das", "cdas", "kl")  # DAS: cross-entropy; CDAS: Jensen-Shannon; KL: one-sided (an ablation)

# The steering study's choices (steer.py and its steer_* modules read them from here)
MethodName = Literal["diffmean", "das", "cdas", "prompting", "prompting+cdas"]
METHODS: tuple[str, ...] = get_args(MethodName)
VECTOR_METHODS = ("diffmean", "das", "cdas")  # a unit direction clamped in the residual stream
PROMPTED = ("prompting", "prompting+cdas")  # the instruction asks; "+cdas" also clamps the CDAS direction
TRAINED = ("das", "cdas")  # DII objectives the study trains: cross-entropy, Jensen-Shannon
DIRECTIONS = ("elicit", "suppress")
Read = Literal["token", "response"]  # a direction read at the assistant-header token, or over the response
Positions = Literal["all", "generated"]  # steer every position after BOS, or only those predicting answer tokens
Factor = Literal["norm", "data"]  # alpha's unit: residual norms, or half the direction's own m+ - m-

# The planted concept (diag.cdas.planted trains it; cdas-planted checks the steering pipeline finds it)
PLANTED_CONCEPT = "dogs"
PLANTED_LAYER = 10  # d is written and read at this block's residual output
PLANTED_DATASET = Path(__file__).parent / "data" / "planted.jsonl"
PLANTED_METHODS = ("diffmean", "das", "cdas", "prompting")


@dataclass(frozen=True)
@validated
class ToyConfig:
    seed: int = checked(0, low=0, high=MAX_SEED)  # seed for data, MLP and DII initialisation
    hidden: int = checked(16, low=1, high=4096)  # MLP width (the DII's layer width)
    layer: int = checked(0, low=0, high=2)  # MLP layer (0..2) to intervene on
    rank: int = checked(8, low=1, high=4096)  # subspace dimension per variable
    mlp_steps: int = checked(3000, low=1, high=1_000_000)  # training steps of the MLP
    dii_steps: int = checked(600, low=1, high=1_000_000)  # training steps per DII
    # MLP and DII batches (pyvene's DAS tutorial trains its MLP with batch 1024)
    batch: int = checked(1024, low=1, high=65_536)
    lr: float = checked(0.01, above=0, high=10)  # Adam learning rate
    eval_pairs: int = checked(2000, low=1, high=1_000_000)  # interchange pairs per IIA estimate
    # comma-separated subset of das, cdas, kl
    objectives: tuple[str, ...] = checked(("das", "cdas"), max_len=8)
    # IIA of WX per layer and objective (the layer sweep plot)
    sweep_layers: tuple[int, ...] = checked((0, 1, 2), low=0, high=2, max_len=3)
    device: str = checked("auto", kind="device")  # data is drawn on the CPU (same stream everywhere), then moved
    allow_tf32: bool = False  # TF32 matmuls in MLP and DII training (off: as exact as float32 allows)

    def __post_init__(self) -> None:
        if not 0 < self.rank <= self.hidden:
            raise DiagError(f"rank {self.rank} out of range: layer width is {self.hidden}")
        bad = [o for o in self.objectives if o not in OBJECTIVES]
        if bad:
            raise DiagError(f"objectives must be a subset of {', '.join(OBJECTIVES)}, got {bad}")


@dataclass(frozen=True)
@validated
class TrainConfig:
    model: str = checked("smollm2-135m-instruct", kind="model")  # named model, HF id or local directory
    model_sha256: str | None = None  # set by Analysis.pin for a local model dir: edits make a new run
    concept: str = "dogs"  # concept from the dataset
    # decoder layer whose residual output is intervened on
    layer: int = checked(10, low=0, high=999, layer_of="model")
    rank: int = checked(1, low=1, high=65_536)  # subspace rank k
    objective: str = "cdas"  # cdas (JSD), das (cross-entropy) or kl
    steps: int = checked(20, low=1, high=1_000_000)  # training steps
    pairs_per_step: int = checked(4, low=1, high=1024)  # training pairs per step
    lr: float = checked(0.01, above=0, high=10)  # Adam learning rate
    dataset: str = checked("", kind="file", empty=True)  # JSONL concept dataset (empty: the committed one)
    dataset_sha256: str | None = None  # set by pin_files: an edited dataset makes a new run
    # JSONL of the user's concepts {name, lexicon[, phrase, description]} beside the built-in ones
    concepts_file: str = checked("", kind="file", empty=True)
    concepts_sha256: str | None = None  # set by pin_files
    seed: int = checked(0, low=0, high=MAX_SEED)  # seed for pairs and initialisation
    device: str = checked("auto", kind="device")  # auto, cpu or cuda[:N]
    dtype: DtypeName = "float32"  # of the frozen model; the DII itself trains in float32
    allow_tf32: bool = False  # TF32 matmuls in DII training (off: gradients as exact as float32 allows)

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise DiagError(f"objective {self.objective!r} unknown: choose one of {', '.join(OBJECTIVES)}")


@dataclass(frozen=True)
@validated
class SteerConfig:
    model: str = checked("smollm2-135m-instruct", kind="model")  # named model, HF id or local directory
    model_sha256: str | None = None  # set by Analysis.pin for a local model dir: edits make a new run
    # comma-separated concepts
    concepts: tuple[str, ...] = checked(("dogs", "music", "space", "ocean"), max_len=100)
    # compared methods; "prompting+cdas" asks in the instruction and clamps the CDAS direction
    methods: tuple[MethodName, ...] = checked(METHODS, max_len=5)
    layer: int = checked(10, low=0, high=999, layer_of="model")  # decoder layer to steer at
    read: Read = "token"  # direction read at the assistant-header token, or averaged over response positions
    positions: Positions = "all"  # steer every position after BOS, or only those that predict answer tokens
    factor: Factor = "norm"  # alpha's unit: residual norms, or half the direction's own m+ - m- (1 = clamp to m+/m-)
    steps: int = checked(8, low=1, high=1_000_000)  # training steps of the rank-1 DIIs
    pairs_per_step: int = checked(1, low=1, high=1024)  # per concept and step
    train_tokens: int = checked(12, low=1, high=4096)  # response tokens per example the losses see
    # Adam moves every coordinate ~lr per step whatever the gradient's size: at 0.01 a 576-dim unit vector turns by
    # up to ~0.24 rad a step, and 8 one-pair steps (flat loss) left the directions at cos ~0.25-0.31 to their init.
    lr: float = checked(0.002, above=0, high=10)
    init: str = "diffmean"  # start DAS/CDAS from the DiffMean direction ("random": a seeded random unit vector)
    # clamp offsets from the midpoint, in units of ``factor``
    alphas: tuple[float, ...] = checked((0.1, 0.2, 0.4), low=-100, high=100, max_len=100)
    # held-out prompts per concept, split into two halves (choose alpha / report) for the judge protocol
    eval_prompts: int = checked(6, low=2, high=10_000)
    max_new_tokens: int = checked(20, low=1, high=4096)  # tokens generated per answer
    # the frontier's matched fluency cost: answers at most this many nats per token less likely than unsteered ones
    fluency_budget: float = checked(0.5, above=0, high=20)
    # the smallest gain difference (nats per token) worth resolving: a tie with wider intervals is "budget too small"
    resolution: float = checked(0.1, above=0, high=100)
    bootstrap: int = checked(1000, low=100, high=100_000)  # resamples of the held-out prompts per interval
    dataset: str = checked("", kind="file", empty=True)  # JSONL path; empty = the committed dataset
    dataset_sha256: str | None = None  # set by pin_files: an edited dataset makes a new run
    # JSONL of the user's concepts {name, lexicon[, phrase, description]} beside the built-in ones
    concepts_file: str = checked("", kind="file", empty=True)
    concepts_sha256: str | None = None  # set by pin_files
    seed: int = checked(0, low=0, high=MAX_SEED)  # seed for pairs, initialisation and sampling
    device: str = checked("auto", kind="device")  # auto, cpu or cuda[:N]
    dtype: DtypeName = "float32"  # of the frozen model; the DIIs train in float32
    allow_tf32: bool = False  # TF32 matmuls in DII training (off: gradients as exact as float32 allows)

    def __post_init__(self) -> None:
        if self.init not in ("diffmean", "random"):
            raise DiagError(f"init must be diffmean or random, got {self.init!r}")
        if len(set(self.methods)) != len(self.methods):
            raise DiagError(f"methods repeat: {', '.join(self.methods)}")

    def objectives(self) -> tuple[str, ...]:
        """The DII objectives the chosen methods need (prompting+cdas clamps the CDAS direction)."""
        wanted = {*self.methods, *(("cdas",) if "prompting+cdas" in self.methods else ())}
        return tuple(o for o in TRAINED if o in wanted)


@dataclass(frozen=True)
@validated
class SweepConfig:
    # comma-separated decoder layers to steer at
    layers: tuple[int, ...] = checked((3, 6, 10, 14), low=0, high=999, max_len=1000, layer_of="model")
    model: str = checked("smollm2-135m-instruct", kind="model")  # named model, HF id or local directory
    model_sha256: str | None = None  # set by Analysis.pin for a local model dir: edits make a new run
    # comma-separated concepts
    concepts: tuple[str, ...] = checked(("dogs", "music", "space", "ocean"), max_len=100)
    steps: int = checked(4, low=1, high=1_000_000)  # training steps of the rank-1 DIIs per layer
    # comma-separated steering factors (residual norms)
    alphas: tuple[float, ...] = checked((0.1, 0.25), low=-100, high=100, max_len=100)
    eval_prompts: int = checked(4, low=2, high=10_000)  # two per held-out half
    max_new_tokens: int = checked(16, low=1, high=4096)  # tokens generated per answer
    dataset: str = checked("", kind="file", empty=True)  # JSONL concept dataset (empty: the committed one)
    dataset_sha256: str | None = None  # set by pin_files: an edited dataset makes a new run
    # JSONL of the user's concepts {name, lexicon[, phrase, description]} beside the built-in ones
    concepts_file: str = checked("", kind="file", empty=True)
    concepts_sha256: str | None = None  # set by pin_files
    seed: int = checked(0, low=0, high=MAX_SEED)  # seed for pairs, initialisation and sampling
    device: str = checked("auto", kind="device")  # auto, cpu or cuda[:N]
    dtype: DtypeName = "float32"  # of the frozen model; the DIIs train in float32
    allow_tf32: bool = False  # TF32 matmuls in DII training (off: gradients as exact as float32 allows)

    def __post_init__(self) -> None:
        if len(set(self.layers)) != len(self.layers):
            raise DiagError(f"layers repeat: {self.layers}")
        self.steer_config(self.layers[0])  # the per-layer study validates everything else

    def steer_config(self, layer: int) -> SteerConfig:
        shared = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "layers"}
        return SteerConfig(layer=layer, **shared)


@dataclass(frozen=True)
@validated
class PlantedConfig:
    steps: int = checked(8, low=1, high=1_000_000)  # DII training steps (DAS and CDAS), as in cdas-steer
    pairs_per_step: int = checked(2, low=1, high=1024)  # training pairs per concept and step
    train_tokens: int = checked(12, low=1, high=4096)  # response tokens per example the DII losses see
    lr: float = checked(0.002, above=0, high=10)  # Adam learning rate of the DIIs
    init: str = "diffmean"  # DAS/CDAS start: the DiffMean direction, or "random" (a seeded random unit vector)
    # clamp offsets from the m+/m- midpoint in residual norms (~0.25 x the planted scale 128 at 0.25)
    alphas: tuple[float, ...] = checked((0.25, 0.5), low=-100, high=100, max_len=100)
    # held-out prompts (48 exist), halves: choose alpha / report
    eval_prompts: int = checked(48, low=2, high=48)
    max_new_tokens: int = checked(20, low=1, high=4096)  # tokens generated per answer
    seed: int = checked(0, low=0, high=MAX_SEED)  # seed for pairs, initialisation and sampling
    device: str = checked("auto", kind="device")  # auto, cpu or cuda[:N]
    dtype: DtypeName = "float32"  # of the frozen model; the DIIs train in float32
    allow_tf32: bool = False  # TF32 matmuls in DII training (off: gradients as exact as float32 allows)
    adapter_sha256: str | None = None  # set by pin_inputs: a retrained planted adapter makes a new run

    def steer_config(self) -> SteerConfig:
        """The cdas-steer study this check runs, on the planted model and its concept."""
        from diag.zoo.sources import PLANTED

        return SteerConfig(model=PLANTED, concepts=(PLANTED_CONCEPT,), methods=PLANTED_METHODS, layer=PLANTED_LAYER,
                           steps=self.steps, pairs_per_step=self.pairs_per_step, train_tokens=self.train_tokens,
                           lr=self.lr, init=self.init, alphas=self.alphas, eval_prompts=self.eval_prompts,
                           max_new_tokens=self.max_new_tokens, dataset=str(PLANTED_DATASET), seed=self.seed,
                           device=self.device, dtype=self.dtype, allow_tf32=self.allow_tf32)

    def __post_init__(self) -> None:
        self.steer_config()  # the study validates init and the rest


# What each Result.summary() holds (``--json``, the report, the app): keys in braces are families, e.g.
# "iia_{objective}_{variable}" is iia_das_wx, iia_cdas_yz, ...
Interval = dict[str, float]  # value, low, high (and n where counted)
ToySummary = TypedDict("ToySummary", {
    "mlp_accuracy": float, "iia_{objective}_{variable}": Interval, "control_iia_{name}": Interval,
    "aligned_iia_min": float, "control_iia_max": float, "layer_sweep_iia_wx": dict[str, dict[str, float]]})
TrainSummary = TypedDict("TrainSummary", {
    "heldout_loss_before": float, "heldout_loss_after": float, "orthonormality_error": float,
    "final_train_loss": float, "rank": int, "numerics": dict[str, Any]})
SteerSummary = TypedDict("SteerSummary", {
    "judge": str, "{method}_{direction}": float, "cdas_minus_diffmean_{direction}": float, "concepts": list[str],
    "residual_norm": float, "numerics": dict[str, Any],
    # judge-independent: best concept log-likelihood gain within the fluency budget, concept -> method -> direction
    "fluency_budget": float, "frontier_gain": dict[str, dict[str, dict[str, float]]],
    # concept -> direction -> CDAS vs DiffMean verdict at matched fluency, and whether any method elicits at all
    "verdicts": dict[str, dict[str, dict[str, Any]]], "elicits_any": bool})
SweepSummary = TypedDict("SweepSummary", {
    "layers": list[int], "{method}_{direction}_by_layer": dict[str, float], "best_layer_{method}_{direction}": int,
    "steer_runs": dict[str, str]})

PlantedSummary = TypedDict("PlantedSummary", {
    "layer": int, "scale": float, "steer_run": str, "cosine_{method}": float,
    "{method}_{direction}_success": Interval, "{method}_{direction}_fluent_success": Interval,
    "{method}_{direction}_median_perplexity": float, "own_perplexity": dict[str, float],
    # alpha (formatted) -> fluent success at that alpha of the grid, steered methods and d itself
    "{method}_{direction}_fluent_success_by_alpha": dict[str, float],
    "cdas_cosine_passes": bool, "cdas_steering_passes": bool})

TOY = Analysis(
    name="cdas-toy", config=ToyConfig, module="diag.cdas.toy", command=("cdas", "toy"),
    summary=ToySummary, comparable="diag.compare:cdas_toy_quantities",
    description="Hierarchical-equality ground truth: IIA of DAS/CDAS for aligned variables and for controls.",
)
PLANTED_CHECK = Analysis(
    name="cdas-planted", config=PlantedConfig, module="diag.cdas.planted_check",
    pin_inputs="diag.cdas.planted_check:pin_inputs", check_inputs="diag.cdas.planted_check:check_inputs",
    command=("cdas", "planted"), summary=PlantedSummary,
    description="Ground truth for steering: does cdas-steer recover and use a direction planted in SmolLM2?",
)
TRAIN = Analysis(
    name="cdas-train", config=TrainConfig, module="diag.cdas.train", command=("cdas", "train"),
    pin_inputs="diag.cdas.concepts:pin_files",
    summary=TrainSummary, comparable="diag.compare:cdas_train_quantities",
    description="Train a rank-k DII for one concept on the train pairs; saves the intervention and held-out loss.",
)
STEER = Analysis(
    name="cdas-steer", config=SteerConfig, module="diag.cdas.steer", command=("cdas", "steer"),
    pin_inputs="diag.cdas.concepts:pin_files",
    summary=SteerSummary, comparable="diag.compare:cdas_steer_quantities",
    description="Steer both ways with rank-1 CDAS vs DiffMean, DAS and prompting; prints mean held-out judge scores.",
)
BY_LAYER = Analysis(
    name="cdas-steer-sweep", config=SweepConfig, module="diag.cdas.by_layer", command=("cdas", "sweep"),
    pin_inputs="diag.cdas.concepts:pin_files",
    summary=SweepSummary, comparable="diag.compare:cdas_sweep_quantities",
    description="Layer sweep: the steer study at each layer (one cdas-steer run per layer); held-out scores per layer.",
)
