"""Shared fixtures: every test gets its own run store; the SmolLM2 weights are loaded once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Dequantizing the embedded GGUF takes ~20 s: keep the weight cache outside the per-test DIAG_HOME.
os.environ.setdefault("DIAG_MODELS", str(Path.home() / ".cache" / "diag" / "models"))


@pytest.fixture(autouse=True)
def diag_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "diag_home"
    monkeypatch.setenv("DIAG_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def smollm2():
    """The real embedded SmolLM2-135M-Instruct and its tokenizer, on CPU, shared by all tests."""
    import torch

    from diag.zoo import load_lm

    torch.manual_seed(0)
    return load_lm("smollm2-135m-instruct", device="cpu")
