"""The CLI end to end, as a user runs it: JSON summaries, and exit code 2 with one line on bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

DIAG = [sys.executable, "-m", "diag.cli"]


def diag(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*DIAG, *args], check=False, capture_output=True, text=True, timeout=300)


def test_capture_prints_shapes_norms_and_saves_a_run(smollm2, diag_home: Path) -> None:
    out = diag("capture", "smollm2-135m-instruct", "--prompt", "The capital of France is",
               "--layers", "0,15,29", "--json")
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["next_token"].strip() == "Paris"
    assert set(summary["sites"]) == {"L0.resid_post", "L15.resid_post", "L29.resid_post"}
    assert all(site["shape"] == [5, 576] and site["norm"] > 0 for site in summary["sites"].values())
    listed = json.loads(diag("runs", "list", "--json").stdout)["runs"]
    assert [r["run_id"] for r in listed] == [summary["run_id"]]
    shown = json.loads(diag("runs", "show", summary["run_id"], "--json").stdout)
    assert shown["config"]["layers"] == [0, 15, 29]
    removed = json.loads(diag("runs", "rm", summary["run_id"][:14], "--json").stdout)["removed"]
    assert removed == [summary["run_id"]]
    assert json.loads(diag("runs", "list", "--json").stdout)["runs"] == []
    assert not [p for p in (diag_home / "runs").iterdir() if p.is_dir()]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("capture", "gpt-17"), "unknown model"),
        (("capture", "smollm2-135m-instruct", "--layers", "0,99"), "out of range"),
        (("capture", "smollm2-135m-instruct", "--layers", "x"), "comma-separated"),
        (("capture", "smollm2-135m-instruct", "--component", "nope"), "component"),
        (("runs", "show", "nothing-here"), "no run"),
        (("runs", "rm", "nothing-here"), "no run"),
        (("runs", "rm"), "name the runs to delete"),
        (("run", "/nonexistent/config.json"), "does not exist"),
        # Issue 16: usage errors were Rich tracebacks with exit 1.
        (("captur",), "No such command 'captur'. Did you mean 'capture'?"),
        (("capture", "M", "--layer", "3"), "No such option: --layer"),
        (("tir", "analyse", "--bogus", "x"), "No such option: --bogus"),
        # Issue 20: tracebacks, a failed run left behind, a hang before any check.
        (("run", "DIR"), "is a directory, not a file"),
        (("run", "BINARY"), "is not a UTF-8 text file"),
        (("tir", "sample", "--temperature", "nan"), "tir.temperature must be a finite number, got nan"),
        (("tir", "sample", "--temperature", "0"), "tir.temperature 0 out of range: must be > 0 and <= 10"),
        (("tir", "sample", "--n", "many"), "Invalid value for '--n'"),
        (("tir", "sample", "--n", "0"), "tir.n_samples 0 out of range: must be 1..4096"),
        (("tir", "sample", "--per-cell", "100000000", "--n", "1"), "tir.per_cell 100000000 out of range: must be 1..1000"),
        (("tir", "sample", "--device", "gpu"), "unknown device 'gpu'"),
        (("credit", "score", "--data", "DIR"), "is a directory, not a file; use a text file or one of heldout, train"),
        (("credit", "tabular", "--n-pairs", "-5"), "credit-tabular.n_pairs -5 out of range"),
        (("cdas", "steer", "--alphas", ""), "cdas-steer: no alphas given"),
        (("cdas", "steer", "--layer", "40"), "layer(s) [40] out of range"),
        (("boundary", "record", "--eps", "inf"), "boundary-episodes.eps must be a finite number, got inf"),
    ],
)
def test_bad_input_exits_2_with_one_line(args: tuple[str, ...], needle: str, diag_home: Path, tmp_path: Path) -> None:
    (tmp_path / "binary.json").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    args = tuple({"DIR": str(tmp_path), "BINARY": str(tmp_path / "binary.json")}.get(a, a) for a in args)
    out = diag(*args)
    assert out.returncode == 2
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and needle in lines[0] and lines[0].startswith("error: "), out.stderr
    runs = diag_home / "runs"
    assert not runs.exists() or not [p for p in runs.iterdir() if p.is_dir()], "bad input left a run behind"


def test_run_config_file_validates_fields(tmp_path: Path) -> None:
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"analysis": "capture", "layers": [0], "temperature": 3}))
    out = diag("run", str(config))
    assert out.returncode == 2 and "unknown field(s) temperature" in out.stderr
    config.write_text('{"analysis": "capture", "layers": [0],')
    out = diag("run", str(config))
    assert out.returncode == 2 and "invalid JSON" in out.stderr


def test_json_errors_say_where_in_plain_words(tmp_path: Path) -> None:
    """Issue 16: "Invalid control character at at column 196" (json's message ends in "at")."""
    config = tmp_path / "c.json"
    config.write_text('{"analysis": "capture", "prompt": "tab\there"}')
    out = diag("run", str(config))
    assert out.returncode == 2
    assert out.stderr.strip() == (f"error: config file {config}: invalid JSON at line 1, column 39: "
                                  "Invalid control character"), out.stderr
