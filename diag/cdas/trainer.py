"""DII on your own model: train a rank-k interchange subspace for a causal variable you define, with controls.

A causal variable is a function ``pairs(n, generator) -> (base, source, target)``: n base inputs, n source
inputs, and what the model should output when the variable's value is taken from the source and everything
else from the base (a counterfactual label by default, or any target your ``loss`` understands). The trainer
learns an orthonormal basis R at one site (h' = h_b + R R^T (h_s - h_b)) so the intervened run gives the
target, and reports interchange intervention accuracy (IIA) on held-out pairs beside three controls that
should sit near chance: a random frozen basis, a wrong variable (yours, or the true one's targets shuffled
across pairs), and the same architecture re-initialised (untrained). Every hook goes through ``probes``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from diag.cdas.dii import RotatedSubspace, das_loss
from diag.device import exact_matmul
from diag.errors import DiagError
from diag.stats import wilson
from probes import COMPONENTS, Edit, Site, get_backend
from probes.backends import Inputs
from probes.errors import ProbeError
from probes.forward import run_to
from probes.site import block_list, locate

Pairs = tuple[Inputs, Inputs, torch.Tensor]
CausalVariable = Callable[[int, torch.Generator], Pairs]
Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Match = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def argmax_match(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Default IIA criterion: the intervened prediction (argmax of the last dim) equals the counterfactual label."""
    return output.argmax(-1) == target


def resolve_site(model: nn.Module, site: Site | str) -> Site:
    """A probes Site, or the dotted path of a module probes can hook: a block of the model's block list
    (``layers.1``) or its attention/MLP (``layers.1.mlp``), or an item of any other module list or Sequential
    (``head.0``, ``encoder.stages.2``: ``Site(i, blocks=<the list>)``), so every intervention runs through the
    same hooks as the rest of diag.
    """
    if isinstance(site, Site):
        try:
            locate(model, site)
        except ProbeError as exc:
            raise DiagError(str(exc)) from exc
        return site
    try:
        target = model.get_submodule(site)
    except AttributeError as exc:
        raise DiagError(f"site {site!r}: the model has no submodule of that name") from exc
    for candidate in _candidate_sites(model, site):
        try:
            module, on_input = locate(model, candidate)
        except ProbeError:
            continue
        if module is target and not on_input:
            return candidate
    raise DiagError(f"site {site!r} is neither a block of the model's block list nor an item of a module list or "
                    "Sequential (nor a block's attention/MLP); pass a probes Site or such a path")


def _candidate_sites(model: nn.Module, path: str) -> list[Site]:
    """Sites that may name ``path``: each component of each block of the model's own block list (when it has
    one), then the output of item ``i`` of each list ``<prefix>.<i>`` along the path."""
    candidates = []
    try:
        layers = range(len(block_list(model)))
    except ProbeError:
        layers = range(0)
    candidates += [Site(layer, component) for layer in layers for component in COMPONENTS]  # type: ignore[arg-type]
    parts = path.split(".")
    for k in range(1, len(parts)):
        container = ".".join(parts[:k])
        if parts[k].isdigit() and isinstance(model.get_submodule(container), nn.ModuleList | nn.Sequential):
            candidates += [Site(int(parts[k]), component, blocks=container)  # type: ignore[arg-type]
                           for component in COMPONENTS]
    return candidates


def intervened_output(model: nn.Module, site: Site, subspace: nn.Module, base: Inputs,
                      source: Inputs) -> torch.Tensor:
    """Run ``base`` with the subspace of ``site`` taken from the run on ``source`` (gradients reach the basis);
    the source run stops at the site, since nothing above it feeds the interchange."""
    with torch.no_grad():
        h_source = run_to(model, site, source)
    edit = Edit(site, lambda h: subspace(h, h_source), "dii")
    return get_backend("torch", model).run(base, edits=[edit]).logits


def site_activation(model: nn.Module, site: Site, inputs: Inputs) -> torch.Tensor:
    """The activation at ``site`` (its width and device size the subspace)."""
    with torch.no_grad():
        return get_backend("torch", model).run(inputs, capture=[site]).activations[site]


def fit_subspace(model: nn.Module, site: Site, rank: int, variable: CausalVariable, generator: torch.Generator, *,
                 steps: int, batch: int, lr: float, seed: int, loss: Loss = das_loss,
                 allow_tf32: bool = False) -> tuple[RotatedSubspace, list[float]]:
    """Adam on the orthogonally parametrised basis only (the model is frozen meanwhile); a fresh batch per step."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    model.requires_grad_(False)
    subspace: RotatedSubspace | None = None
    optimiser: torch.optim.Optimizer | None = None
    losses: list[float] = []
    with exact_matmul(allow_tf32):
        for _ in range(steps):
            base, source, target = on_model_device(model, variable(batch, generator))
            if subspace is None:
                h = site_activation(model, site, base)
                subspace = RotatedSubspace(h.shape[-1], rank, seed=seed).to(h.device)
                optimiser = torch.optim.Adam(subspace.parameters(), lr=lr)
            value = loss(intervened_output(model, site, subspace, base, source), target)
            optimiser.zero_grad()  # type: ignore[union-attr]
            value.backward()
            optimiser.step()  # type: ignore[union-attr]
            losses.append(float(value.detach()))
    for parameter in trainable:
        parameter.requires_grad_(True)
    assert subspace is not None  # steps >= 1 is checked by callers
    return subspace, losses


def interchange_accuracy(model: nn.Module, site: Site, subspace: nn.Module, variable: CausalVariable, n: int,
                         generator: torch.Generator, match: Match = argmax_match) -> float:
    """IIA on n fresh pairs: the share of (elements of) intervened outputs that ``match`` the target."""
    base, source, target = on_model_device(model, variable(n, generator))
    with torch.no_grad():
        return float(match(intervened_output(model, site, subspace, base, source), target).float().mean())


def on_model_device(model: nn.Module, pairs: Pairs) -> Pairs:
    """The user's pairs (tensors or dicts of tensors, drawn wherever) moved to the model's device."""
    device = next(model.parameters()).device

    def move(x: Any) -> Any:
        if isinstance(x, torch.Tensor):
            return x.to(device)
        return {k: move(v) for k, v in x.items()} if isinstance(x, dict) else x

    return tuple(move(part) for part in pairs)  # type: ignore[return-value]


def shuffled(variable: CausalVariable) -> CausalVariable:
    """The wrong-variable control when none is given: the true pairs with their targets permuted across pairs."""

    def pairs(n: int, generator: torch.Generator) -> Pairs:
        base, source, target = variable(n, generator)
        return base, source, target[torch.randperm(len(target), generator=generator)]

    return pairs


def reinitialised(model: nn.Module, seed: int) -> nn.Module:
    """A copy of ``model`` with every submodule's ``reset_parameters`` applied: the untrained-model control."""
    fresh = copy.deepcopy(model)
    torch.manual_seed(seed)
    resettable = [m for m in fresh.modules() if hasattr(m, "reset_parameters")]
    if not resettable:
        raise DiagError(f"{type(model).__name__} has no submodule with reset_parameters: the untrained-model "
                        "control cannot re-initialise it (pass controls=False or build it from torch layers)")
    for module in resettable:
        module.reset_parameters()
    return fresh.eval()


@dataclass
class DIIResult:
    """The trained subspace, its held-out IIA, and the controls' IIA (name -> value), all over ``eval_pairs``."""

    subspace: RotatedSubspace
    site: Site
    iia: float
    controls: dict[str, float]
    eval_pairs: int
    losses: list[float] = field(default_factory=list)

    def basis(self) -> torch.Tensor:
        """R, (width, rank), orthonormal columns."""
        return self.subspace.basis().detach()

    def summary(self) -> dict[str, Any]:
        """IIA and each control with a 95% Wilson interval over the held-out pairs."""
        out: dict[str, Any] = {"site": self.site.key(), "rank": self.subspace.rank,
                               "iia": wilson(self.iia, self.eval_pairs)}
        out.update({f"control_iia_{name}": wilson(value, self.eval_pairs) for name, value in self.controls.items()})
        return out


def train_dii(model: nn.Module, site: Site | str, rank: int, variable: CausalVariable, *,
              wrong_variable: CausalVariable | None = None, loss: Loss = das_loss, match: Match = argmax_match,
              steps: int = 300, batch: int = 256, lr: float = 0.01, eval_pairs: int = 2000, seed: int = 0,
              controls: bool = True, allow_tf32: bool = False) -> DIIResult:
    """Train a rank-``rank`` DII for ``variable`` at ``site`` of ``model``; IIA on held-out pairs plus controls.

    Training pairs come from a generator seeded with ``seed``, evaluation pairs from one seeded ``seed + 1``, so
    the numbers are reproducible and the evaluation pairs are fresh draws. Controls (``controls=True``):
    ``random_basis`` (a frozen random R of the same rank), ``wrong_variable`` (trained on ``wrong_variable``) or
    ``shuffled_labels`` (trained on the true pairs with permuted targets), and ``untrained_model`` (trained on a
    re-initialised copy of the model).
    """
    if steps < 1 or batch < 1 or eval_pairs < 1:
        raise DiagError(f"steps, batch and eval_pairs must be positive, got {steps}, {batch}, {eval_pairs}")
    if lr <= 0:
        raise DiagError(f"learning rate must be positive, got {lr}")
    # torch's orthogonal parametrisation completes each basis to a full rotation with the global RNG, and that
    # completion steers training: seed it here (and leave the caller's RNG as it was) so ``seed`` decides all.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        site = resolve_site(model, site)
        untrained = reinitialised(model, seed + 3) if controls else None  # checked before any training
        model.eval()

        def fit(net: nn.Module, var: CausalVariable, offset: int) -> tuple[RotatedSubspace, list[float]]:
            return fit_subspace(net, site, rank, var, torch.Generator().manual_seed(seed + offset), steps=steps,
                                batch=batch, lr=lr, seed=seed + offset, loss=loss, allow_tf32=allow_tf32)

        def score(net: nn.Module, subspace: nn.Module, var: CausalVariable) -> float:
            generator = torch.Generator().manual_seed(seed + 1)
            return interchange_accuracy(net, site, subspace, var, eval_pairs, generator, match)

        subspace, losses = fit(model, variable, 0)
        result = DIIResult(subspace, site, score(model, subspace, variable), {}, eval_pairs, losses)
        if untrained is None:
            return result
        random_basis = RotatedSubspace(subspace.width, rank, seed=seed + 12345).requires_grad_(False)
        result.controls["random_basis"] = score(model, random_basis, variable)
        wrong, name = ((shuffled(variable), "shuffled_labels") if wrong_variable is None
                       else (wrong_variable, "wrong_variable"))
        result.controls[name] = score(model, fit(model, wrong, 2)[0], wrong)
        result.controls["untrained_model"] = score(untrained, fit(untrained, variable, 3)[0], variable)
        return result
