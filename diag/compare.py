"""Which stored numbers of two to six runs of one analysis can be overlaid, read from their files (torch-free).

Each analysis declares the function that reads its comparable quantities from a stored run
(``Analysis.comparable``, ``run -> {Quantity: Series or None}``; those of the analyses shipped with diag are
here): curves (pass@k over k, a training loss over steps, IIA over layers) and bars (Lambda per condition, IIA per
variable, localisation per method). ``compare`` reads them from the runs' stored JSON and NPZ files, one
``Series`` per run and quantity, and the front ends only draw them (the app's Runs page overlays each ``Chart``
with a legend by run name). A quantity a run lacks (an older layout, a
mode it did not sample) is left out for that run, never guessed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from diag.errors import DiagError
from diag.run_dir import Run
from diag.runs import RunStore

if TYPE_CHECKING:
    from diag.contract import Analysis

MIN_RUNS, MAX_RUNS = 2, 6


@dataclass(frozen=True)
class Quantity:
    """What one chart shows: a curve over a numeric x, or bars over named categories."""

    title: str
    kind: Literal["line", "bar"]
    x_label: str
    y_label: str


@dataclass(frozen=True)
class Series:
    """One run's values of a quantity; ``low``/``high`` are its stored interval where it has one."""

    x: tuple[Any, ...]  # numbers for a line, category names for bars
    y: tuple[float, ...]
    low: tuple[float, ...] | None = None
    high: tuple[float, ...] | None = None


@dataclass
class Chart:
    quantity: Quantity
    series: dict[str, Series] = field(default_factory=dict)  # run id -> its values, in the order runs were given


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _point(value: Any) -> tuple[float, float | None, float | None] | None:
    """A stored number, or a ``{"value", "low", "high"}`` object: (value, low, high); None if neither."""
    if isinstance(value, dict):
        v = _number(value.get("value"))
        return None if v is None else (v, _number(value.get("low")), _number(value.get("high")))
    v = _number(value)
    return None if v is None else (v, None, None)


def _bars(named: dict[str, Any]) -> Series | None:
    """Bars from ``{category: number or {value, low, high}}``; intervals only if every bar has one."""
    points = {name: p for name, value in named.items() if (p := _point(value)) is not None}
    if not points:
        return None
    values = list(points.values())
    intervals = all(low is not None and high is not None for _, low, high in values)
    return Series(tuple(points), tuple(v for v, _, _ in values),
                  tuple(low for _, low, _ in values) if intervals else None,  # type: ignore[misc]
                  tuple(high for _, _, high in values) if intervals else None)  # type: ignore[misc]


def _curve(values: Any, start: int = 1) -> Series | None:
    """A curve from a list of numbers, x counting from ``start`` (steps, k)."""
    ys = [float(v) for v in np.asarray(values, dtype=float).ravel()] if values is not None else []
    return Series(tuple(range(start, start + len(ys))), tuple(ys)) if ys else None


def _dig(obj: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(obj, dict) or key not in obj:
            return None
        obj = obj[key]
    return obj


def _has(run: Run, name: str) -> bool:
    return (run.dir / name).is_file()


Extracted = dict[Quantity, Series | None]


def tir_quantities(run: Run) -> Extracted:
    out: Extracted = {}
    if _has(run, "metrics.npz"):
        arrays = run.read_arrays("metrics")
        for mode, title in (("tool", "pass@k with the tool"), ("text", "pass@k, text only")):
            if f"pass_{mode}_mean" in arrays:
                curve = _curve(arrays[f"pass_{mode}_mean"])
                low, high = arrays.get(f"pass_{mode}_low"), arrays.get(f"pass_{mode}_high")
                if curve is not None and low is not None and high is not None:
                    curve = Series(curve.x, curve.y, tuple(map(float, low)), tuple(map(float, high)))
                out[Quantity(title, "line", "k (samples per problem)", "pass@k")] = curve
    split = _dig(run.summary, "split_at_n")
    if isinstance(split, dict):
        out[Quantity("support split at n (share of problems)", "bar", "", "share")] = _bars(split)
    return out


def cdas_steer_quantities(run: Run) -> Extracted:
    data = run.read_json("steer.json") if _has(run, "steer.json") else {}
    out: Extracted = {Quantity(f"{method.upper()} training loss", "line", "step", "loss"): _curve(curve)
                      for method, curve in (data.get("curves") or {}).items()}
    table = data.get("table") or {}
    out[Quantity("held-out score (mean over concepts)", "bar", "", "score")] = _bars(
        {f"{method} {direction}": score for method, by_direction in table.items()
         for direction, score in (by_direction or {}).items()})
    return out


def cdas_sweep_quantities(run: Run) -> Extracted:
    scores = run.read_json("sweep.json").get("scores", {}) if _has(run, "sweep.json") else {}
    out: Extracted = {}
    methods = sorted({(m, d) for by_method in scores.values() for m, by_d in by_method.items() for d in by_d})
    for method, direction in methods:
        layers = sorted(scores, key=int)
        xs = [int(layer) for layer in layers if _number(_dig(scores[layer], method, direction)) is not None]
        ys = [float(scores[str(x)][method][direction]) for x in xs]
        out[Quantity(f"{method} {direction}: held-out score by layer", "line", "layer", "score")] = (
            Series(tuple(xs), tuple(ys)) if xs else None)
    return out


def cdas_train_quantities(run: Run) -> Extracted:
    data = run.read_json("train.json") if _has(run, "train.json") else {}
    return {Quantity("DII training loss", "line", "step", "loss"): _curve(data.get("curve")),
            Quantity("held-out loss", "bar", "", "loss"): _bars({"before": data.get("before"),
                                                                  "after": data.get("after")})}


def cdas_toy_quantities(run: Run) -> Extracted:
    data = run.read_json("toy.json") if _has(run, "toy.json") else {}
    summary = run.summary
    iia = {key.removeprefix("iia_"): value for key, value in summary.items() if key.startswith("iia_")}
    controls = {key.removeprefix("control_iia_"): value for key, value in summary.items()
                if key.startswith("control_iia_") and isinstance(value, dict)}
    out: Extracted = {Quantity("IIA of the aligned variables", "bar", "", "IIA"): _bars(iia),
                      Quantity("IIA of the controls", "bar", "", "IIA"): _bars(controls)}
    for objective, by_layer in (data.get("layer_sweep") or {}).items():
        layers = sorted(by_layer, key=int)
        out[Quantity(f"{objective} IIA by layer", "line", "layer", "IIA")] = Series(
            tuple(int(la) for la in layers), tuple(float(by_layer[la]) for la in layers))
    for name, curve in (data.get("curves") or {}).items():
        out[Quantity(f"training loss: {name}", "line", "step", "loss")] = _curve(curve)
    return out


def boundary_quantities(run: Run) -> Extracted:
    tables = run.read_json("tables.json") if _has(run, "tables.json") else {}
    policies = tables.get("policies") or {}
    several = len(policies) > 1

    def name(policy: str, what: str) -> str:
        return f"{policy} · {what}" if several else what

    lambdas = {name(p, c): v for p, data in policies.items() for c, v in (data.get("lambdas") or {}).items()}
    out: Extracted = {Quantity("Λ (boundary alignment) by condition", "bar", "", "Λ"): _bars(lambdas)}
    for metric in ("pearson", "topk_overlap"):
        agreement = {name(p, method): _dig(run.summary, p, "attribution_agreement", method, metric)
                     for p in policies for method in (_dig(run.summary, p, "attribution_agreement") or {})}
        out[Quantity(f"attribution agreement with G_S: {metric}", "bar", "", metric)] = _bars(agreement)
    return out


def episodes_quantities(run: Run) -> Extracted:
    arrays = run.read_arrays("episodes") if _has(run, "episodes.npz") else {}
    returns = arrays.get("returns")
    return {Quantity("return per episode", "bar", "", "return"): _bars(
        {f"episode {i}": float(r) for i, r in enumerate(returns)}) if returns is not None else None}


def credit_quantities(run: Run) -> Extracted:
    summary = run.summary
    read = _dig(summary, "scores", "rejected", "from_first_diff") or {}
    out: Extracted = {}
    for metric, title in (("auroc", "localisation AUROC (rejected answers)"),
                          ("top1", "localisation top-1 hit rate (rejected answers)")):
        out[Quantity(title, "bar", "", metric)] = _bars({method: _dig(values, metric)
                                                          for method, values in read.items()})
    out[Quantity("preference accuracy", "bar", "", "accuracy")] = _bars(
        {"all pairs": summary.get("preference_accuracy")})
    return out


def tabular_quantities(run: Run) -> Extracted:
    rows = run.read_json("per_seed.json") if _has(run, "per_seed.json") else []
    correlations = {key: float(np.mean([r[key] for r in rows])) for key in ("spearman", "pearson", "spearman_vs_r")
                    if rows and all(_number(r.get(key)) is not None for r in rows)}
    accuracy = run.read_arrays("tabular").get("preference_accuracy") if _has(run, "tabular.npz") else None
    return {Quantity("learned reward vs truth (mean over seeds)", "bar", "", "correlation"): _bars(correlations),
            Quantity("held-out preference accuracy per seed", "bar", "", "accuracy"): _bars(
                {f"seed {i}": float(a) for i, a in enumerate(accuracy)}) if accuracy is not None else None}


def capture_quantities(run: Run) -> Extracted:
    arrays = run.read_arrays("activations") if _has(run, "activations.npz") else {}
    by_layer = {}
    for site, values in arrays.items():
        layer = site.split(".", 1)[0].removeprefix("L")
        if layer.isdigit() and values.ndim == 2:
            by_layer[int(layer)] = float(np.linalg.norm(values, axis=-1).mean())
    layers = sorted(by_layer)
    return {Quantity("mean token norm by layer", "line", "layer", "mean |activation|"): Series(
        tuple(layers), tuple(by_layer[la] for la in layers)) if layers else None}


def check_comparable(store: RunStore, run_ids: list[str]) -> Analysis:
    """The one analysis of 2-6 finished runs, declared with its ``comparable`` quantities, or a DiagError saying
    why they cannot be overlaid."""
    # Imported here: a plugin declaring its quantities imports this module while the registry loads it.
    from diag.registry import RENAMED, find

    if not MIN_RUNS <= len(run_ids) <= MAX_RUNS:
        raise DiagError(f"overlays compare {MIN_RUNS} to {MAX_RUNS} runs, got {len(run_ids)}")
    infos = [store.info(run_id) for run_id in run_ids]
    analyses = sorted({RENAMED.get(info.analysis, info.analysis) for info in infos})  # runs stored under old names
    if len(analyses) > 1:
        raise DiagError(f"overlays compare runs of one analysis, got {', '.join(analyses)}")
    unfinished = [info.run_id for info in infos if info.status != "finished"]
    if unfinished:
        raise DiagError(f"only finished runs have stored results to overlay: {', '.join(unfinished)} "
                        f"{'is' if len(unfinished) == 1 else 'are'} not")
    analysis = find(analyses[0])  # None: an analysis no longer installed (a plugin's runs)
    if analysis is None or analysis.comparable is None:
        raise DiagError(f"{analyses[0]} runs store nothing this version knows how to overlay")
    return analysis


def compare(store: RunStore, run_ids: list[str]) -> list[Chart]:
    """The charts 2-6 finished runs of one analysis have in common (a chart any run has is kept), in the order the
    analysis lists them; each holds one series per run that stored the quantity."""
    analysis = check_comparable(store, run_ids)
    charts: dict[Quantity, Chart] = {}
    for run_id in run_ids:
        run = store.get(run_id)
        for quantity, series in analysis.comparable(run).items():
            if series is not None:
                charts.setdefault(quantity, Chart(quantity)).series[run.run_id] = series
    return list(charts.values())


def legend_names(store: RunStore, run_ids: list[str]) -> dict[str, str]:
    """What a legend calls each run: its label name if it has one, else its id (names that repeat get the id)."""
    infos = [store.info(run_id) for run_id in run_ids]
    names = [info.label.name for info in infos]
    return {info.run_id: (info.label.name if info.label.name and names.count(info.label.name) == 1
                          else f"{info.label.name} ({info.run_id})" if info.label.name else info.run_id)
            for info in infos}
