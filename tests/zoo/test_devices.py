"""Bad device, dtype or memory requests fail with one line before any weight loads and leave no run behind;
a lowered dtype carries its measured faithfulness to float32."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from diag.errors import DiagError
from diag.zoo.lm import check_fits, load_lm_numerics, parameter_estimate

DIAG = [sys.executable, "-m", "diag.cli"]


def diag(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*DIAG, *args], check=False, capture_output=True, text=True, timeout=300)


@pytest.fixture
def huge_model_dir(tmp_path: Path) -> Path:
    """A model directory whose config claims a 70B-class Llama (no weights: the estimate comes from the config)."""
    config = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 8192,
              "intermediate_size": 28672, "num_hidden_layers": 80, "num_attention_heads": 64,
              "vocab_size": 128256, "tie_word_embeddings": False}
    (tmp_path / "config.json").write_text(json.dumps(config))
    return tmp_path


def _no_runs(diag_home: Path) -> bool:
    runs = diag_home / "runs"
    return not runs.exists() or not [p for p in runs.iterdir() if p.is_dir()]


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("command", [("capture", "smollm2-135m-instruct"), ("cdas", "train", "--steps", "1"),
                                     ("credit", "score", "--n-pairs", "1"), ("credit", "tabular"),
                                     ("cdas", "toy", "--dii-steps", "1"), ("tir", "sample")])
def test_cuda_without_cuda_is_one_line_exit_2_and_no_run(command, diag_home: Path) -> None:
    out = diag(*command, "--device", "cuda")
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip().splitlines()[-1] == ("error: device 'cuda' asked for but CUDA is not available on "
                                                   "this machine")
    assert _no_runs(diag_home)


@pytest.mark.parametrize("command", [("capture", "smollm2-135m-instruct"), ("cdas", "train", "--steps", "1"),
                                     ("credit", "score", "--n-pairs", "1")])
def test_unknown_dtype_is_one_line_exit_2_and_no_run(command, diag_home: Path) -> None:
    out = diag(*command, "--device", "cpu", "--dtype", "float64")
    assert out.returncode == 2, out.stderr
    line = out.stderr.strip().splitlines()[-1]  # the Config refuses it, before any model loads
    assert line.startswith("error: ") and "dtype" in line and "'float64'" in line and "bfloat16" in line, line
    assert _no_runs(diag_home)


def test_a_model_too_large_for_memory_fails_before_loading(huge_model_dir: Path, diag_home: Path) -> None:
    params = parameter_estimate(str(huge_model_dir))
    assert 60e9 < params < 80e9  # ~70B from the config alone
    out = diag("capture", str(huge_model_dir), "--device", "cpu")
    assert out.returncode == 2, out.stderr
    line = out.stderr.strip().splitlines()[-1]
    assert line.startswith("error: model") and "needs about" in line and "GiB on cpu" in line
    assert _no_runs(diag_home)


def test_memory_check_against_a_given_free_figure(tiny_llama_dir: Path) -> None:
    params = parameter_estimate(str(tiny_llama_dir))
    exact = sum(p.numel() for p in load_lm_numerics(str(tiny_llama_dir), "cpu")[0].parameters())
    assert abs(params - exact) / exact < 0.01  # from the safetensors size, header included
    with pytest.raises(DiagError, match="needs about .* GiB on cpu but 0.0 GiB is free"):
        check_fits(str(tiny_llama_dir), torch.device("cpu"), torch.float32, free_bytes=1_000)
    check_fits(str(tiny_llama_dir), torch.device("cpu"), torch.float32, free_bytes=10 * 4 * exact)


def test_a_lowered_dtype_carries_its_measured_faithfulness(tiny_llama_dir: Path) -> None:
    _, _, exact = load_lm_numerics(str(tiny_llama_dir), "cpu")
    assert exact == {"device": "cpu", "dtype": "float32", "allow_tf32": False}
    model, _, lowered = load_lm_numerics(str(tiny_llama_dir), "cpu", "bfloat16")
    assert next(model.parameters()).dtype == torch.bfloat16
    assert lowered["probe_tokens"] > 40
    # bfloat16 keeps 8 bits of mantissa: per-token KL to float32 is small but not zero on a random model
    assert 0 < lowered["kl_per_token"] < 1e-2 and lowered["top1_agreement"] >= 0.9
