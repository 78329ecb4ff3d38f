"""The CLI contract for every command, found by walking the command tree (a new command is covered by itself).

A usage error (unknown command or option, missing argument, a value of the wrong type) is one line on stderr
and exit code 2; ``--help`` loads no torch and answers fast. Run in-process through ``main`` where possible.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time
import types
import typing
from pathlib import Path

import pytest
import typer

from diag.cli import app, main


def _walk(command: typing.Any, path: tuple[str, ...]) -> list[tuple[tuple[str, ...], typing.Any]]:
    found = [(path, command)]
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        found += _walk(sub, (*path, name))
    return found


COMMANDS = _walk(typer.main.get_command(app), ())
LEAVES = [(path, cmd) for path, cmd in COMMANDS if not hasattr(cmd, "commands")]
GROUPS = [path for path, cmd in COMMANDS if hasattr(cmd, "commands")]


def _number_type(param: typing.Any) -> type | None:
    """int or float for an option typed as one (optional included), else None."""
    hint = param.type_descriptor.annotation
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        hint = args[0] if len(args) == 1 else None
    return hint if hint in (int, float) else None


def _fill_required(cmd: typing.Any) -> list[str]:
    """Placeholder values for a command's required parameters, so only the error under test can occur."""
    args = []
    for param in cmd.params:
        if param.required:
            args += ["x"] if param.param_type_name == "argument" else [param.opts[0], "x"]
    return args


NUMBER_OPTIONS = [(path, cmd, param.opts[0]) for path, cmd in LEAVES for param in cmd.params
                  if param.param_type_name == "option" and _number_type(param) is not None]
REQUIRED = [(path, cmd) for path, cmd in LEAVES if any(p.required for p in cmd.params)]


def usage_error(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[str, str]:
    """Run ``diag ARGS`` in-process; assert exit 2 and one stderr line; return (stdout, that line)."""
    with pytest.raises(SystemExit) as info:
        main(list(args))
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    assert info.value.code == 2, (args, out, err)
    assert len(lines) == 1 and lines[0].startswith("error: "), (args, err)
    assert "Traceback" not in out + err
    return out, lines[0]


def test_the_tree_is_walked() -> None:
    names = {" ".join(path) for path, _ in COMMANDS}
    assert {"capture", "run", "sweep", "runs list", "tir sample", "cdas steer", "credit score", "boundary record",
            "report", "audit", "serve", "zoo list"} <= names
    assert len(NUMBER_OPTIONS) >= 40 and len(REQUIRED) >= 6


@pytest.mark.parametrize("path", [path for path, _ in COMMANDS], ids=lambda p: " ".join(p) or "diag")
def test_unknown_option(path: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> None:
    out, line = usage_error(capsys, *path, "--no-such-option", "x")
    assert "No such option: --no-such-option" in line and not out


@pytest.mark.parametrize(("path", "cmd"), REQUIRED, ids=[" ".join(p) for p, _ in REQUIRED])
def test_missing_required_parameter(path: tuple[str, ...], cmd: typing.Any,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    _, line = usage_error(capsys, *path)
    assert "Missing" in line and f"Try 'diag {' '.join(path)} --help'." in line


@pytest.mark.parametrize("path", GROUPS, ids=lambda p: " ".join(p) or "diag")
def test_group_without_command_shows_help_and_exits_2(path: tuple[str, ...], capsys) -> None:
    out, line = usage_error(capsys, *path)
    assert "Usage:" in out and line == f"error: {' '.join(('diag', *path))}: missing command (listed above)"


@pytest.mark.parametrize(("path", "cmd", "option"), NUMBER_OPTIONS,
                         ids=[f"{' '.join(p)} {o}" for p, _, o in NUMBER_OPTIONS])
def test_bad_number(path: tuple[str, ...], cmd: typing.Any, option: str,
                    capsys: pytest.CaptureFixture[str]) -> None:
    _, line = usage_error(capsys, *path, option, "many", *_fill_required(cmd))
    assert f"Invalid value for '{option}'" in line


def test_unknown_command_suggests_the_right_one(capsys: pytest.CaptureFixture[str]) -> None:
    _, line = usage_error(capsys, "captur")
    assert line == "error: No such command 'captur'. Did you mean 'capture'? Try 'diag --help'."
    _, line = usage_error(capsys, "capture", "M", "--layer", "3")
    assert line == "error: No such option: --layer (Possible options: --layers). Try 'diag capture --help'."


DIAG = [sys.executable, "-m", "diag.cli"]


@pytest.mark.parametrize("args", [["captur"], ["capture", "M", "--layer", "3"], ["tir", "analyse", "--bogus", "x"],
                                  [], ["tir", "sample", "--n", "many"]], ids=" ".join)
def test_usage_errors_as_a_user_sees_them(args: list[str]) -> None:
    """The installed entry point, not only main(): no Rich traceback box, one line, exit 2."""
    proc = subprocess.run([*DIAG, *args], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and proc.stderr.startswith("error: "), proc.stderr


_HELP_PROBE = """
import json, sys, time
from diag.cli import main
paths = json.loads(sys.argv[1])
codes = []
for path in paths:
    try:
        main([*path, "--help"])
        codes.append(0)
    except SystemExit as exc:
        codes.append(exc.code)
print(json.dumps({"codes": codes, "torch": "torch" in sys.modules, "panel": "panel" in sys.modules}))
"""


def test_every_help_loads_neither_torch_nor_panel() -> None:
    paths = [list(path) for path, _ in COMMANDS]
    proc = subprocess.run([sys.executable, "-c", _HELP_PROBE, json.dumps(paths)], capture_output=True, text=True,
                          timeout=120, check=True)
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["codes"] == [0] * len(paths)
    assert not report["torch"] and not report["panel"]


def test_import_diag_cli_loads_neither_torch_nor_panel() -> None:
    probe = "import diag.cli, sys; assert 'torch' not in sys.modules and 'panel' not in sys.modules"
    subprocess.run([sys.executable, "-c", probe], check=True, timeout=60)


def _cli_help_benchmark() -> types.ModuleType:
    """benchmarks/cli_help.py: the test bounds the same measurement the benchmark prints (one floor app, one timer)."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "cli_help.py"
    spec = importlib.util.spec_from_file_location("cli_help_benchmark", path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def test_help_costs_about_a_bare_typer_help() -> None:
    """Every ``--help`` against the floor any typer CLI with sub-commands pays, measured alongside.

    The issue asks for < 1.5 s; idle, every call takes ~0.2 s (benchmarks/cli_help.py prints them). Wall clock
    on a shared machine swings 10x, so the test bounds the ratio to the floor (a two-level typer app's
    ``sub hello --help``) measured in the same minute: ~1.2x here, ~8x when every call imported torch. The
    60 s bound only catches a hang.
    """
    bench = _cli_help_benchmark()
    floor_argv = [sys.executable, "-c", bench.FLOOR_APP, "sub", "hello", "--help"]
    floor = sorted(bench.seconds(floor_argv) for _ in range(3))[1]
    times = {" ".join(("diag", *path)): bench.seconds([*DIAG, *path, "--help"]) for path, _ in COMMANDS}
    ranked = sorted(times.items(), key=lambda item: -item[1])
    print(f"\nfloor (a two-level typer app's sub hello --help): {floor:.2f} s")
    print("\n".join(f"{secs:6.2f} s  ({secs / floor:4.1f}x)  {name} --help" for name, secs in ranked))
    median = sorted(times.values())[len(times) // 2]
    assert median / floor < 2.0, (floor, ranked)
    assert ranked[0][1] < 60


_LAYER_PROBE = """
import sys, time
start = time.perf_counter()
from diag.cli import main
try:
    main(["capture", "smollm2-135m-instruct", "--layers", "0,99"])
except SystemExit as exc:
    print(exc.code, "torch" in sys.modules, round(time.perf_counter() - start, 3))
"""


@pytest.mark.parametrize("first_run", [False, True], ids=["cached", "first-run"])
def test_layer_range_fails_before_torch_or_weights(first_run: bool, diag_home: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """``--layers 0,99`` is refused from the model's config: no torch, no weights, no run (bar: < 2 s).

    On a first run the dequantized cache (and its config.json) does not exist yet: the GGUF header answers.
    """
    if first_run:
        monkeypatch.setenv("DIAG_MODELS", str(tmp_path / "empty-models"))
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _LAYER_PROBE], capture_output=True, text=True, timeout=60,
                          check=False)
    wall = time.perf_counter() - start
    code, torch_loaded, inside = proc.stdout.split()
    print(f"--layers 0,99 refused in {wall:.2f} s (process), {inside} s (in main)")
    assert code == "2" and torch_loaded == "False", proc.stdout
    assert "layer(s) [99] out of range: smollm2-135m-instruct has layers 0..29" in proc.stderr
    assert wall < 2.0
    runs = diag_home / "runs"
    assert not runs.exists() or not [p for p in runs.iterdir() if p.is_dir()]
