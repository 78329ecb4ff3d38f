"""The public DII trainer on a causal task of its own (not the toy): a hand-built network that is modular by
construction, so the true variables, their site and their subspace are known.

Inputs are four bits. Block 0 computes the ReLU pairs relu(x1 - x2), relu(x2 - x1), relu(x3 - x4), relu(x4 - x3);
block 1 writes [a, b, relu(x1 - x2), relu(x3 - x4)] (a = x1 XOR x2, b = x3 XOR x4, the last two nuisances the
head ignores) into 8 dims through a random rotation Q, so the variables are distributed, not axis-aligned;
blocks 2-3 output a XOR b.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from diag.cdas.dii import orthonormality_error
from diag.cdas.trainer import Pairs, resolve_site, train_dii
from diag.errors import DiagError
from probes import Site


class Modular(nn.Module):
    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        self.q, _ = torch.linalg.qr(torch.randn(8, 8, generator=torch.Generator().manual_seed(seed)))
        self.layers = nn.ModuleList([nn.Sequential(nn.Linear(4, 4), nn.ReLU()), nn.Linear(4, 8),
                                     nn.Sequential(nn.Linear(8, 2), nn.ReLU()), nn.Linear(2, 2)])
        features = torch.tensor([[1.0, 1, 0, 0], [0, 0, 1, 1], [1, 0, 0, 0], [0, 0, 1, 0]])  # a, b, nuisances
        q_ab = self.q[:, 0] - self.q[:, 1]
        with torch.no_grad():
            self.layers[0][0].weight.copy_(torch.tensor([[1.0, -1, 0, 0], [-1, 1, 0, 0], [0, 0, 1, -1],
                                                         [0, 0, -1, 1]]))
            self.layers[1].weight.copy_(self.q[:, :4] @ features)
            self.layers[2][0].weight.copy_(torch.stack([q_ab, -q_ab]))  # relu(a - b), relu(b - a)
            self.layers[3].weight.copy_(torch.tensor([[-4.0, -4], [4, 4]]))  # logit of 1: 4 (a XOR b) - 2
            for layer in (self.layers[0][0], self.layers[1], self.layers[2][0]):
                layer.bias.zero_()
            self.layers[3].bias.copy_(torch.tensor([2.0, -2]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


def bits(n: int, generator: torch.Generator) -> torch.Tensor:
    return torch.randint(0, 2, (n, 4), generator=generator).float()


def xor(x: torch.Tensor, i: int) -> torch.Tensor:
    return (x[:, i] != x[:, i + 1]).long()


def variable_a(n: int, generator: torch.Generator) -> Pairs:
    """a from the source, b from the base: the counterfactual output is a_s XOR b_b."""
    base, source = bits(n, generator), bits(n, generator)
    return base, source, xor(source, 0) ^ xor(base, 2)


def variable_b(n: int, generator: torch.Generator) -> Pairs:
    base, source = bits(n, generator), bits(n, generator)
    return base, source, xor(base, 0) ^ xor(source, 2)


def input_x1(n: int, generator: torch.Generator) -> Pairs:
    """A wrong variable: the input bit x1 itself, which the network never represents on its own."""
    base, source = bits(n, generator), bits(n, generator)
    cf = base.clone()
    cf[:, 0] = source[:, 0]
    return base, source, xor(cf, 0) ^ xor(cf, 2)


BUDGET = {"steps": 100, "batch": 64, "lr": 0.05, "eval_pairs": 1000}


def test_network_computes_its_task() -> None:
    x = bits(256, torch.Generator().manual_seed(9))
    assert torch.equal(Modular()(x).argmax(-1), xor(x, 0) ^ xor(x, 2))


@pytest.mark.parametrize(("variable", "wrong", "axis"), [(variable_a, input_x1, 0), (variable_b, None, 1)])
def test_dii_recovers_each_variable_and_controls_stay_at_chance(variable, wrong, axis: int) -> None:
    model = Modular()
    result = train_dii(model, "layers.1", 1, variable, wrong_variable=wrong, seed=0, **BUDGET)
    # Seeded on CPU; 1000 held-out pairs give a 95% Wilson half-width <= 0.004 at 1.0 and ~0.03 at 0.5.
    assert result.iia >= 0.95, result.summary()
    control = "wrong_variable" if wrong else "shuffled_labels"
    assert set(result.controls) == {"random_basis", control, "untrained_model"}
    assert max(result.controls.values()) <= 0.6, result.summary()
    # The learned direction lies mostly along the variable's own axis of the rotation, not the other variable's.
    cosines = (result.basis()[:, 0] @ model.q[:, :2]).abs()
    assert cosines[axis] > 0.9 and cosines[1 - axis] < 0.1, cosines
    assert orthonormality_error(result.basis()) < 1e-5
    summary = result.summary()
    assert summary["site"] == "L1.resid_post" and summary["rank"] == 1
    assert summary["iia"]["low"] <= result.iia <= summary["iia"]["high"]


def test_site_paths_resolve_through_probes() -> None:
    model = Modular()
    assert resolve_site(model, "layers.2") == Site(2, "resid_post")
    assert resolve_site(model, Site(1)) == Site(1)
    with pytest.raises(DiagError, match="no submodule"):
        resolve_site(model, "layers.9")
    # an item of any other module list or Sequential: the Linear inside block 0
    assert resolve_site(model, "layers.0.0") == Site(0, "resid_post", blocks="layers.0")
    with pytest.raises(DiagError, match="neither a block"):
        resolve_site(Outputs("tuple"), "head")  # a lone module, in no list: nothing probes can name
    with pytest.raises(DiagError, match="out of range"):
        resolve_site(model, Site(7))


class Outputs(Modular):
    """The same network returning its prediction the ways user code does, beside a module in no list."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind, self.head = kind, nn.Identity()

    def forward(self, x: torch.Tensor) -> object:
        logits = self.head(super().forward(x))
        return (logits, {"aux": x.sum()}) if self.kind == "tuple" else {"logits": logits, "aux": x.sum()}


QUICK = {"steps": 30, "batch": 64, "lr": 0.05, "eval_pairs": 300, "controls": False}


def test_same_seed_same_subspace_whatever_ran_before_and_the_callers_rng_is_left_alone() -> None:
    torch.manual_seed(1)
    first = train_dii(Modular(), "layers.1", 2, variable_a, seed=3, **QUICK)
    model = Modular()
    torch.manual_seed(2)  # another global state: torch's basis completion used to draw from it
    before = torch.random.get_rng_state()
    second = train_dii(model, "layers.1", 2, variable_a, seed=3, **QUICK)
    assert torch.equal(torch.random.get_rng_state(), before)
    assert first.losses == second.losses and first.iia == second.iia
    assert torch.equal(first.basis(), second.basis())


@pytest.mark.parametrize("kind", ["tuple", "mapping"])
def test_models_returning_tuples_or_mappings_train_like_the_plain_model(kind: str) -> None:
    plain = train_dii(Modular(), "layers.0.0", 1, variable_a, seed=0, **QUICK)
    other = train_dii(Outputs(kind), "layers.0.0", 1, variable_a, seed=0, **QUICK)
    assert other.site == Site(0, "resid_post", blocks="layers.0")
    assert other.losses == plain.losses and other.iia == plain.iia


class NoParameters(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.ModuleList([nn.ReLU(), nn.Identity()])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers[1](self.layers[0](x))


def test_bad_requests_fail_before_training() -> None:
    calls: list[int] = []

    def counted(n: int, generator: torch.Generator) -> Pairs:
        calls.append(n)
        return variable_a(n, generator)

    with pytest.raises(DiagError, match="reset_parameters"):
        train_dii(NoParameters(), "layers.0", 1, counted)
    with pytest.raises(DiagError, match="must be positive"):
        train_dii(Modular(), "layers.1", 1, counted, steps=0)
    with pytest.raises(DiagError, match="rank 9 out of range"):
        train_dii(Modular(), "layers.1", 9, counted, steps=1, controls=False)
    assert calls == [256]  # only the rank check draws a batch: the site's width is read from one forward pass
