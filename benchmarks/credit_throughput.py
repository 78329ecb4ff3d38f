"""Throughput of the batched per-token reward scorer vs a naive per-example loop and vs two bare forwards.

Same model (SmolLM2 + the committed DPO adapter; reference = adapter disabled) and the same held-out
responses for all three, timed interleaved in one process (median of repeats), because shared machines drift:

- ours: ``ModelPair.score``: each batch is one token tree (the system turn, each prompt and the words a chosen
  and a rejected answer share are computed once), the reference pass starts from the policy's residual stream
  below the adapter, and the LM head runs only where a response token is predicted;
- naive: one example at a time, full logits, log-softmax over the whole sequence, policy then reference;
- floor: two bare batched forward passes (policy, reference) over the same sequences, left-padded, nothing
  else. It is the floor for scoring every sequence in full; sharing prefixes and the trunk does less work,
  so ours can run below it.

Usage: python benchmarks/credit_throughput.py [--pairs 16] [--repeats 3] [--batch 16]
"""

from __future__ import annotations

import argparse

import torch
from timing import interleaved_medians

from diag.credit.batches import collate
from diag.credit.data import make_pairs
from diag.credit.encoding import encode
from diag.credit.inputs import resolve_policy
from diag.credit.sources import load_pair


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    pair = load_pair(resolve_policy("smollm2-dpo-credit"), None, None, device=args.device)
    tok, device = pair.tokenizer, pair.device
    encoded = [encode(tok, p.prompt, text) for p in make_pairs("heldout", args.pairs, seed=0)
               for text in (p.chosen, p.rejected)]
    n_tokens = sum(len(e.response_ids) for e in encoded)
    order = sorted(encoded, key=lambda e: len(e.ids))
    batches = [collate(order[i:i + args.batch], tok.pad_token_id, device) for i in range(0, len(order), args.batch)]

    def ours() -> None:
        pair.score(encoded, batch_size=args.batch)

    def naive() -> None:
        for e in encoded:
            ids = torch.tensor([e.ids], device=device)
            n = len(e.response_ids)
            policy = torch.log_softmax(pair.policy(input_ids=ids).logits, -1)
            with pair.as_reference() as reference:
                ref = torch.log_softmax(reference(input_ids=ids).logits, -1)
            targets = ids[:, 1:, None]
            _ = pair.beta * (policy[:, :-1].gather(-1, targets) - ref[:, :-1].gather(-1, targets))[0, -n:, 0]

    def floor() -> None:
        for ids, attention, positions, _, _ in batches:
            pair.policy(input_ids=ids, attention_mask=attention, position_ids=positions)
            with pair.as_reference() as reference:
                reference(input_ids=ids, attention_mask=attention, position_ids=positions)

    with torch.no_grad():
        median = interleaved_medians({"ours": ours, "naive": naive, "floor": floor}, args.repeats)
    print(f"device={device} sequences={len(encoded)} response_tokens={n_tokens} batch={args.batch} "
          f"threads={torch.get_num_threads()}")
    for name, seconds in median.items():
        print(f"{name:6s} {seconds:8.3f} s  {n_tokens / seconds:9.1f} response tokens/s")
    print(f"speedup vs naive loop: {median['naive'] / median['ours']:.2f}x (target >= 5)")
    print(f"cost vs two bare forwards: {median['ours'] / median['floor']:.3f}x (target <= 1.15)")


if __name__ == "__main__":
    main()
