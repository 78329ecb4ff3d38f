"""TIR support expansion: does a Python tool let a model solve problems it never solves without one?

One analysis, two sources of rollouts: sampled here (any HF causal LM, SmolLM2 by default, on the seeded
problem suite, tool and text-only modes) or imported from a JSONL file made by an inference engine. Both end in
the same ``Result``: unbiased pass@k curves with bootstrap intervals over problems, the empirical support of each
mode, the expansion (tool only) and shrinkage (text only) sets with their rollouts, the four-way split at every
k, token costs, tool-call statistics and an execution audit that separates sandbox failures from the model's.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from diag.config_checks import config_from_dict
from diag.errors import DiagError
from diag.progress import Progress
from diag.report.figures import integer_ticks
from diag.report.sections import UNIT, Guide, Metric, Table
from diag.run_dir import Run
from diag.tir.config import TIR as ANALYSIS  # noqa: F401 -- the declared value, for callers
from diag.tir.config import Config
from diag.tir.metrics import bootstrap_mean_ci, four_way_split, pass_at_k_curve
from diag.tir.problems import FAMILIES, LEVELS, make_suite
from diag.tir.rollouts import MODES, Rollout

if TYPE_CHECKING:
    from matplotlib.figure import Figure

INFRA_FLAG_RATE = 0.01


def import_config(path: str | Path, n_bootstrap: int = 1000, seed: int = 0,
                  problems: str | Path | None = None) -> Config:
    """The config of an import run: the files' absolute paths and content hashes."""
    return pin_inputs(Config(rollouts_file=str(path), problems_file=None if problems is None else str(problems),
                            n_bootstrap=n_bootstrap, seed=seed))


def check_inputs(config: Config) -> None:
    """Read imported or problems files through once: a bad line fails before a run directory exists."""
    if config.rollouts_file is not None:
        _imported(config)
    else:
        _select_problems(config)


def pin_inputs(config: Config) -> Config:
    """Absolute paths and sha256 of the rollout and problems files, so an edited file is a new run."""
    from diag.files import check_text_file

    pinned = {}
    for name, what in (("rollouts", "rollout file"), ("problems", "problems file")):
        given = getattr(config, f"{name}_file")
        if given is None:
            continue
        path = Path(given)
        check_text_file(path, f"{what} {path}")
        pinned[f"{name}_file"] = str(path.resolve())
        if getattr(config, f"{name}_sha256") is None:  # a pinned hash stays: a changed file must fail, not re-pin
            pinned[f"{name}_sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    return replace(config, **pinned)


def _interval(value: float, low: float, high: float) -> dict[str, float]:
    return {"value": float(value), "low": float(low), "high": float(high)}


@dataclass
class Result:
    problems: list[dict[str, Any]]  # problem_id, family, level, question, answer (None when imported)
    rollouts: list[Rollout]
    source: dict[str, Any]  # model / file, isolation mode and its warning

    def __post_init__(self) -> None:
        self._index()

    # -- derived tables (pure functions of the rollouts) ------------------------------------------------
    def _index(self) -> None:
        ids = [p["problem_id"] for p in self.problems]
        position = {pid: i for i, pid in enumerate(ids)}
        self.n = {m: np.zeros(len(ids), dtype=np.int64) for m in MODES}
        self.c = {m: np.zeros(len(ids), dtype=np.int64) for m in MODES}
        for r in self.rollouts:
            self.n[r.mode][position[r.problem_id]] += 1
            self.c[r.mode][position[r.problem_id]] += r.correct
        if len(ids) == 0 or min(int(self.n[m].min()) for m in MODES) == 0:
            raise DiagError("every problem needs at least one rollout in each mode")
        self.k_max = int(min(self.n[m].min() for m in MODES))

    def pass_curves(self) -> dict[str, np.ndarray]:
        """Per-problem pass@k for k = 1..k_max, per mode: [problems, k_max]."""
        return {m: pass_at_k_curve(self.n[m], self.c[m], self.k_max) for m in MODES}

    def n_per_mode(self) -> dict[str, dict[str, int]]:
        """Samples per problem in each mode (smallest and largest over problems): modes may differ."""
        return {m: {"min": int(self.n[m].min()), "max": int(self.n[m].max())} for m in MODES}

    def split_at_n(self) -> dict[str, float]:
        """The four-way split at k = n, each mode at its own n per problem (all its samples).

        pass@n of a mode is 1 exactly when one of its n samples is correct, so this split is the support sets'
        shares whatever n each mode has; the split at a common k (``four_way_split`` of ``pass_curves``) is
        only defined up to ``k_max``, the smallest n, and equals these sets only when every n equals ``k_max``.
        """
        solved = {m: (self.c[m] > 0).astype(np.float64)[:, None] for m in MODES}
        return {name: float(v[0]) for name, v in four_way_split(solved["tool"], solved["text"]).items()}

    def support_sets(self) -> dict[str, list[str]]:
        ids = [p["problem_id"] for p in self.problems]
        tool, text = self.c["tool"] > 0, self.c["text"] > 0
        return {"expansion": [i for i, t, x in zip(ids, tool, text, strict=True) if t and not x],
                "shrinkage": [i for i, t, x in zip(ids, tool, text, strict=True) if x and not t],
                "preserved": [i for i, t, x in zip(ids, tool, text, strict=True) if t and x],
                "jointly_unsolved": [i for i, t, x in zip(ids, tool, text, strict=True) if not t and not x]}

    def rollouts_of(self, problem_id: str) -> list[Rollout]:
        return [r for r in self.rollouts if r.problem_id == problem_id]

    def audit(self) -> dict[str, Any]:
        """Tool executions by status; sandbox failures (infra_error) are counted apart from program errors."""
        statuses = [s for r in self.rollouts for s in r.exec_statuses]
        by_status = {s: statuses.count(s) for s in sorted(set(statuses))}
        infra = by_status.get("infra_error", 0)
        rate = infra / len(statuses) if statuses else 0.0
        flagged = rate > INFRA_FLAG_RATE
        warning = (f"FLAGGED: {rate:.1%} of tool executions failed inside the sandbox itself (> 1%): tool-mode "
                   "numbers measure a broken executor, not the model") if flagged else None
        return {"executions": len(statuses), "by_status": by_status, "infra_errors": infra,
                "infra_failure_rate": rate, "flagged": flagged, "warning": warning}

    def tool_stats(self) -> dict[str, Any]:
        tool = [r for r in self.rollouts if r.mode == "tool"]
        calls = np.array([r.tool_calls for r in tool], dtype=float)
        correct = [r for r in tool if r.correct]
        firsts = [r.first_call_token for r in tool if r.first_call_token is not None]
        cost = np.array([r.generated_tokens + r.tool_output_tokens for r in tool], dtype=float)
        return {
            "calls_per_rollout": float(calls.mean()) if len(tool) else 0.0,
            "rollouts_with_a_call": float((calls > 0).mean()) if len(tool) else 0.0,
            "calls_per_correct_answer": float(sum(r.tool_calls for r in correct) / len(correct)) if correct else None,
            "first_call_token_mean": float(np.mean(firsts)) if firsts else None,
            "tool_input_tokens_mean": float(np.mean([r.tool_input_tokens for r in tool])) if tool else 0.0,
            "tool_output_tokens_mean": float(np.mean([r.tool_output_tokens for r in tool])) if tool else 0.0,
            "cost_tokens_mean": float(cost.mean()) if len(tool) else 0.0,
            "correct_with_a_call": float(np.mean([r.tool_calls > 0 for r in correct])) if correct else None,
        }

    def tokens_per_correct(self) -> dict[str, float | None]:
        """Sampled plus tool-output tokens spent per correct answer (None when a mode never answers right)."""
        out: dict[str, float | None] = {}
        for mode in MODES:
            rs = [r for r in self.rollouts if r.mode == mode]
            right = sum(r.correct for r in rs)
            out[mode] = sum(r.generated_tokens + r.tool_output_tokens for r in rs) / right if right else None
        return out

    def curves_with_ci(self) -> dict[str, dict[str, np.ndarray]]:
        n_boot, seed = int(self.source.get("n_bootstrap", 1000)), int(self.source.get("seed", 0))
        out = {}
        for mode, per_problem in self.pass_curves().items():
            mean, low, high = bootstrap_mean_ci(per_problem, n_boot, seed)
            out[mode] = {"mean": mean, "low": low, "high": high}
        return out

    # -- contract -------------------------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        curves = self.curves_with_ci()
        sets = self.support_sets()
        split = four_way_split(*self.pass_curves().values())
        k_report = sorted({1, self.k_max} | {k for k in (4, 16, 64, 256) if k < self.k_max})
        audit = self.audit()
        warnings = [w for w in (audit["warning"], self.source.get("isolation_warning")) if w]
        summary: dict[str, Any] = {
            "warning": " | ".join(warnings) if warnings else None,
            "problems": len(self.problems),
            "n_per_mode": self.n_per_mode(),
            "k_max": self.k_max,
            "k_equals_n": ("support sets and split_at_n: each mode at its own n per problem (all its samples); "
                           "pass@k curves and the split by k: k = 1..k_max, the smallest n of any problem and mode"),
            "source": self.source,
        }
        for k in k_report:
            summary[f"pass@{k}"] = {m: _interval(curves[m]["mean"][k - 1], curves[m]["low"][k - 1],
                                                 curves[m]["high"][k - 1]) for m in MODES}
        summary["support_size"] = {m: int((self.c[m] > 0).sum()) for m in MODES}
        summary["expansion"] = sets["expansion"]
        summary["shrinkage"] = sets["shrinkage"]
        summary["split_at_n"] = self.split_at_n()
        summary["split_at_k1"] = {name: float(v[0]) for name, v in split.items()}
        summary["tokens_per_correct"] = self.tokens_per_correct()
        summary["tool_calls"] = self.tool_stats()
        summary["execution_audit"] = audit
        summary["pass@1_by_family"] = self.pass1_by_family()
        return summary

    def pass1_by_family(self) -> dict[str, dict[str, float]]:
        families = sorted({p["family"] for p in self.problems})
        out = {}
        for family in families:
            mask = np.array([p["family"] == family for p in self.problems])
            out[family] = {m: float((self.c[m][mask] / self.n[m][mask]).mean()) for m in MODES}
        return out

    def save(self, run: Run) -> None:
        run.write_json("problems.json", self.problems)
        run.write_json("source.json", self.source)
        run.write_text("rollouts.jsonl", "".join(json.dumps(r.to_dict()) + "\n" for r in self.rollouts))
        curves = self.curves_with_ci()
        split = four_way_split(*self.pass_curves().values())
        run.write_arrays("metrics", {
            **{f"n_{m}": self.n[m] for m in MODES}, **{f"c_{m}": self.c[m] for m in MODES},
            **{f"pass_{m}_{stat}": v for m in MODES for stat, v in curves[m].items()},
            **{f"split_{name}": v for name, v in split.items()},
        })
        run.write_json("support_sets.json", self.support_sets())
        run.write_figure("pass_at_k", self.pass_at_k_figure(curves))
        run.write_figure("split_flow", self.split_figure(split))

    @classmethod
    def load(cls, run: Run) -> Result:
        rollouts = [Rollout(**json.loads(line)) for line in (run.dir / "rollouts.jsonl").read_text().splitlines()]
        return cls(run.read_json("problems.json"), rollouts, run.read_json("source.json"))

    # -- figures --------------------------------------------------------------------------------------------
    def _title_suffix(self) -> str:
        audit = self.audit()
        return f"\n{audit['warning']}" if audit["flagged"] else ""

    def pass_at_k_figure(self, curves: dict[str, dict[str, np.ndarray]]) -> Figure:
        """Unbiased pass@k of both modes with bootstrap 95% bands over problems."""
        from matplotlib.figure import Figure

        fig = Figure(figsize=(6.4, 4.0))
        ax = fig.subplots()
        ks = np.arange(1, self.k_max + 1)
        for mode, color in zip(MODES, ("tab:orange", "tab:blue"), strict=True):
            ax.plot(ks, curves[mode]["mean"], color=color, label=f"{mode} mode")
            ax.fill_between(ks, curves[mode]["low"], curves[mode]["high"], color=color, alpha=0.25)
        ax.set(xscale="log", xlabel="k (samples)", ylabel="pass@k", ylim=(-0.02, 1.02),  # 0 and 1 stay visible
               title=f"pass@k over {len(self.problems)} problems (95% bootstrap bands){self._title_suffix()}")
        ax.set_xscale("log", base=2)
        integer_ticks(ax.xaxis)
        ax.legend()
        return fig

    def split_figure(self, split: dict[str, np.ndarray]) -> Figure:
        """Where problems flow as k grows: tool-only, text-only, both, neither (expected fractions)."""
        from matplotlib.figure import Figure

        fig = Figure(figsize=(6.4, 4.0))
        ax = fig.subplots()
        ks = np.arange(1, self.k_max + 1)
        names = ["preserved", "expansion", "shrinkage", "jointly_unsolved"]
        colors = ["tab:green", "tab:orange", "tab:red", "lightgray"]
        ax.stackplot(ks, *[split[n] for n in names], labels=[n.replace("_", " ") for n in names], colors=colors)
        ax.set(xlabel="k (samples)", ylabel="share of problems (expected)", ylim=(0, 1),
               title=f"Four-way split of problems by k{self._title_suffix()}")
        ax.set_xscale("log", base=2)
        integer_ticks(ax.xaxis)
        ax.legend(loc="upper left", fontsize=8)
        return fig


def export_jsonl(run: Run, path: Path) -> dict[str, int]:
    """Write a run's rollouts in the import schema; for an unfinished run, those of problems done in both modes.

    This is how a killed or still-running sampling job can be analysed early: export, then ``diag tir import``.
    """
    if run.finished:
        result = Result.load(run)
        rollouts, problems = [r.to_dict() for r in result.rollouts], result.problems
    else:
        state = run.load_checkpoint()
        if state is None or "state" not in state:
            raise DiagError(f"run {run.run_id} has neither a result nor a checkpoint to export")
        rollouts = state["state"]["rollouts"]
        problems = _select_problems(config_from_dict(Config, run.config))
    modes: dict[str, set[str]] = {}
    for r in rollouts:
        modes.setdefault(r["problem_id"], set()).add(r["mode"])
    meta = {p["problem_id"]: {"family": p["family"], "level": p["level"]} for p in problems}
    complete = [r for r in rollouts if modes[r["problem_id"]] == set(MODES)]
    Path(path).write_text("".join(json.dumps({**r, **meta[r["problem_id"]]}) + "\n" for r in complete))
    return {"rollouts": len(complete), "problems": len({r["problem_id"] for r in complete})}


def _select_problems(config: Config) -> list[dict[str, Any]]:
    """The problems to sample, in sampling order: the user's problems file in file order, or the generated suite's
    chosen cells round-robin over (family, level), so any prefix of the jobs covers every cell."""
    from diag.tir.importer import read_problems

    if config.problems_file is not None:
        _check_pinned(config)
        problems = list(read_problems(Path(config.problems_file)).values())
        if not problems:
            raise DiagError(f"problems file {config.problems_file} holds no problems")
        return problems
    unknown = [f for f in config.families if f not in FAMILIES] + [str(v) for v in config.levels if v not in LEVELS]
    if unknown:
        raise DiagError(f"unknown famil(ies)/level(s) {', '.join(unknown)}: families {FAMILIES}, levels {LEVELS}")
    problems = [p.to_dict() for p in make_suite(config.per_cell, config.suite_seed)
                if p.family in config.families and p.level in config.levels]
    if not problems:
        raise DiagError("no problems selected")
    return sorted(problems, key=lambda p: (int(p["problem_id"].rsplit("-", 1)[1]), p["family"], p["level"]))


def _check_pinned(config: Config) -> None:
    """The rollout and problems files still have the sha256 the config pinned (the run id is made from it)."""
    for name in ("rollouts", "problems"):
        given, pinned = getattr(config, f"{name}_file"), getattr(config, f"{name}_sha256")
        if given is None or pinned is None:
            continue
        path = Path(given)
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None
        if digest != pinned:
            raise DiagError(f"{path} changed since this run was configured (sha256 mismatch); start it again")


def _imported(config: Config) -> Result:
    """Read (and grade) the imported rollouts; every check runs before a run directory exists (see ``run``)."""
    from diag.tir.importer import read_problems, read_rollouts

    _check_pinned(config)
    known = read_problems(Path(config.problems_file)) if config.problems_file is not None else None
    rollouts, meta = read_rollouts(Path(config.rollouts_file or ""), known)
    problems = [{"problem_id": pid, **m} for pid, m in meta.items()]
    source = {"kind": "imported", "file": config.rollouts_file, "sha256": config.rollouts_sha256,
              "n_bootstrap": config.n_bootstrap, "seed": config.seed}
    if known is not None:
        source.update(problems_file=config.problems_file, problems_sha256=config.problems_sha256,
                      problems_without_rollouts=len(set(known) - set(meta)),
                      graded_here="lines without \"correct\" graded by our checker against the problems file")
    return Result(problems, rollouts, source)


def compute(config: Config, run: Run, progress: Progress) -> Result:
    if config.rollouts_file is not None:
        return _imported(config)
    problems = _select_problems(config)

    import torch

    from diag.checkpoint import run_steps
    from diag.tir.decoding import BatchDecoder
    from diag.tir.problems import Problem
    from diag.tir.rollouts import sample_rollouts
    from diag.tir.sandbox import Sandbox
    from diag.zoo.lm import load_lm_numerics

    model, tokenizer, numerics = load_lm_numerics(config.model, config.device, config.dtype)
    chunks = [problems[i:i + config.problems_per_batch] for i in range(0, len(problems), config.problems_per_batch)]
    jobs = [(mode, chunk) for chunk in chunks for mode in MODES]
    integer_answers = all(isinstance(p["answer"], int) for p in problems)  # one prompt for the whole run
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    with Sandbox(workers=config.workers) as sandbox:
        def step(state: dict[str, Any], i: int) -> dict[str, Any]:
            mode, chunk = jobs[i]
            generator = torch.Generator().manual_seed(config.seed * 1_000_003 + i)  # resume-exact per job
            decoder = BatchDecoder(model, config.temperature, config.max_new_tokens, generator, pad_id)
            batch = sample_rollouts(model, tokenizer, [Problem(**p) for p in chunk], mode, config.n_samples,
                                    decoder, sandbox, config.max_tool_calls, integer_answers)
            return {"rollouts": state["rollouts"] + [r.to_dict() for r in batch]}

        state = run_steps(run, len(jobs), {"rollouts": []}, step, progress=progress, message="rollouts")
        isolation, warning = sandbox.isolation, sandbox.warning
    source = {"kind": "sampled", "model": config.model, "dtype": config.dtype, "numerics": numerics,
              **({"problems_file": config.problems_file, "problems_sha256": config.problems_sha256}
                 if config.problems_file is not None else {}),
              "isolation": isolation, "isolation_warning": warning, "n_bootstrap": config.n_bootstrap,
              "seed": config.seed}
    return Result(problems, [Rollout(**r) for r in state["rollouts"]], source)


def audit_config(scale: float = 1.0) -> Config:
    """One problem per (family, level) cell and 4 samples per mode: ~100 rollouts, ~3 min on 2 CPU cores."""
    return Config(per_cell=1, n_samples=max(4, int(4 * scale)), max_new_tokens=32, problems_per_batch=4,
                  dtype="bfloat16")


def n_label(summary: dict[str, Any]) -> str:
    """Samples per problem in each mode ("text 4, tool 8"; a range when problems differ); runs saved before n
    was reported per mode show their one n."""
    if "n_per_mode" not in summary:
        return str(summary.get("samples_per_problem_per_mode", "?"))
    return ", ".join(f"{m} {v['min']}" if v["min"] == v["max"] else f"{m} {v['min']}-{v['max']}"
                     for m, v in sorted(summary["n_per_mode"].items()))


def _headline(summary: dict[str, Any]) -> list[Metric]:
    k_max = summary["k_max"]
    metrics = [Metric("samples per problem, by mode (k = n: each mode at its own n)", n_label(summary))]
    for k in sorted({1, k_max}):
        for mode in MODES:
            v = summary[f"pass@{k}"][mode]
            metrics.append(Metric(f"pass@{k} ({mode})", v["value"], v["low"], v["high"], bounds=UNIT))
    metrics += [Metric("expansion at k = n (solved only with the tool)", count_and_share(summary, "expansion")),
                Metric("shrinkage at k = n (solved only without it)", count_and_share(summary, "shrinkage")),
                Metric("infrastructure failure rate", summary["execution_audit"]["infra_failure_rate"])]
    if summary.get("warning"):
        metrics.insert(0, Metric("WARNING", summary["warning"]))
    return metrics


SUPPORT_SETS = ("expansion", "shrinkage", "preserved", "jointly_unsolved")
PAPER_SPLIT = {"expansion": 0.154, "shrinkage": 0.018, "preserved": 0.666, "jointly_unsolved": 0.162}


def split_at_n(summary: dict[str, Any]) -> dict[str, float]:
    """Share of problems in each support set at k = n (runs stored before ``split_at_n``: ``split_at_kN``)."""
    return summary.get("split_at_n") or summary[f"split_at_k{summary.get('samples_per_problem_per_mode')}"]


def set_count(summary: dict[str, Any], name: str) -> int:
    """Problems in one support set at k = n (each mode at its own n): its share times the number of problems."""
    return round(split_at_n(summary)[name] * summary["problems"])


def count_and_share(summary: dict[str, Any], name: str) -> str:
    """A support set as "3 of 12 problems (25.0%)": the count and the share, always together."""
    return f"{set_count(summary, name)} of {summary['problems']} problems ({split_at_n(summary)[name]:.1%})"


def _baselines(summary: dict[str, Any]) -> list[Table]:
    split = split_at_n(summary)
    n = n_label(summary)
    return [Table(f"Four-way split at k = n ({n}) vs the paper (Qwen3-8B, Omni-MATH-512, k = 256)",
                  ["support set", "problems (count)", "share of problems", "paper (share)"],
                  [[name.replace("_", " "), set_count(summary, name), split[name], PAPER_SPLIT[name]]
                   for name in SUPPORT_SETS])]


def pass_metrics(summary: dict[str, Any]) -> list[Metric]:
    """Every stored pass@k of both modes with its bootstrap interval (what the pass@k figure draws)."""
    ks = sorted(int(key[5:]) for key in summary if key.startswith("pass@") and key[5:].isdigit())
    return [Metric(f"pass@{k} ({mode})", v["value"], v["low"], v["high"], bounds=UNIT)
            for k in ks for mode, v in summary[f"pass@{k}"].items()]


def _figure_metrics(summary: dict[str, Any]) -> dict[str, list[Metric]]:
    return {"pass_at_k": pass_metrics(summary)}


GUIDE = Guide(
    question=(
        "Does a Python tool expand what the model can solve? We compare unbiased pass@k of tool-using and "
        "text-only sampling up to k = n, and list the problems solved only with the tool (expansion) and only "
        "without it (shrinkage)."
    ),
    limitations=[
        "Empirical support at a sample budget n: a problem never solved in n samples may still be solvable.",
        "Bootstrap intervals resample problems only; per-problem sampling noise at small n is not in them.",
        "The suite is synthetic arithmetic; a 135M model's tool use is mostly copying the question into print().",
        ("Imported rollouts with a \"correct\" field are trusted as labelled; lines without one are graded by our "
         "checker (the Answer: line, else the last \\boxed{N}) against the problems file."),
        ("When the mode of an imported rollout is inferred, it means 'a tool was called', not 'a tool was offered'; "
         "give the mode explicitly to compare tool-offered and text-only sampling."),
    ],
    headline=_headline,
    baselines=_baselines,
    figure_metrics=_figure_metrics,
    captions={"pass_at_k": "Unbiased pass@k per mode with 95% bootstrap bands over problems.",
              "split_flow": "Expected share of problems solved by tool only, text only, both or neither at each k."},
)

