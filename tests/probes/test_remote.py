"""Remote execution through nnsight fails before any work, with one clear line, when it cannot run."""

from __future__ import annotations

import pytest
from transformers import LlamaConfig, LlamaForCausalLM

from probes import get_backend
from probes.errors import ProbeError, RemoteUnavailable


@pytest.fixture()
def hub_named_model() -> LlamaForCausalLM:
    config = LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1)
    model = LlamaForCausalLM(config)
    model.config.name_or_path = "meta-llama/Llama-3.1-70B"
    return model


def test_remote_without_key_names_the_missing_key(hub_named_model, monkeypatch):
    from nnsight import CONFIG

    monkeypatch.delenv("NDIF_API_KEY", raising=False)
    monkeypatch.setattr(CONFIG.API, "APIKEY", None)
    with pytest.raises(RemoteUnavailable, match="NDIF API key"):
        get_backend("nnsight", hub_named_model, remote=True)


def test_remote_offline_names_the_host(hub_named_model, monkeypatch):
    from nnsight import CONFIG

    monkeypatch.setenv("NDIF_API_KEY", "test-key")
    monkeypatch.setattr(CONFIG.API, "APIKEY", None)
    monkeypatch.setattr(CONFIG.API, "HOST", "https://ndif.invalid")  # .invalid never resolves (RFC 2606)
    with pytest.raises(RemoteUnavailable, match="cannot reach NDIF at https://ndif.invalid"):
        get_backend("nnsight", hub_named_model, remote=True)


def test_remote_needs_a_hub_id(smollm2, tiny_llama_dir, monkeypatch):
    from diag.zoo import load_lm

    model, tokenizer = load_lm(str(tiny_llama_dir), device="cpu")
    with pytest.raises(RemoteUnavailable, match="hosted on NDIF"):
        get_backend("nnsight", model, tokenizer, remote=True)


def test_remote_is_an_nnsight_feature(hub_named_model):
    with pytest.raises(ProbeError, match="nnsight backend only"):
        get_backend("torch", hub_named_model, remote=True)


def test_cli_reports_remote_failure_in_one_line(tmp_path):
    import subprocess
    import sys

    code = (
        "from probes.errors import RemoteUnavailable\n"
        "from diag.cli import main\n"
        "import diag.cli as cli\n"
        "@cli.app.command('boom')\n"
        "def boom():\n"
        "    raise RemoteUnavailable('cannot reach NDIF at https://ndif.invalid (offline?)')\n"
        "main()\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, "boom"], check=False, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["error: cannot reach NDIF at https://ndif.invalid (offline?)"]
