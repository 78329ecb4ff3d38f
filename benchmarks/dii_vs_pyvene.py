"""Training steps/s of our rank-k DII against pyvene 0.1.8's LowRankRotatedSpaceIntervention, same model/site/data.

Two models: the hierarchical-equality toy MLP (the network ``diag cdas toy`` trains at seed 0; rank 8 at layer 0,
DAS cross-entropy on counterfactual labels, the toy's batch 1024 and lr 0.01; also IIA of both on the same held-out
pairs) and SmolLM2-135M-Instruct (rank 4 at the residual output of layer 10, all positions, cross-entropy on the
source's next tokens, batch 4 x 32 tokens). Each step is: source forward, intervened base forward, backward, Adam
step. Like for like: both sides get the same batches, the same initial basis (pyvene's rotate_layer is assigned our
seed-0 basis through its orthogonal parametrisation, after the same torch seed: assigning a d x k basis completes it
to a d x d base with ``torch.randn``, and that completion steers training), the same optimiser and learning rate, so
the IIA gap measures the implementations, not the draw of the initial subspace.

pyvene 0.1.8 pins nothing against transformers 5 but is not a dependency of diag, so it runs in its OWN virtual
environment, in a subprocess: ``$PYVENE_VENV`` (default ``~/.cache/diag/pyvene-venv``) is created if missing,
layered over this interpreter's site-packages (same torch/transformers) with ``pyvene==0.1.8`` installed
``--no-deps`` from the package index. To recreate it by hand: ``python -m venv $PYVENE_VENV``, write this
interpreter's purelib path into ``$PYVENE_VENV/lib/python3.11/site-packages/zz_diag_parent.pth``, then
``$PYVENE_VENV/bin/pip install --no-deps pyvene==0.1.8`` (what ``ensure_pyvene_venv`` does). On the workbench
machine it lives at ``/work/notes/cdas/pyvene-venv``. Run:
``OMP_NUM_THREADS=1 PYVENE_VENV=... python benchmarks/dii_vs_pyvene.py [--toy-steps N] [--lm-steps N]``; prints
steps/s for both and the ratio ours / pyvene per model, plus toy IIA for both and their gap.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

import torch

LM_LAYER, LM_RANK, LM_BATCH, LM_TOKENS = 10, 4, 4, 32
TOY_RANK = 8


def ensure_pyvene_venv() -> Path:
    """The pyvene interpreter: a venv over our site-packages with pyvene 0.1.8 added (no dependency changes)."""
    venv = Path(os.environ.get("PYVENE_VENV", Path.home() / ".cache" / "diag" / "pyvene-venv"))
    python = venv / "bin" / "python"
    if importlib.util.find_spec("pyvene") is not None:  # already importable here (e.g. carried to a GPU image)
        return Path(sys.executable)
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                              check=True, capture_output=True, text=True).stdout.strip()
        Path(site, "zz_diag_parent.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    if subprocess.run([str(python), "-c", "import pyvene"], capture_output=True, check=False).returncode != 0:
        subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "pyvene==0.1.8"], check=True)
    return python


def synchronize() -> None:
    """Wait for queued GPU work, so that a timer read after it counts that work."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def toy_setup(seed: int = 0) -> dict:
    from diag.cdas import toy
    from diag.cdas.dii import RotatedSubspace

    config = toy.Config(seed=seed)  # the network `diag cdas toy` trains (same recipe, steps and batch)
    generator = torch.Generator().manual_seed(seed)
    model, _ = toy.train_mlp(config, generator, torch.device("cpu"))
    return {"state": model.state_dict(), "seed": seed, "batch": config.batch, "lr": config.lr,
            "init_basis": RotatedSubspace(config.hidden, TOY_RANK, seed=0).basis().detach().clone(),
            "data_seed": 1}


def lm_batches(steps: int, model_name: str) -> list[dict]:
    """Fixed batches of (base, source) token ids from the concept dataset (equal length: all positions align)."""
    from diag.cdas.concepts import load_pairs
    from diag.zoo import load_lm

    _, tokenizer = load_lm(model_name, "cpu")
    pairs = load_pairs()
    text = [(p.instruction + " " + p.response, p.concept_instruction + " " + p.concept_response) for p in pairs]
    ids = [(tokenizer(a)["input_ids"][:LM_TOKENS], tokenizer(b)["input_ids"][:LM_TOKENS]) for a, b in text]
    ids = [(a, b) for a, b in ids if len(a) == len(b) == LM_TOKENS]
    return [{"base": torch.tensor([ids[(s * LM_BATCH + i) % len(ids)][0] for i in range(LM_BATCH)]),
             "source": torch.tensor([ids[(s * LM_BATCH + i) % len(ids)][1] for i in range(LM_BATCH)])}
            for s in range(steps)]


def ours_toy(setup: dict, steps: int) -> dict:
    from diag.cdas import toy
    from diag.cdas.dii import RotatedSubspace, das_loss

    model = toy.ToyMLP()
    model.load_state_dict(setup["state"])
    model.eval().requires_grad_(False)
    generator = torch.Generator().manual_seed(setup["data_seed"])
    data = [toy.interchange_pairs("wx", setup["batch"], generator) for _ in range(steps)]
    dii = RotatedSubspace(16, TOY_RANK)
    torch.manual_seed(setup["data_seed"])  # torch's orthogonal parametrisation completes the basis with randn
    dii.set_basis(setup["init_basis"])
    optimiser = torch.optim.Adam(dii.parameters(), lr=setup["lr"])
    start = time.perf_counter()
    for base, source, _, label in data:
        loss = das_loss(toy.intervened_logits(model, 0, dii, base, source), label)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    elapsed = time.perf_counter() - start
    base, source, _, label = toy.interchange_pairs("wx", 4000, torch.Generator().manual_seed(2))
    with torch.no_grad():
        iia = float((toy.intervened_logits(model, 0, dii, base, source).argmax(-1) == label).float().mean())
    return {"steps_per_s": steps / elapsed, "iia": iia}


def ours_lm(batches: list[dict], model_name: str, device: str) -> dict:
    from diag.cdas.dii import RotatedSubspace
    from diag.cdas.lm import hidden_hook, residual_at
    from diag.zoo import load_lm

    model, _ = load_lm(model_name, device)
    model.requires_grad_(False)
    batches = [{k: v.to(device) for k, v in b.items()} for b in batches]
    dii = RotatedSubspace(model.config.hidden_size, LM_RANK, seed=0).to(device)
    optimiser = torch.optim.Adam(dii.parameters(), lr=0.01)
    start = 0.0
    for step, batch in enumerate([batches[0], *batches]):  # step 0 warms up (kernels, allocator): untimed
        if step == 1:
            synchronize()
            start = time.perf_counter()
        source = residual_at(model, LM_LAYER, input_ids=batch["source"])  # stops at the layer: nothing above it
        with hidden_hook(model, LM_LAYER, lambda h, s=source: dii(h, s)):
            logits = model(input_ids=batch["base"]).logits
        loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]),
                                                 batch["source"][:, 1:].reshape(-1))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    synchronize()
    return {"steps_per_s": len(batches) / (time.perf_counter() - start)}


PYVENE_SIDE = r'''
import json, sys, time, torch
sys.path[:0] = [sys.argv[3], sys.argv[4]]  # benchmarks/ and the repo root (diag is not installed in this venv)
import pyvene as pv
from diag.cdas import toy
import dii_vs_pyvene as bench

which, path = sys.argv[1], sys.argv[2]
args = torch.load(path, weights_only=False)
steps = args["steps"]


class Seq(torch.nn.Module):
    """The toy MLP with a length-1 sequence axis, the shape pyvene's position units expect (same weights)."""
    def __init__(self, mlp):
        super().__init__()
        from transformers import PretrainedConfig
        self.config = PretrainedConfig()  # pyvene reads model.config and model.device
        self.device = torch.device("cpu")
        self.layers, self.head = mlp.layers, mlp.head
    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return self.head(x)


if which == "toy":
    mlp = toy.ToyMLP()
    mlp.load_state_dict(args["setup"]["state"])
    model = Seq(mlp).eval().requires_grad_(False)
    config = pv.IntervenableConfig(representations=[pv.RepresentationConfig(
        component="layers[0].output", unit="pos", max_number_of_units=1,
        intervention=pv.LowRankRotatedSpaceIntervention(embed_dim=16, low_rank_dimension=bench.TOY_RANK))])
    intervenable = pv.IntervenableModel(config, model)
    intervenable.disable_model_gradients()
    intervention = next(iter(intervenable.interventions.values()))
    torch.manual_seed(args["setup"]["data_seed"])  # the same randn completion of the basis as ours
    with torch.no_grad():  # the same starting subspace as ours, set through the orthogonal parametrisation
        intervention.rotate_layer.weight = args["setup"]["init_basis"]
    generator = torch.Generator().manual_seed(args["setup"]["data_seed"])
    data = [toy.interchange_pairs("wx", args["setup"]["batch"], generator) for _ in range(steps)]
    optimiser = torch.optim.Adam(intervenable.get_trainable_parameters(), lr=args["setup"]["lr"])
    start = time.perf_counter()
    for base, source, _, label in data:
        _, out = intervenable({"x": base.flatten(1).unsqueeze(1)}, [{"x": source.flatten(1).unsqueeze(1)}],
                              unit_locations={"sources->base": 0})
        loss = torch.nn.functional.cross_entropy(out[:, 0], label)
        optimiser.zero_grad(); loss.backward(); optimiser.step()
    elapsed = time.perf_counter() - start
    base, source, _, label = toy.interchange_pairs("wx", 4000, torch.Generator().manual_seed(2))
    with torch.no_grad():
        _, out = intervenable({"x": base.flatten(1).unsqueeze(1)}, [{"x": source.flatten(1).unsqueeze(1)}],
                              unit_locations={"sources->base": 0})
    print(json.dumps({"steps_per_s": steps / elapsed, "iia": float((out[:, 0].argmax(-1) == label).float().mean())}))
else:
    from diag.zoo import load_lm
    device = args["device"]
    model, _ = load_lm(args["model"], device)
    model.requires_grad_(False)
    # keep_last_dim: rotate each position's d-vector (the default would concatenate positions into one vector).
    config = pv.IntervenableConfig(representations=[pv.RepresentationConfig(
        layer=bench.LM_LAYER, component="block_output", max_number_of_units=bench.LM_TOKENS,
        intervention=pv.LowRankRotatedSpaceIntervention(embed_dim=model.config.hidden_size,
                                                        low_rank_dimension=bench.LM_RANK, keep_last_dim=True))])
    intervenable = pv.IntervenableModel(config, model)
    intervenable.set_device(device)
    intervenable.disable_model_gradients()
    optimiser = torch.optim.Adam(intervenable.get_trainable_parameters(), lr=0.01)
    positions = list(range(bench.LM_TOKENS))
    batches = [{k: v.to(device) for k, v in b.items()} for b in args["batches"]]
    start = 0.0
    for step, batch in enumerate([batches[0], *batches]):  # step 0 warms up, untimed (as ours)
        if step == 1:
            bench.synchronize()
            start = time.perf_counter()
        locations = [[positions] * len(batch["base"])]
        _, out = intervenable({"input_ids": batch["base"]}, [{"input_ids": batch["source"]}],
                              unit_locations={"sources->base": (locations, locations)})
        logits = out.logits
        loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]),
                                                 batch["source"][:, 1:].reshape(-1))
        optimiser.zero_grad(); loss.backward(); optimiser.step()
    bench.synchronize()
    print(json.dumps({"steps_per_s": len(batches) / (time.perf_counter() - start)}))
'''


def pyvene(python: Path, which: str, payload: dict) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "payload.pt"
        torch.save(payload, path)
        script = Path(tmp) / "pyvene_side.py"
        script.write_text(PYVENE_SIDE)
        proc = subprocess.run([str(python), str(script), which, str(path), str(Path(__file__).parent),
                               str(Path(__file__).resolve().parents[1])],
                              capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"pyvene side failed ({which}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--toy-steps", type=int, default=300)
    parser.add_argument("--lm-steps", type=int, default=20)
    parser.add_argument("--only", choices=["toy", "lm"], default=None, help="one of the two models")
    parser.add_argument("--model", default="smollm2-135m-instruct", help="the LM (a name or a local directory)")
    parser.add_argument("--device", default="cpu", help="the LM's device (the toy runs on the CPU)")
    args = parser.parse_args()
    torch.manual_seed(0)
    python = ensure_pyvene_venv()
    results = {}
    if args.only in (None, "toy"):
        setup = toy_setup()
        results["toy"] = {"ours": ours_toy(setup, args.toy_steps),
                          "pyvene": pyvene(python, "toy", {"setup": setup, "steps": args.toy_steps})}
    if args.only in (None, "lm"):
        batches = lm_batches(args.lm_steps, args.model)
        results["lm"] = {"ours": ours_lm(batches, args.model, args.device),
                         "pyvene": pyvene(python, "lm", {"batches": batches, "steps": args.lm_steps,
                                                         "model": args.model, "device": args.device})}
    for name, r in results.items():
        ratio = r["ours"]["steps_per_s"] / r["pyvene"]["steps_per_s"]
        line = (f"{name}: ours {r['ours']['steps_per_s']:.2f} steps/s, pyvene {r['pyvene']['steps_per_s']:.2f} "
                f"steps/s, ratio ours/pyvene {ratio:.2f}")
        if "iia" in r["ours"]:
            r["iia_gap"] = abs(r["ours"]["iia"] - r["pyvene"]["iia"])
            line += f"; IIA ours {r['ours']['iia']:.3f} pyvene {r['pyvene']['iia']:.3f} (gap {r['iia_gap']:.3f})"
        print(line)
        r["ratio"] = ratio
    print(json.dumps(results))


if __name__ == "__main__":
    main()
