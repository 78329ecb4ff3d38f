"""Steering score over layers: the ``cdas-steer`` study (train, choose alpha on half A, score half B) per layer.

Each layer is an ordinary ``cdas-steer`` run in the same store, so a killed sweep resumes where it stopped
(finished layers are reused, the running one resumes from its checkpoint) and every layer's table, examples
and figures stay inspectable on their own. This run keeps the per-layer held-out scores and the plot.
Alpha is in residual norms at each layer, so one grid means the same edit strength at every depth.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from diag import contract
from diag.cdas import steer
from diag.cdas.config import BY_LAYER as ANALYSIS  # noqa: F401 -- the declared value, for callers
from diag.cdas.config import SweepConfig as Config
from diag.progress import Progress, Stage
from diag.report.sections import Guide
from diag.run_dir import Run


@dataclass
class Result:
    layers: list[int]
    runs: dict[str, str]  # layer -> cdas-steer run id
    scores: dict[str, dict[str, dict[str, float]]]  # layer -> method -> direction -> mean held-out score

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"layers": self.layers}
        for method in steer.METHODS:
            for direction in steer.DIRECTIONS:
                by_layer = {str(la): self.scores[str(la)][method][direction] for la in self.layers}
                out[f"{method}_{direction}_by_layer"] = by_layer
                if method != "prompting":  # argmax: the first listed layer when layers tie
                    out[f"best_layer_{method}_{direction}"] = int(max(by_layer, key=by_layer.__getitem__))
        out["steer_runs"] = self.runs
        return out

    def save(self, run: Run) -> None:
        run.write_json("sweep.json", {"layers": self.layers, "runs": self.runs, "scores": self.scores})
        run.write_figure("layer_sweep", self.figure())

    @classmethod
    def load(cls, run: Run) -> Result:
        data = run.read_json("sweep.json")
        return cls(data["layers"], data["runs"], data["scores"])

    def figure(self) -> Any:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
        for ax, direction in zip(axes, steer.DIRECTIONS, strict=True):
            for method in steer.METHODS:
                ax.plot(self.layers, [self.scores[str(la)][method][direction] for la in self.layers], marker="o",
                        ls=":" if method == "prompting" else "-", label=method)
            ax.set(xlabel="layer", title=f"{direction} (held-out half B)", ylim=(-0.05, 2.05), xticks=self.layers)
        axes[0].set_ylabel("mean judge score over concepts (0-2)")
        axes[1].legend(fontsize=8)
        fig.tight_layout()
        return fig


def compute(config: Config, run: Run, progress: Progress) -> Result:
    from diag.device import resolve_device

    resolve_device(config.device)  # one line before the first layer's work
    runs: dict[str, str] = {}
    scores: dict[str, dict[str, dict[str, float]]] = {}
    for i, layer in enumerate(config.layers):
        stage = Stage(progress, f"layer {layer} ({i + 1} of {len(config.layers)})")
        runs[str(layer)], result = contract.run(steer.ANALYSIS, config.steer_config(layer), progress=stage,
                                                store=run.store)
        scores[str(layer)] = result.table()
    progress(len(config.layers), len(config.layers), "done")
    return Result(list(config.layers), runs, scores)


def _headline(summary: dict[str, Any]) -> list[Any]:
    """Per method and direction, the best layer's held-out score (or that every layer scored the same)."""
    from diag.report.sections import Metric

    out = []
    for method in steer.METHODS:
        for direction in steer.DIRECTIONS:
            by_layer = summary[f"{method}_{direction}_by_layer"]
            best = max(by_layer, key=by_layer.__getitem__)
            where = "every layer" if len(set(by_layer.values())) == 1 else f"best layer {best}"
            out.append(Metric(f"{method} {direction} ({where})", by_layer[best]))
    return out


def _baselines(summary: dict[str, Any]) -> list[Any]:
    from diag.report.sections import Table

    rows = [[int(la), *[summary[f"{m}_{d}_by_layer"][str(la)] for m in steer.METHODS for d in steer.DIRECTIONS]]
            for la in summary["layers"]]
    columns = ["layer", *[f"{m} {d}" for m in steer.METHODS for d in steer.DIRECTIONS]]
    return [Table("Mean held-out judge score over concepts per layer (0-2)", columns, rows)]


GUIDE = Guide(
    question="At which layer does a rank-1 direction steer SmolLM2 best, both ways? The cdas-steer study (CDAS, "
             "DAS, DiffMean, prompting; alpha chosen on held-out half A, scored on half B) repeated per layer.",
    limitations=[
        ("A cheap budget per layer (few training steps, two held-out prompts per concept and half, short answers): "
         "a trend over layers, not a precise score; differences of a few tenths are within noise."),
        ("Prompting does not depend on the layer: it is regenerated per layer with the same greedy decoding, so "
         "its line is flat up to batch-padding numerics; it marks what an instruction alone achieves."),
        "The judge is offline (lexicon + MiniLM similarity + perplexity buckets), as in cdas-steer.",
    ],
    headline=_headline,
    baselines=_baselines,
    captions={"layer_sweep": "Mean held-out judge score over concepts against the steered layer, per method."},
)


def audit_config(scale: float = 1.0) -> Config:
    """Two layers, one concept, two steps at scale 1 (a few CPU minutes); the four-layer sweep at scale >= 8."""
    if scale >= 8:
        return Config()
    return Config(layers=(6, 10), concepts=("dogs",), steps=max(2, int(2 * scale)), alphas=(0.2,), eval_prompts=2,
                  max_new_tokens=12)
