"""Ground truth for token-level credit: a tabular token MDP where the optimal advantage A* is known exactly.

States are prefixes of a fixed-length token sequence over a small vocabulary; r(s, a) is a known dense
reward and pi_ref a fixed random reference. The soft Bellman backup gives V*(s) = beta * log sum_a
pi_ref(a|s) exp((r(s,a) + V*(s')) / beta) with V* = 0 after the last token, and theory says
beta * log(pi*/pi_ref)(a|s) = A*(s,a) = r(s,a) + V*(s') - V*(s). We sample Bradley-Terry preference pairs
from the sequence reward, train a table of logits with the same ``dpo_loss`` as the LM adapter, and compare
the learned per-token log-ratio with A* (not with r: per-token rewards are identified only up to
potential-based shaping, which A* fixes and r does not).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from diag.credit.config import TABULAR as ANALYSIS  # noqa: F401 -- the declared value, for callers
from diag.credit.config import TabularConfig as Config
from diag.errors import DiagError
from diag.progress import Progress
from diag.report.sections import Guide, Metric
from diag.run_dir import Run


class TokenMDP:
    """All prefixes of length < ``length`` over ``vocab`` tokens, indexed level by level."""

    def __init__(self, vocab: int, length: int, beta: float, reward_scale: float, rng: np.random.Generator):
        self.vocab, self.length, self.beta = vocab, length, beta
        self.offsets = np.cumsum([0] + [vocab ** level for level in range(length)])
        n = int(self.offsets[-1])
        self.reward = rng.normal(0.0, reward_scale, size=(n, vocab))
        ref_logits = rng.normal(0.0, 0.5, size=(n, vocab))  # every action reachable: pairs cover all (s, a)
        self.log_ref = ref_logits - np.logaddexp.reduce(ref_logits, axis=1, keepdims=True)
        self.value = self._soft_bellman()
        self.advantage = self.reward + self._next_values() - self.value[:, None]

    @property
    def n_states(self) -> int:
        return int(self.offsets[-1])

    def child(self, state: np.ndarray, level: int, token: np.ndarray) -> np.ndarray:
        return self.offsets[level + 1] + (state - self.offsets[level]) * self.vocab + token

    def _next_values(self) -> np.ndarray:
        """V*(s') for every (s, a); zero after the last token."""
        out = np.zeros((self.n_states, self.vocab))
        for level in range(self.length - 1):
            states = np.arange(self.offsets[level], self.offsets[level + 1])
            for a in range(self.vocab):
                out[states, a] = self.value[self.child(states, level, np.full_like(states, a))]
        return out

    def _soft_bellman(self) -> np.ndarray:
        self.value = np.zeros(self.n_states)
        for level in reversed(range(self.length)):  # leaves first: V* of a level needs only deeper levels
            states = np.arange(self.offsets[level], self.offsets[level + 1])
            q = self.reward[states] + self._next_values()[states]
            self.value[states] = self.beta * np.logaddexp.reduce(self.log_ref[states] + q / self.beta, axis=1)
        return self.value

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """``n`` sequences from pi_ref: (visited state ids, tokens), each ``[n, length]``."""
        states = np.zeros((n, self.length), dtype=np.int64)
        tokens = np.zeros((n, self.length), dtype=np.int64)
        current = np.zeros(n, dtype=np.int64)
        for level in range(self.length):
            probs = np.exp(self.log_ref[current])
            u = rng.random(n)[:, None]
            tokens[:, level] = np.minimum((probs.cumsum(axis=1) < u).sum(axis=1), self.vocab - 1)
            states[:, level] = current
            if level < self.length - 1:
                current = self.child(current, level, tokens[:, level])
        return states, tokens


@dataclass
class Result:
    learned: np.ndarray  # [seeds, states, vocab]: beta * log(pi / pi_ref) after DPO
    advantage: np.ndarray  # [seeds, states, vocab]: A*
    reward: np.ndarray  # [seeds, states, vocab]: r
    preference_accuracy: np.ndarray  # [seeds]: held-out pairs ordered correctly by the learned reward

    def per_seed(self) -> list[dict[str, float]]:
        from scipy.stats import pearsonr, spearmanr

        rows = []
        for learned, adv, rew in zip(self.learned, self.advantage, self.reward, strict=True):
            x, y = learned.ravel(), adv.ravel()
            rows.append({"spearman": float(spearmanr(x, y).statistic), "pearson": float(pearsonr(x, y).statistic),
                         "rmse": float(np.sqrt(np.mean((x - y) ** 2))),
                         "spearman_vs_r": float(spearmanr(x, rew.ravel()).statistic)})
        return rows

    def summary(self) -> dict[str, Any]:
        rows = self.per_seed()

        def stat(key: str) -> dict[str, float]:
            values = np.array([r[key] for r in rows])
            return {"value": float(values.mean()), "low": float(values.min()), "high": float(values.max())}

        return {"spearman_vs_advantage": stat("spearman"), "pearson_vs_advantage": stat("pearson"),
                "rmse_vs_advantage": stat("rmse"), "spearman_vs_reward": stat("spearman_vs_r"),
                "heldout_preference_accuracy": float(self.preference_accuracy.mean()),
                "seeds": len(rows), "interval": "min..max over seeds"}

    def save(self, run: Run) -> None:
        import matplotlib.pyplot as plt

        run.write_arrays("tabular", {"learned": self.learned, "advantage": self.advantage, "reward": self.reward,
                                     "preference_accuracy": self.preference_accuracy})
        run.write_json("per_seed.json", self.per_seed())
        fig, axes = plt.subplots(1, 2, figsize=(8, 3.6), sharey=True)
        for ax, truth, name in ((axes[0], self.advantage, "A*(s,a)"), (axes[1], self.reward, "r(s,a)")):
            ax.scatter(truth[0].ravel(), self.learned[0].ravel(), s=4, alpha=0.5)
            ax.set_xlabel(f"true {name}")
        axes[0].set_ylabel("learned beta * log(pi / pi_ref)")
        lim = [self.advantage[0].min(), self.advantage[0].max()]
        axes[0].plot(lim, lim, color="k", lw=0.8)
        run.write_figure("tabular_learned_vs_truth", fig)

    @classmethod
    def load(cls, run: Run) -> Result:
        a = run.read_arrays("tabular")
        return cls(a["learned"], a["advantage"], a["reward"], a["preference_accuracy"])


def train_table(mdp: TokenMDP, n_pairs: int, steps: int, lr: float, rng: np.random.Generator,
                device: torch.device | None = None) -> tuple[np.ndarray, float]:
    """DPO on Bradley-Terry pairs sampled from pi_ref; returns beta*log(pi/pi_ref) and held-out accuracy."""
    from diag.credit.dpo import dpo_loss

    def pairs(n: int) -> tuple[torch.Tensor, ...]:
        s1, t1 = mdp.sample(n, rng)
        s2, t2 = mdp.sample(n, rng)
        r1 = mdp.reward[s1, t1].sum(axis=1)
        r2 = mdp.reward[s2, t2].sum(axis=1)
        first_wins = rng.random(n) < 1 / (1 + np.exp(-(r1 - r2)))  # Bradley-Terry on the sequence reward
        chosen = np.where(first_wins[:, None], s1, s2), np.where(first_wins[:, None], t1, t2)
        rejected = np.where(first_wins[:, None], s2, s1), np.where(first_wins[:, None], t2, t1)
        return tuple(torch.from_numpy(x).to(device) for x in (*chosen, *rejected))

    log_ref = torch.from_numpy(mdp.log_ref).to(device)
    logits = torch.nn.Parameter(log_ref.clone())  # start at the reference, as DPO does
    optimizer = torch.optim.Adam([logits], lr=lr)
    cs, ct, rs, rt = pairs(n_pairs)

    def logps(table: torch.Tensor, states: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(table, dim=-1)[states, tokens].sum(-1)

    ref_c, ref_r = logps(log_ref, cs, ct), logps(log_ref, rs, rt)
    for _ in range(steps):
        loss, _ = dpo_loss(logps(logits, cs, ct), logps(logits, rs, rt), ref_c, ref_r, mdp.beta)
        optimizer.zero_grad()
        loss.mean().backward()
        optimizer.step()
    with torch.no_grad():
        learned = mdp.beta * (torch.log_softmax(logits, dim=-1) - log_ref)
        hs, ht, hrs, hrt = pairs(2000)
        _, margin = dpo_loss(logps(logits, hs, ht), logps(logits, hrs, hrt), logps(log_ref, hs, ht),
                             logps(log_ref, hrs, hrt), mdp.beta)
        true_margin = mdp.reward[hs.cpu(), ht.cpu()].sum(-1) - mdp.reward[hrs.cpu(), hrt.cpu()].sum(-1)
        agree = float(((margin.cpu().numpy() > 0) == (true_margin > 0)).mean())
    return learned.cpu().numpy(), agree


def compute(config: Config, run: Run, progress: Progress) -> Result:
    if config.vocab < 2 or config.length < 1 or config.vocab ** config.length > 1_000_000:
        raise DiagError(f"vocab {config.vocab} and length {config.length}: need vocab >= 2, length >= 1 and at "
                        "most 1e6 sequences")
    from diag.device import resolve_device

    device = resolve_device(config.device)
    learned, advantage, reward, accuracy = [], [], [], []
    for i, seed in enumerate(config.seeds):
        rng = np.random.default_rng(seed)
        torch.manual_seed(seed)
        mdp = TokenMDP(config.vocab, config.length, config.beta, config.reward_scale, rng)
        table, agree = train_table(mdp, config.n_pairs, config.steps, config.lr, rng, device)  # float64: no TF32
        learned.append(table)
        advantage.append(mdp.advantage)
        reward.append(mdp.reward)
        accuracy.append(agree)
        progress(i + 1, len(config.seeds), "tabular seeds")
    return Result(np.stack(learned), np.stack(advantage), np.stack(reward), np.array(accuracy))


def audit_config(scale: float = 1.0) -> Config:
    """Three MDPs (seeds), 200k pairs each: the learned log-ratio must track A* (Spearman >= 0.9)."""
    return Config(n_pairs=int(200_000 * max(scale, 1.0)), steps=300)


def _headline(summary: dict[str, Any]) -> list[Metric]:
    return [Metric(f"{name} vs A* (min..max over seeds)", summary[key]["value"], summary[key]["low"],
                   summary[key]["high"])
            for name, key in (("Spearman", "spearman_vs_advantage"), ("Pearson", "pearson_vs_advantage"),
                              ("RMSE", "rmse_vs_advantage"), ("Spearman vs raw r (shaping check)",
                                                              "spearman_vs_reward"))]


GUIDE = Guide(
    question=("In a token MDP where the optimal advantage A* is known exactly (soft Bellman backup), does DPO on "
              "Bradley-Terry preference pairs learn a per-token log-ratio beta*log(pi/pi_ref) equal to A*?"),
    limitations=[
        ("A tiny tabular world (vocabulary 5, length 4, a table of logits): it tests the estimator and our DPO "
        "code, not whether a neural LM reaches the optimum."),
        ("The learned ratio is compared with A*, not with r: per-token rewards are identified only up to "
        "potential-based shaping, so a lower correlation with r is expected, not a failure."),
        "Rare (state, action) cells are estimated from fewer comparisons; below ~1e5 pairs the correlation drops.",
    ],
    headline=_headline,
)
