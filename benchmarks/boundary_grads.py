"""Frames per second of RA-NLD's batched boundary gradients vs a per-frame loop and a bare forward+backward.

Same policy (the shipped RoadRunner vanilla Q-network) and the same frames (a short greedy rollout), one process;
each measurement is interleaved with the others and the median of repeats is reported, because shared machines
drift. The bare baseline is one batched forward and a backward of the summed Q-values to the input: the least
any input-gradient method can cost. On CUDA everything runs with TF32 off (``exact_matmul``), as the analysis
does, and the batched gradients use the device's chunk size (``nld.gradient_chunk``: the whole set on a GPU).

Usage: python benchmarks/boundary_grads.py [--frames 128] [--repeats 5] [--device auto|cpu|cuda]
"""

from __future__ import annotations

import argparse

import torch
from timing import interleaved_medians

from diag.boundary.nld import boundary_gradients, gradient_chunk
from diag.boundary.policy.load import load_policy
from diag.boundary.policy.play import play
from diag.device import exact_matmul, resolve_device


def bare_forward_backward(model: torch.nn.Module, frames: torch.Tensor) -> torch.Tensor:
    x = frames.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(model(x).sum(), x)
    return grad


def measure(frames_wanted: int, repeats: int, device: torch.device) -> tuple[int, int, str, dict[str, float]]:
    """(frames measured, frames per chunk, game, median seconds of batched / per-frame loop / bare fwd+bwd)."""
    policy = load_policy("roadrunner-vanilla")
    model = policy.network.to(device)
    # 8 episodes of frames/4 steps: enough frames though some end early (4 gave 1,760 of 2,048 on an H200)
    episodes = play(model, policy.game, 8, frames_wanted // 4, seed=0, keep_states=True)
    frames = episodes.states[:frames_wanted]
    n = len(frames)
    batched = lambda: boundary_gradients(model, frames)
    looped = lambda: [boundary_gradients(model, frames[i:i + 1]) for i in range(n)]
    bare = lambda: bare_forward_backward(model, frames)
    with exact_matmul(False):
        torch.testing.assert_close(torch.cat(looped()), batched(), rtol=1e-4, atol=1e-6)  # same numbers
        med = interleaved_medians({"batched": batched, "per-frame loop": looped, "bare forward+backward": bare},
                                  repeats)
    return n, min(n, gradient_chunk(frames)), policy.game, med


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--frames", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda[:N]")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    n, chunk, game, med = measure(args.frames, args.repeats, device)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{torch.get_num_threads()} threads"
    print(f"{n} frames of {game}, Nature-CNN dueling Q-network, {device} ({where}), TF32 off, "
          f"chunks of {chunk} frames, median of {args.repeats}")
    for name, seconds in med.items():
        print(f"{name:22s} {n / seconds:9.1f} frames/s  ({seconds * 1e3:8.1f} ms)")
    loop_target = 50 if device.type == "cuda" else 5
    print(f"batched vs per-frame loop:        {med['per-frame loop'] / med['batched']:.2f}x faster "
          f"(target >= {loop_target}x)")
    print(f"batched vs bare forward+backward: {med['batched'] / med['bare forward+backward']:.2f}x the time "
          f"(target <= 1.3x)")


if __name__ == "__main__":
    main()
