"""The figures a ``cdas-steer`` result stores: loss curves, the judge's alpha sweep, the frontier, measure curves."""

from __future__ import annotations

from typing import Any

import numpy as np

from diag.cdas.config import DIRECTIONS, VECTOR_METHODS
from diag.cdas.steer_measure import UNSTEERED
from diag.report.figures import integer_ticks

COLOURS = {"diffmean": "C0", "das": "C1", "cdas": "C2", "prompting": "C3", "prompting+cdas": "C4"}
CURVE_MEASURES = (("gain", "concept log-lik. gain (nats/token)"), ("cost", "fluency cost (nats/token)"),
                  ("relevance_sim", "instruction relevance (cosine)"), ("score", "judge score (0-2)"))


def figures(result: Any) -> dict[str, Any]:
    import matplotlib

    matplotlib.use("Agg")
    return {"loss_curves": loss_figure(result.curves), "alpha_sweep": judge_sweep_figure(result.alpha_sweep),
            "frontier": frontier_figure(result.points, result.budget), "curves": curves_figure(result.points)}


def loss_figure(curves: dict[str, list[float]]) -> Any:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, curve in curves.items():
        ax.plot(curve, label=name, lw=1)
    ax.set(xlabel="training step", ylabel="loss", title="rank-1 DII training loss")
    integer_ticks(ax.xaxis)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def judge_sweep_figure(alpha_sweep: list[dict[str, Any]]) -> Any:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, direction in zip(axes, DIRECTIONS, strict=True):
        for method in VECTOR_METHODS:
            points = [r for r in alpha_sweep if r["method"] == method and r["direction"] == direction]
            alphas = sorted({r["alpha"] for r in points})
            concept = [np.mean([r["concept_score"] for r in points if r["alpha"] == a]) for a in alphas]
            fluency = [np.mean([r["fluency"] for r in points if r["alpha"] == a]) for a in alphas]
            ax.plot(alphas, concept, marker="o", color=COLOURS[method], label=f"{method} concept")
            ax.plot(alphas, fluency, marker="x", ls="--", color=COLOURS[method], label=f"{method} fluency")
        ax.set(xlabel="alpha", title=f"{direction} (held-out half A)", xscale="symlog")
    axes[0].set_ylabel("judge score (0-2)")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    return fig


def _errors(points: list[dict[str, Any]], measure: str) -> np.ndarray:
    return np.array([[p[measure]["value"] - p[measure]["low"] for p in points],
                     [p[measure]["high"] - p[measure]["value"] for p in points]])


def frontier_figure(points: list[dict[str, Any]], budget: float) -> Any:
    """Per concept (rows) and direction (columns): gain against fluency cost, one line per method over alpha."""
    import matplotlib.pyplot as plt

    concepts = list(dict.fromkeys(p["concept"] for p in points))
    methods = [m for m in dict.fromkeys(p["method"] for p in points) if m != UNSTEERED]
    fig, axes = plt.subplots(len(concepts), 2, figsize=(10, 3.2 * len(concepts)), squeeze=False)
    for row, concept in zip(axes, concepts, strict=True):
        for ax, direction in zip(row, DIRECTIONS, strict=True):
            for method in methods:
                line = sorted((p for p in points if (p["concept"], p["method"], p["direction"]) ==
                               (concept, method, direction)), key=lambda p: p["alpha"])
                ax.errorbar([p["cost"]["value"] for p in line], [p["gain"]["value"] for p in line],
                            xerr=_errors(line, "cost"), yerr=_errors(line, "gain"), marker="o", ms=3, lw=1,
                            capsize=2, label=method, ls=":" if method.startswith("prompting") else "-",
                            color=COLOURS[method])
            ax.plot([0], [0], "k*", ms=9, label="unsteered")
            ax.axvline(budget, color="grey", ls="--", lw=1)
            ax.axhline(0, color="grey", lw=0.5)
            ax.set(title=f"{concept}, {direction}", xlabel="fluency cost (nats/token)",
                   ylabel="concept log-lik. gain (nats/token)")
    axes[0][1].legend(fontsize=7)
    fig.tight_layout()
    return fig


def curves_figure(points: list[dict[str, Any]]) -> Any:
    """Each measure against alpha, mean over concepts, per direction (rows) and method (lines)."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(CURVE_MEASURES), figsize=(4 * len(CURVE_MEASURES), 6.5), squeeze=False)
    steered = [m for m in dict.fromkeys(p["method"] for p in points) if m in (*VECTOR_METHODS, "prompting+cdas")]
    for row, direction in zip(axes, DIRECTIONS, strict=True):
        for ax, (measure, label) in zip(row, CURVE_MEASURES, strict=True):
            for method in steered:
                sel = [p for p in points if p["method"] == method and p["direction"] == direction]
                alphas = sorted({p["alpha"] for p in sel})
                mean = [np.mean([p[measure]["value"] for p in sel if p["alpha"] == a]) for a in alphas]
                ax.plot(alphas, mean, marker="o", ms=3, label=method, color=COLOURS[method])
            for method, colour in ((UNSTEERED, "k"), ("prompting", COLOURS["prompting"])):
                sel = [p[measure]["value"] for p in points if p["method"] == method and p["direction"] == direction]
                if sel:
                    ax.axhline(float(np.mean(sel)), color=colour, ls="--", lw=1, label=method)
            ax.set(title=f"{direction}: {label}", xlabel="alpha")
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    return fig
