"""RA-NLD analysis: how stable are a vanilla and a robust policy's decision boundaries under shifts and attacks?

For each policy, episodes are played on clean screens (twice, with independent seeds), under each natural shift
and under each attack; every visited state's boundary gradient v(s) is computed, and the principal direction G_S
of each state set is compared with the clean baseline by the Feature Correlation Quotient
Lambda(S', S) = G'^T L(S) G' / lambda_max(L(S)) (see ``diag.boundary.nld``). Over time, the per-state gradient
norm trace and its variance (oscillation); over space, G_S as an image, its Fourier spectrum, the overlap of the
two policies' most sensitive pixels (disjointness), and captum's Saliency, Integrated Gradients and Occlusion maps
on the same states as baselines.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from diag.boundary.bootstrap import QuotientBootstrap
from diag.boundary.condition import CONDITIONS, perturbation
from diag.boundary.config import BOUNDARY as ANALYSIS  # noqa: F401 -- the declared value, for callers
from diag.boundary.config import BoundaryConfig as Config
from diag.boundary.policy.load import Policy, load_for_play
from diag.boundary.policy.play import EnvironmentStuck, play
from diag.device import exact_matmul, resolve_device
from diag.errors import DiagError
from diag.progress import Progress
from diag.report.figures import integer_ticks
from diag.report.sections import UNIT, Guide, Metric, Table
from diag.run_dir import Run

if TYPE_CHECKING:
    from matplotlib.figure import Figure

LAMBDA_FORMULA = "Lambda(S', S) = G'^T L(S) G' / lambda_max(L(S)), L(S) = sum_s v(s) v(s)^T, G' = top eigvec of L(S')"
# Korkmaz (ICML 2024), vanilla DDQN, Lambda against the clean baseline (clean = independent clean episodes).
PAPER_LAMBDA = {
    "road_runner": {"clean": 0.77, "blur": 0.25, "rotation": 0.34},
    "pong": {"clean": 0.49, "blur": 0.08, "rotation": 0.14},
    "freeway": {"clean": 0.99, "blur": 0.27, "rotation": 0.14},
    "bank_heist": {"clean": 0.84, "blur": 0.10, "rotation": 0.30},
}
ATTRIBUTIONS = ("saliency", "integrated_gradients", "occlusion")


@dataclass
class PolicyResult:
    game: str
    lambdas: dict[str, float]  # condition -> Lambda(S_condition, S_clean)
    lambda_intervals: dict[str, tuple[float, float]]  # condition -> 95% bootstrap percentile interval
    scores: dict[str, float]  # condition -> mean score within max_steps
    directions: dict[str, np.ndarray]  # condition -> G_S as [4, 84, 84]
    spectrum: np.ndarray  # log |FFT2| of the clean G_S (mean over the stack), zero frequency centred [84, 84]
    traces: np.ndarray  # [n] gradient norm per clean state
    trace_episode: np.ndarray  # [n] episode index of each clean state
    attributions: dict[str, np.ndarray]  # method -> mean |attribution| map [4, 84, 84]
    format: str = "diag-qnet-v1"  # the policy file's format (see diag.boundary.policy.load.FORMATS)

    def first_episode_trace(self) -> np.ndarray:
        """The gradient-norm trace of the first clean episode divided by its mean (what the figures draw)."""
        first = self.traces[self.trace_episode == self.trace_episode[0]]
        return first / first.mean()

    def sensitivity_map(self) -> np.ndarray:
        """|G_S| of the clean states, mean over the frame stack, scaled to [0, 1]: an overlay for screens."""
        magnitude = np.abs(self.directions["clean"]).mean(axis=0)
        return magnitude / magnitude.max()

    def oscillation(self) -> dict[str, float]:
        """Mean over episodes of the variance of the gradient-norm trace, raw and relative to its mean^2."""
        per_ep = [self.traces[self.trace_episode == e] for e in np.unique(self.trace_episode)]
        var = float(np.mean([t.var() for t in per_ep]))
        rel = float(np.mean([t.var() / max(t.mean() ** 2, 1e-30) for t in per_ep]))
        return {"variance": var, "relative_variance": rel, "mean_norm": float(self.traces.mean())}


@dataclass
class Result:
    policies: dict[str, PolicyResult]
    topk_fraction: float
    action_set: str = ""  # which of the game's action sets the policies played with
    device: str = "cpu"
    tf32: bool = False  # whether gradients and attributions ran with TF32 allowed (CUDA only)

    def summary(self) -> dict[str, Any]:
        from diag.boundary.nld import top_k_overlap

        game = next(iter(self.policies.values())).game
        out: dict[str, Any] = {"game": game, "action_set": self.action_set, "device": self.device,
                               "tf32": self.tf32, "lambda_formula": LAMBDA_FORMULA,
                               "paper_lambda_vanilla": PAPER_LAMBDA.get(game, {})}
        for name, p in self.policies.items():
            out[name] = {"format": p.format, "lambda": p.lambdas,
                         "lambda_interval": {c: list(v) for c, v in p.lambda_intervals.items()},
                         "score_within_cap": p.scores,
                         "oscillation": p.oscillation(), "attribution_agreement": self._agreement(p)}
        names = list(self.policies)
        if len(names) == 2:
            a, b = (self.policies[n].directions["clean"] for n in names)
            overlap = top_k_overlap(a, b, self.topk_fraction)
            out["disjointness"] = {"policies": names, "topk_fraction": self.topk_fraction,
                                   "topk_overlap": overlap, "disjointness": 1 - overlap,
                                   "chance_overlap": self.topk_fraction,
                                   "cosine_G": float(np.dot(a.ravel(), b.ravel()))}
        return out

    def _agreement(self, p: PolicyResult) -> dict[str, dict[str, float]]:
        """Pearson correlation and top-k overlap of each captum map with |G_S| (summed over the stack)."""
        from diag.boundary.nld import top_k_overlap

        g = np.abs(p.directions["clean"])
        return {m: {"pearson": float(np.corrcoef(g.ravel(), a.ravel())[0, 1]),
                    "topk_overlap": top_k_overlap(g, a, self.topk_fraction)} for m, a in p.attributions.items()}

    def save(self, run: Run) -> None:
        for i, p in enumerate(self.policies.values()):  # policy names may be paths: files are numbered
            run.write_arrays(f"policy{i}", {**{f"G_{c}": d for c, d in p.directions.items()},
                                         **{f"attr_{m}": a for m, a in p.attributions.items()},
                                         "spectrum": p.spectrum, "traces": p.traces,
                                         "trace_episode": p.trace_episode})
        run.write_json("tables.json", {"order": list(self.policies), "topk_fraction": self.topk_fraction,
                                       "action_set": self.action_set, "device": self.device, "tf32": self.tf32,
                                       "policies": {n: {"game": p.game, "lambdas": p.lambdas,
                                                        "lambda_intervals": p.lambda_intervals, "scores": p.scores,
                                                        "format": p.format}
                                                    for n, p in self.policies.items()}})
        run.write_figure("lambda_table", self.lambda_figure())
        run.write_figure("principal_directions", self.direction_figure())
        run.write_figure("oscillation", self.oscillation_figure())
        run.write_figure("attributions", self.attribution_figure())
        if len(self.policies) == 2:
            run.write_figure("disjointness", self.disjointness_figure())

    @classmethod
    def load(cls, run: Run) -> Result:
        from diag.boundary.nld import fourier_spectrum

        tables = run.read_json("tables.json")
        policies = {}
        for i, name in enumerate(tables["order"]):  # json keys come back sorted; order matters for the figures
            t, arrays = tables["policies"][name], run.read_arrays(f"policy{i}")
            directions = {k[2:]: v for k, v in arrays.items() if k.startswith("G_")}
            policies[name] = PolicyResult(
                t["game"], t["lambdas"], {c: tuple(v) for c, v in t.get("lambda_intervals", {}).items()},
                t["scores"], directions,
                arrays["spectrum"] if "spectrum" in arrays else fourier_spectrum(directions["clean"]),  # older runs
                arrays["traces"], arrays["trace_episode"],
                {k[5:]: v for k, v in arrays.items() if k.startswith("attr_")}, t.get("format", "diag-qnet-v1"))
        return cls(policies, tables["topk_fraction"], tables.get("action_set", ""), tables.get("device", "cpu"),
                   tables.get("tf32", False))

    # -- figures ---------------------------------------------------------------------------------
    def lambda_figure(self) -> Figure:
        """Lambda per condition for each policy with its 95% bootstrap interval over states; the paper's vanilla
        reference values as black marks."""
        from matplotlib.figure import Figure

        fig = Figure(figsize=(8, 3.6))
        ax = fig.subplots()
        conditions = list(next(iter(self.policies.values())).lambdas)
        width = 0.8 / len(self.policies)
        for i, (name, p) in enumerate(self.policies.items()):
            xs = np.arange(len(conditions)) + i * width
            ax.bar(xs, [p.lambdas[c] for c in conditions], width, label=name)
            low, high = np.array([p.lambda_intervals.get(c, (np.nan, np.nan)) for c in conditions]).T
            # The interval as drawn, not as +-errors: at tiny budgets it can miss the point estimate.
            ax.vlines(xs, low, high, color="black", lw=1)
            ax.scatter(np.repeat(xs, 2), np.concatenate([low, high]), color="black", marker="_", s=40)
        ref = PAPER_LAMBDA.get(next(iter(self.policies.values())).game, {})
        xs = [j for j, c in enumerate(conditions) if c in ref]
        ax.scatter(np.array(xs) + 0.4 - width / 2, [ref[conditions[j]] for j in xs], color="black", marker="_",
                   s=300, zorder=3, label="paper, vanilla DDQN")
        ax.set_xticks(np.arange(len(conditions)) + 0.4 - width / 2, conditions, rotation=30)
        ax.set(ylabel="Lambda(S_condition, S_clean)", ylim=(0, 1.05), title="Feature Correlation Quotient")
        ax.legend(fontsize=8)
        fig.tight_layout()
        return fig

    def direction_figure(self) -> Figure:
        """G_S (mean over the frame stack) and its log-magnitude 2-D Fourier spectrum, per policy."""
        from matplotlib.figure import Figure

        fig = Figure(figsize=(7, 3 * len(self.policies)))
        axes = fig.subplots(len(self.policies), 2, squeeze=False)
        for row, (name, p) in zip(axes, self.policies.items(), strict=True):
            g = p.directions["clean"]
            lim = np.abs(g.mean(axis=0)).max()
            image = row[0].imshow(g.mean(axis=0), cmap="RdBu_r", vmin=-lim, vmax=lim)
            fig.colorbar(image, ax=row[0], shrink=0.8, label="G_S")
            row[0].set_title(f"{name}: G_S", fontsize=9)
            image = row[1].imshow(p.spectrum, cmap="magma")
            fig.colorbar(image, ax=row[1], shrink=0.8, label="log magnitude")
            row[1].set_title("log |FFT2(G_S)|", fontsize=9)
            for ax in row:
                ax.axis("off")
        fig.tight_layout()
        return fig

    def oscillation_figure(self) -> Figure:
        """Gradient-norm trace over the first clean episodes, each policy normalised by its own mean."""
        from matplotlib.figure import Figure

        fig = Figure(figsize=(8, 3.4))
        ax = fig.subplots()
        for name, p in self.policies.items():
            osc = p.oscillation()
            ax.plot(p.first_episode_trace(), lw=0.8,
                    label=f"{name} (var {osc['variance']:.3g}, relative var {osc['relative_variance']:.3g})")
        ax.set(xlabel="agent step (episode 0)", ylabel="||v(s_t)|| / mean", title="Gradient-norm trace")
        integer_ticks(ax.xaxis)
        ax.legend(fontsize=8)
        fig.tight_layout()
        return fig

    def disjointness_figure(self) -> Figure:
        """Top-k most sensitive pixels of |G_S| (summed over the stack) of the two policies, and their overlap."""
        from matplotlib.figure import Figure

        fig = Figure(figsize=(8, 3))
        axes = fig.subplots(1, 3)
        masks = []
        for ax, (name, p) in zip(axes, self.policies.items(), strict=False):
            g = np.abs(p.directions["clean"]).sum(axis=0)
            k = max(1, int(self.topk_fraction * g.size))
            mask = g >= np.partition(g.ravel(), -k)[-k]
            masks.append(mask)
            fig.colorbar(ax.imshow(g, cmap="viridis"), ax=ax, shrink=0.8).ax.tick_params(labelsize=6)
            ax.set_title(f"|G_S| {name}", fontsize=8)
        axes[2].imshow(np.stack([masks[0], masks[1], np.zeros_like(masks[0])], axis=-1).astype(float))
        axes[2].set_title(f"top {self.topk_fraction:.0%}: red/green, both yellow", fontsize=8)
        for ax in axes:
            ax.axis("off")
        fig.tight_layout()
        return fig

    def attribution_figure(self) -> Figure:
        """|G_S| beside captum's mean |Saliency|, |Integrated Gradients| and |Occlusion| on the same states."""
        from matplotlib.figure import Figure

        fig = Figure(figsize=(11, 2.6 * len(self.policies)))
        axes = fig.subplots(len(self.policies), 1 + len(ATTRIBUTIONS), squeeze=False)
        for row, (name, p) in zip(axes, self.policies.items(), strict=True):
            maps = {"|G_S|": np.abs(p.directions["clean"])} | p.attributions
            for ax, (method, m) in zip(row, maps.items(), strict=True):
                image = ax.imshow(m.sum(axis=0), cmap="viridis")
                fig.colorbar(image, ax=ax, shrink=0.8).ax.tick_params(labelsize=6)  # each map on its own scale
                ax.set_title(f"{name}: {method}", fontsize=7)
                ax.axis("off")
        fig.tight_layout()
        return fig


def attribution_maps(network: torch.nn.Module, states: torch.Tensor, ig_steps: int) -> dict[str, np.ndarray]:
    """Mean absolute captum attribution of the greedy action's Q-value over ``states``."""
    from captum.attr import IntegratedGradients, Occlusion, Saliency

    with torch.no_grad():
        target = network(states).argmax(dim=1)  # captum runs on the states' device; maps come back to the host
    maps = {
        "saliency": Saliency(network).attribute(states, target=target, abs=True),
        "integrated_gradients": IntegratedGradients(network).attribute(
            states, baselines=torch.zeros_like(states), target=target, n_steps=ig_steps, internal_batch_size=64),
        "occlusion": Occlusion(network).attribute(states, target=target, sliding_window_shapes=(4, 6, 6),
                                                   strides=(4, 3, 3), baselines=0.0, perturbations_per_eval=64),
    }
    return {k: v.abs().mean(dim=0).detach().cpu().numpy() for k, v in maps.items()}


def analyse_policy(name: str, policy: Policy, config: Config, run: Run, progress: Progress) -> PolicyResult:
    """All state sets of one policy; each finished condition is checkpointed so a killed run resumes there."""
    from diag.boundary import nld

    saved = run.load_checkpoint() or {}
    done: dict[str, Any] = saved.get(name, {})
    base = None
    sets = ["clean", "clean_independent", *config.conditions]
    for i, condition in enumerate(sets):
        if condition in done and condition != "clean":  # clean comes first and is replayed for its gradients
            continue
        torch.manual_seed(config.seed + i)
        seed = config.seed + (1000 if condition == "clean_independent" else 0)
        perturb = perturbation("clean" if condition == "clean_independent" else condition, policy.network,
                               config.eps, config.pgd_steps)
        episodes = play(policy.network, policy.game, config.episodes, config.max_steps, seed, perturb,
                        keep_states=True, progress=progress, message=f"{name}: {condition}",
                        full_action_space=config.full_action_space)
        grads = nld.boundary_gradients(policy.network, episodes.states)
        direction, lam_max = nld.principal_direction(grads, seed=config.seed)
        if condition == "clean":
            base = (grads, lam_max, episodes)
            bootstrap = QuotientBootstrap(grads, direction, config.n_bootstrap, config.seed)
        done[condition] = {"direction": direction.reshape(grads.shape[1:]).cpu().numpy(),
                           "lambda": nld.correlation_quotient(direction, base[0], base[1]),
                           "interval": (bootstrap.interval(grads, direction, config.seed + i)
                                        if condition != "clean" else None),
                           "score": float(episodes.returns.mean())}
        saved[name] = done
        run.save_checkpoint(saved)
    grads, _, episodes = base
    pick = np.linspace(0, len(episodes.states) - 1, min(config.attribution_states, len(episodes.states)))
    reported = {("clean" if c == "clean_independent" else c): c for c in sets[1:]}
    return PolicyResult(
        game=policy.game,
        lambdas={shown: done[c]["lambda"] for shown, c in reported.items()},
        lambda_intervals={shown: tuple(done[c]["interval"]) for shown, c in reported.items()},
        scores={c: done[c]["score"] for c in sets},
        directions={c: done[c]["direction"] for c in sets},
        spectrum=nld.fourier_spectrum(done["clean"]["direction"]),
        traces=nld.gradient_norm_trace(grads), trace_episode=episodes.episode,
        attributions=attribution_maps(
            policy.network, episodes.states[torch.from_numpy(pick.round().astype(int)).to(grads.device)],
            config.ig_steps),
        format=policy.format)


def compute(config: Config, run: Run, progress: Progress) -> Result:
    bad = [c for c in config.conditions if c not in CONDITIONS or c == "clean"]
    if bad:
        raise DiagError(f"unknown condition(s) {bad}: choose from {', '.join(CONDITIONS[1:])}")
    device = resolve_device(config.device)
    policies, actions = load_for_play(config.policies, config.game, config.full_action_space)
    for policy in policies.values():
        policy.network.to(device)
    try:
        with exact_matmul(config.allow_tf32):
            results = {name: analyse_policy(name, policy, config, run, progress)
                       for name, policy in policies.items()}
    except EnvironmentStuck as exc:  # not bad input: a checkpointed run must read failed, not running
        run.fail(str(exc))
        raise
    tf32 = config.allow_tf32 and device.type == "cuda"  # TF32 exists on CUDA only
    return Result(results, config.topk_fraction, actions.describe(), str(device), tf32)


def audit_config(scale: float = 1.0) -> Config:
    """Both shipped policies, 3 short episodes per set, two shifts and two attacks (about 3 minutes on 2 cores)."""
    return Config(episodes=max(2, int(3 * scale)), max_steps=int(80 * scale), conditions=("blur", "rotation",
                  "fgsm", "pgd"), pgd_steps=3, attribution_states=8, ig_steps=8)


def _policies(summary: dict[str, Any]) -> list[str]:
    return [n for n, v in summary.items() if isinstance(v, dict) and "lambda" in v]


def lambda_metric(summary: dict[str, Any], policy: str, condition: str, label: str | None = None) -> Metric:
    """Lambda of one policy and condition with its bootstrap interval (runs stored before intervals: none)."""
    interval = summary[policy].get("lambda_interval", {}).get(condition) or (None, None)
    return Metric(label or f"{policy}: Lambda {condition}", summary[policy]["lambda"][condition], *interval,
                  bounds=UNIT)


def _headline(summary: dict[str, Any]) -> list[Metric]:
    metrics = []
    for name in _policies(summary):
        value = summary[name]
        metrics += [lambda_metric(summary, name, "clean", f"{name}: Lambda clean (independent episodes)")]
        metrics += [lambda_metric(summary, name, "pgd")] if "pgd" in value["lambda"] else []
        metrics += [Metric(f"{name}: gradient-norm relative variance", value["oscillation"]["relative_variance"])]
    if "disjointness" in summary:
        metrics.append(Metric("top-k pixel disjointness vanilla vs robust", summary["disjointness"]["disjointness"]))
    return metrics


def _figure_metrics(summary: dict[str, Any]) -> dict[str, list[Metric]]:
    """The Lambda bars draw every policy's Lambda with its interval."""
    return {"lambda_table": [lambda_metric(summary, n, c) for n in _policies(summary) for c in summary[n]["lambda"]]}


def lambda_cell(metric: Metric) -> str:
    """Lambda with its 95% interval as one table cell, ``0.812 [0.74, 0.87]``, marked ``⚠`` when the budget is
    too small to read it."""
    interval = f" [{metric.low:.2f}, {metric.high:.2f}]" if metric.has_interval else ""
    return f"{metric.value:.3f}{interval}{' ⚠' if metric.unreadable else ''}"


def _baselines(summary: dict[str, Any]) -> list[Table]:
    names = _policies(summary)
    ref = summary.get("paper_lambda_vanilla", {})
    conditions = list(summary[names[0]]["lambda"]) if names else []
    lam = Table(f"Lambda [95% bootstrap interval over states; ⚠ budget too small to read] against the clean "
                f"baseline ({summary.get('lambda_formula', '')})",
                ["condition", *names, "paper (vanilla DDQN)"],
                [[c, *[lambda_cell(lambda_metric(summary, n, c)) for n in names], ref.get(c, "")]
                 for c in conditions])
    agree = Table("captum maps vs |G_S|: Pearson r / top-k overlap", ["policy", *ATTRIBUTIONS],
                  [[n, *[f"{summary[n]['attribution_agreement'][m]['pearson']:.2f} / "
                         f"{summary[n]['attribution_agreement'][m]['topk_overlap']:.2f}" for m in ATTRIBUTIONS]]
                   for n in names])
    return [lam, agree]


GUIDE = Guide(
    question="How stable is each policy's most sensitive decision-boundary direction (RA-NLD) when screens shift "
             "or are attacked, and does adversarial training change where and how much the boundary moves?",
    limitations=[
        ("Our policies are small CPU-trained DQNs on RoadRunner, far from the paper's agents: numbers compare "
         "trends, not values."),
        ("The shipped roadrunner-robust policy is much simpler than the vanilla one: it uses 2 actions for >= 1% "
         "of steps (vanilla: 10) and had 19% more TD training (see its model card), so vanilla-vs-robust "
         "differences mix adversarial training with a change of playing style."),
        "Each state set is the first max_steps agent steps of each episode, so late-game states are missing.",
        ("An actor-critic policy (PPO, A2C) is analysed through its actor's logits where a Q-network gives "
         "Q-values: the softmax differentiated is then the policy's own action distribution, and the paper's "
         "reference values (Q-networks) compare less directly."),
        ("Episodes use ALE's own grey conversion and resize: a policy trained on OpenCV-processed frames (SB3's "
         "AtariWrapper, CleanRL's wrappers) may see slightly different pixels than it was trained on."),
        "Lambda compares principal directions only; two sets can share G_S yet differ in every other direction.",
        ("Lambda's intervals resample the states of each set (consecutive states of an episode are correlated, "
         "so they are optimistic); they are percentile intervals of a statistic that resampling biases downward "
         "(a resampled set's principal direction is noisier), so an estimate near 1 can sit just above its "
         "interval (measured at the audit budget: robust clean 0.985, interval [0.89, 0.98])."),
        ("Saliency, Integrated Gradients and Occlusion are per-state maps of Q(s, a*) averaged in absolute value; "
         "G_S is one signed direction for the whole set, so only their spatial support is comparable."),
    ],
    headline=_headline,
    baselines=_baselines,
    figure_metrics=_figure_metrics,
    captions={
        "lambda_table": ("Lambda per shift and attack for each policy, with 95% bootstrap intervals over states "
                         "(whiskers); black marks: the paper's vanilla values."),
        "principal_directions": "G_S over clean states (mean over the 4 stacked frames) and its 2-D spectrum.",
        "oscillation": "Gradient-norm trace over the first clean episode, normalised by its mean.",
        "disjointness": "Most sensitive pixels of the two policies and their overlap.",
        "attributions": "|G_S| beside captum's Saliency, Integrated Gradients and Occlusion on the same states.",
    },
)


def pin_inputs(config: Config) -> Config:
    """Fingerprint the policy files, and spell the game as ale-py does (Pong and pong are one run)."""
    from diag.boundary.games import resolve_game
    from diag.boundary.policy.load import policy_fingerprint

    return dataclasses.replace(config, policies_sha256=tuple(policy_fingerprint(p) for p in config.policies),
                               game=resolve_game(config.game) if config.game is not None else None)

