"""Seconds of ``diag ... --help`` for every command, against a typer app's help and ``import torch``.

The issue's bar is < 1.5 s per call. The floor is what any typer CLI with sub-commands pays (a two-level app's
``sub hello --help``: interpreter, typer, Rich rendering);
``import torch`` is what each call paid before the commands imported their analyses lazily. Each command and
both baselines run interleaved, ``--repeats`` rounds, medians reported, because shared machines drift.

Usage: python benchmarks/cli_help.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

import typer

from diag.cli import app

FLOOR_APP = """
import typer
app, sub = typer.Typer(), typer.Typer()
app.add_typer(sub, name="sub")
@sub.command()
def hello(count: int = 1, name: str = "x") -> None:
    \"\"\"Say hello.\"\"\"
@sub.command()
def bye() -> None:
    \"\"\"Say bye.\"\"\"
app()
"""


def command_paths(command: object, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = [path]
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        found += command_paths(sub, (*path, name))
    return found


def seconds(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, capture_output=True, check=True, timeout=120)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    contenders = {"floor: typer app --help": [sys.executable, "-c", FLOOR_APP, "sub", "hello", "--help"],
                  "baseline: python -c 'import torch'": [sys.executable, "-c", "import torch"]}
    for path in command_paths(typer.main.get_command(app)):
        contenders[" ".join(("diag", *path, "--help"))] = [sys.executable, "-m", "diag.cli", *path, "--help"]
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(args.repeats):
        for name, argv in contenders.items():
            times[name].append(seconds(argv))
    medians = {name: statistics.median(values) for name, values in times.items()}
    floor = medians.pop("floor: typer app --help")
    torch_import = medians.pop("baseline: python -c 'import torch'")
    print(f"floor (typer app: sub hello --help): {floor:.3f} s; python -c 'import torch': {torch_import:.3f} s")
    for name, value in sorted(medians.items(), key=lambda item: -item[1]):
        print(f"{value:6.3f} s  {value / floor:4.1f}x floor  {value / torch_import:4.2f}x torch  {name}")
    slowest = max(medians.values())
    print(f"slowest --help: {slowest:.3f} s ({'under' if slowest < 1.5 else 'OVER'} the 1.5 s bar); "
          f"median {statistics.median(medians.values()):.3f} s")


if __name__ == "__main__":
    main()
