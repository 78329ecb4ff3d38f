"""Cost of capturing the residual stream at every layer of SmolLM2, per backend, vs a bare forward pass.

Batch 8 x 128 tokens, CPU or CUDA. Each backend is timed interleaved with a bare forward in the same process
(median of repeats), because shared machines drift. TransformerLens switches the shared model to eager
attention when it boots, so the torch backend is measured first (default attention) and the others against a
bare forward in eager attention.

Usage: python benchmarks/probe_overhead.py [--repeats 7]
"""

from __future__ import annotations

import argparse

import torch
from timing import interleaved_medians

from diag.zoo import load_lm
from probes import Site, get_backend


def ratio(backend, model, inputs, sites, repeats: int) -> tuple[float, float, float]:
    with torch.no_grad():
        medians = interleaved_medians({"bare": lambda: model(**inputs),
                                       "probed": lambda: backend.run(inputs, capture=sites)}, repeats, warmup=2)
    b, p = medians["bare"], medians["probed"]
    return p / b, b, p


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    model, tokenizer = load_lm("smollm2-135m-instruct", device=args.device)
    device = next(model.parameters()).device
    torch.manual_seed(0)
    ids = torch.randint(100, model.config.vocab_size, (8, 128), device=device)
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    sites = [Site(layer) for layer in range(model.config.num_hidden_layers)]
    print(f"SmolLM2-135M, batch 8 x 128, {len(sites)} residual sites, device {device}, median of {args.repeats}")
    for name in ("torch", "transformer_lens", "nnsight"):
        backend = get_backend(name, model, tokenizer)
        r, b, p = ratio(backend, model, inputs, sites, args.repeats)
        attn = model.config._attn_implementation
        print(f"{name:17s} ratio {r:5.3f}x   (bare {b * 1e3:7.1f} ms, probed {p * 1e3:7.1f} ms, attention={attn})")


if __name__ == "__main__":
    main()
