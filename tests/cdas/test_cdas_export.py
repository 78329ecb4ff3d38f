"""Steering directions out: a llama.cpp control vector that reads back with ``gguf`` to the stored direction
exactly, safetensors and npz with the site and scale metadata, from real train / steer / sweep runs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from diag import contract
from diag.cdas import by_layer, export, steer, train
from diag.errors import DiagError
from diag.runs import RunStore


def _field(reader, name: str):
    f = reader.get_field(name)
    return f.contents() if hasattr(f, "contents") else f.parts[-1].tolist()


def _export(model: Path, layers: tuple[int, ...], rank: int = 1) -> export.Export:
    rng = np.random.default_rng(0)
    shape = (64,) if rank == 1 else (64, rank)
    return export.Export(str(model), "dogs", "cdas", "cdas-steer", "r1",
                         [export.Direction(la, rng.standard_normal(shape).astype(np.float32), {"m_plus": 1.5})
                          for la in layers])


def test_gguf_is_a_control_vector_that_reads_back_exactly(tiny_llama_dir: Path, tmp_path: Path) -> None:
    import gguf

    made = _export(tiny_llama_dir, (1, 3))
    path = export.write(made, "gguf", tmp_path / "v.gguf")
    reader = gguf.GGUFReader(path)
    assert _field(reader, "general.architecture") == "controlvector"
    assert _field(reader, "controlvector.model_hint") == "llama" and _field(reader, "controlvector.layer_count") == 2
    tensors = {t.name: np.asarray(t.data).reshape(-1) for t in reader.tensors}
    assert sorted(tensors) == ["direction.1", "direction.3"]
    for d in made.directions:
        assert tensors[f"direction.{d.layer}"].dtype == np.float32
        assert np.array_equal(tensors[f"direction.{d.layer}"], d.vector)  # bit for bit
    assert json.loads(_field(reader, "diag.scales")) == {"1": {"m_plus": 1.5}, "3": {"m_plus": 1.5}}
    assert "llama.cpp applies direction.L after its layer L" in _field(reader, "diag.layer_convention")
    assert [p.name for p in tmp_path.iterdir()] == ["v.gguf"]  # the temp file was renamed, not left behind


def test_safetensors_and_npz_carry_site_and_scale_metadata(tiny_llama_dir: Path, tmp_path: Path) -> None:
    from safetensors import safe_open

    made = _export(tiny_llama_dir, (1,), rank=2)
    export.write(made, "safetensors", tmp_path / "v.safetensors")
    with safe_open(tmp_path / "v.safetensors", "np") as f:
        meta = f.metadata()
        assert np.array_equal(f.get_tensor("direction.1"), made.directions[0].vector)
    assert json.loads(meta["sites"]) == ["L1.resid_post"] and json.loads(meta["scales"]) == {"1": {"m_plus": 1.5}}
    assert meta["concept"] == "dogs" and meta["method"] == "cdas" and meta["source_run"] == "r1"
    export.write(made, "npz", tmp_path / "v.npz")
    with np.load(tmp_path / "v.npz", allow_pickle=False) as data:
        assert np.array_equal(data["direction.1"], made.directions[0].vector)
        assert json.loads(str(data["metadata"])) == meta


@pytest.mark.parametrize(("layers", "rank", "fmt", "message"), [
    ((1,), 2, "gguf", "rank > 1: export it as safetensors or npz"),
    ((0,), 1, "gguf", "llama.cpp rejects direction.0"),
    ((1,), 1, "onnx", "unknown format 'onnx'"),
])
def test_what_a_format_cannot_hold_is_one_line(tiny_llama_dir: Path, tmp_path: Path, layers, rank, fmt,
                                               message) -> None:
    with pytest.raises(DiagError, match=message):
        export.write(_export(tiny_llama_dir, layers, rank), fmt, tmp_path / f"v.{fmt}")
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def tiny3(smollm2, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 3-block Llama with SmolLM2's tokenizer and chat template: blocks 1 and 2 are llama.cpp-steerable."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    _, tokenizer = smollm2
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    path = tmp_path_factory.mktemp("tiny3")
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def _only_run(store: RunStore, analysis: str) -> str:
    (info,) = store.list(analysis=analysis)
    return info.run_id


@pytest.mark.slow  # a real sweep: two steer studies (train, alpha choice, generation, judge), ~100 s on 2 cores
def test_steer_and_sweep_runs_export_their_stored_directions(tiny3: Path, tmp_path: Path, monkeypatch,
                                                             capsys) -> None:
    import gguf

    from diag.cli import main

    store = RunStore()
    config = by_layer.Config(model=str(tiny3), layers=(1, 2), concepts=("dogs", "music"), steps=1, alphas=(0.2,),
                             eval_prompts=2, max_new_tokens=3)
    _, result = contract.run(by_layer.ANALYSIS, config, store=store)
    per_layer = {layer: steer.Result.load(store.get(result.runs[str(layer)])) for layer in (1, 2)}
    out = tmp_path / "music.gguf"
    export.export_run(_only_run(store, by_layer.ANALYSIS.name), "gguf", out, concept="music", store=store)
    reader = gguf.GGUFReader(out)
    tensors = {t.name: np.asarray(t.data).reshape(-1) for t in reader.tensors}
    assert sorted(tensors) == ["direction.1", "direction.2"] and _field(reader, "controlvector.layer_count") == 2
    for layer, stored in per_layer.items():
        assert np.array_equal(tensors[f"direction.{layer}"], stored.vectors["music/cdas"])
    scales = json.loads(_field(reader, "diag.scales"))["2"]
    m, chosen = per_layer[2].projections["music/cdas"], per_layer[2].alphas["music/cdas/elicit"]
    assert scales["additive_scale"] == pytest.approx(m["m_plus"] - m["m_minus"])
    assert scales["clamp_target_elicit"] == pytest.approx(
        steer.clamp_target(m["m_plus"], m["m_minus"], "elicit", chosen, per_layer[2].residual_norm))
    # One steer run through the CLI: --json names the file and layer; a missing --concept is one line, exit 2.
    steer_id = result.runs["2"]
    for args, code, expected in (
            (["--format", "safetensors", "--concept", "dogs", "--method", "diffmean", "--out",
              str(tmp_path / "d.safetensors"), "--json"], 0, '"layers": [2]'),
            (["--format", "gguf"], 2, "holds concepts dogs, music: choose one with --concept")):
        monkeypatch.setattr(sys, "argv", ["diag", "cdas", "export", steer_id, *args])
        try:
            main()
            exit_code = 0
        except SystemExit as exc:
            exit_code = exc.code
        captured = capsys.readouterr()
        assert exit_code == code and expected in (captured.err if code else captured.out)
    from safetensors.numpy import load_file

    assert np.array_equal(load_file(tmp_path / "d.safetensors")["direction.2"], per_layer[2].vectors["dogs/diffmean"])
    # The app's CDAS page offers the same file as a download for the loaded run, concept, method and format.
    from apps.pages.cdas import LiveSteer

    live = LiveSteer()
    live.set_run(store.get(steer_id).config, per_layer[2])
    live.run_id, live.concept.value, live.method.value, live.export_format.value = steer_id, "music", "cdas", "gguf"
    export.export_run(steer_id, "gguf", tmp_path / "cli.gguf", concept="music", method="cdas", store=store)
    assert live.download.filename == "direction.gguf"
    assert live.export_file().getvalue() == (tmp_path / "cli.gguf").read_bytes()


@pytest.mark.slow  # a real rank-2 DII training run on the 3-block model (~35 s on 2 cores: JSD over 49k tokens)
def test_train_run_exports_its_basis_and_refuses_a_rank_2_control_vector(tiny3: Path, tmp_path: Path) -> None:
    store = RunStore()
    config = train.Config(model=str(tiny3), concept="dogs", layer=1, rank=2, steps=1)
    _, result = contract.run(train.ANALYSIS, config, store=store)
    run_id = _only_run(store, train.ANALYSIS.name)
    with pytest.raises(DiagError, match="rank > 1: export it as safetensors or npz"):
        export.export_run(run_id, "gguf", tmp_path / "t.gguf", store=store)
    summary = export.export_run(run_id, "npz", tmp_path / "t.npz", store=store)
    assert summary["method"] == "cdas" and summary["concept"] == "dogs"
    with np.load(tmp_path / "t.npz") as data:
        assert np.array_equal(data["direction.1"], result.basis.astype(np.float32))


def test_layer_l_is_hugging_faces_hidden_state_l_plus_one(tiny_llama_dir: Path) -> None:
    """The convention the export states: our layer L (where cdas reads and steers) is HF hidden_states[L + 1]."""
    import torch

    from diag.cdas.lm import residual_at
    from diag.zoo import load_lm

    model, _ = load_lm(str(tiny_llama_dir), "cpu")
    ids = torch.tensor([[1, 5, 9, 14]])
    with torch.no_grad():
        hidden = model(input_ids=ids, output_hidden_states=True).hidden_states
        ours = residual_at(model, 0, input_ids=ids)
    assert torch.equal(ours, hidden[1]) and not torch.equal(ours, hidden[0])
