"""Programs per second of the warm sandbox pool vs a fresh bubblewrap + python per program.

Both run the same short programs one at a time under the same bwrap namespaces (no network, read-only system,
private tmpfs, no home, cleared environment), so both give every program a fresh kernel-object world: the
baseline by starting ``bwrap ... python -I -S -c CODE`` per program, the pool by forking a warm interpreter into
new IPC and mount namespaces with a fresh tmpfs, seccomp and dropped privileges. Interleaved in blocks so that
load on a shared machine hits both alike; the load average is printed with the ratio. Acceptance: ratio >= 3.

Usage: python benchmarks/sandbox_throughput.py [--programs 60]
"""

from __future__ import annotations

import argparse
import os
import time

from diag.tir.sandbox import Limits, Sandbox, run_fresh

PROGRAMS = [
    "print(sum(i * i for i in range(1000)))",
    "import math\nprint(math.comb(40, 12))",
    "print(pow(7, 104, 977))",
    "x = [i % 7 for i in range(500)]\nprint(x.count(3))",
]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--programs", type=int, default=60)
    args = parser.parse_args()
    limits = Limits()
    pool_s = fresh_s = 0.0
    with Sandbox(workers=1, limits=limits, isolation="bwrap") as pool:
        pool.run("print(0)")  # the pool is warm before timing starts
        for block in range(0, args.programs, 10):
            codes = [PROGRAMS[i % len(PROGRAMS)] for i in range(block, min(block + 10, args.programs))]
            start = time.perf_counter()
            pooled = [pool.run(code) for code in codes]
            pool_s += time.perf_counter() - start
            start = time.perf_counter()
            fresh = [run_fresh(code, limits) for code in codes]
            fresh_s += time.perf_counter() - start
            assert all(a.status == b.status == "ok" and a.stdout == b.stdout for a, b in zip(pooled, fresh, strict=True))
    pool_rate, fresh_rate = args.programs / pool_s, args.programs / fresh_s
    print(f"warm pool (1 worker): {pool_rate:.1f} programs/s ({1e3 / pool_rate:.2f} ms per program)")
    print(f"fresh bwrap + python per program: {fresh_rate:.1f} programs/s ({1e3 / fresh_rate:.2f} ms per program)")
    print(f"ratio warm/fresh: {pool_rate / fresh_rate:.2f}x (target >= 3); load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
