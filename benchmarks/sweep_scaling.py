"""Wall time of one sweep run serially vs on a local Ray cluster, and the per-task overhead Ray adds.

Usage: python benchmarks/sweep_scaling.py [SWEEP.json]
Default sweep: 8 capture runs on the embedded SmolLM2 (2 layer sets x 4 prompts). Each backend writes into its
own fresh store, so nothing is reused. Ray's start-up is timed apart from the sweep; the per-task overhead is
the round trip of an empty task, measured on the same cluster. Results must agree with the serial ones up to
float reduction order (a Ray task runs torch with one thread, the serial loop with all cores).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import ray

from diag.runs import RunStore
from diag.sweep import load_sweep, run_sweep, sweep_from_dict

DEFAULT = {
    "analysis": "capture",
    "base": {"model": "smollm2-135m-instruct", "device": "cpu"},
    "axes": {
        "layers": [[0, 15, 29], [5, 10, 20, 25]],
        "prompt": ["The capital of France is", "Two plus two is", "The sky is blue because", "Water boils at"],
    },
}


@ray.remote
def _empty() -> None:
    return None


def main() -> None:
    spec = load_sweep(Path(sys.argv[1])) if len(sys.argv) > 1 else sweep_from_dict(DEFAULT)
    n = len(spec.points())
    with tempfile.TemporaryDirectory() as tmp:
        serial = run_sweep(spec, "serial", store=RunStore(Path(tmp) / "serial"))
        t0 = time.perf_counter()
        ray.init(include_dashboard=False, log_to_driver=False)
        startup = time.perf_counter() - t0
        try:
            on_ray = run_sweep(spec, "ray", store=RunStore(Path(tmp) / "ray"))
            ray.get([_empty.remote() for _ in range(8)])  # warm the workers
            t0 = time.perf_counter()
            for _ in range(50):
                ray.get(_empty.remote())
            per_task = (time.perf_counter() - t0) / 50
        finally:
            ray.shutdown()
    drift = max_relative_difference(on_ray.summaries, serial.summaries)
    print(f"sweep: {n} runs of {spec.analysis}, {os.cpu_count()} CPUs")
    print(f"serial wall: {serial.wall_s:.2f} s   ray wall: {on_ray.wall_s:.2f} s (+ {startup:.2f} s cluster start)")
    print(f"serial / ray: {serial.wall_s / on_ray.wall_s:.2f}x   "
          f"(including start-up: {serial.wall_s / (on_ray.wall_s + startup):.2f}x)")
    print(f"ray per-task overhead (empty task round trip): {per_task * 1e3:.2f} ms")
    print(f"max relative difference of ray vs serial summary numbers: {drift:.1e}")


def max_relative_difference(a: object, b: object) -> float:
    """Largest relative gap between matching numbers of two nested summaries (strings/shapes must be equal)."""
    if isinstance(a, dict) and isinstance(b, dict):
        assert a.keys() == b.keys(), "ray and serial summaries have different fields"
        return max((max_relative_difference(a[k], b[k]) for k in a), default=0.0)
    if isinstance(a, list) and isinstance(b, list):
        assert len(a) == len(b), "ray and serial summaries differ in length"
        return max((max_relative_difference(x, y) for x, y in zip(a, b, strict=True)), default=0.0)
    if isinstance(a, float) or isinstance(b, float):
        return abs(a - b) / max(abs(a), abs(b), 1e-12)  # type: ignore[operator]
    assert a == b, f"ray and serial results differ: {a!r} vs {b!r}"
    return 0.0


if __name__ == "__main__":
    main()
