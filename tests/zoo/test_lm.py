"""The model zoo loads real models offline and refuses unknown names with one line."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from diag.errors import DiagError
from diag.zoo import load_lm
from diag.zoo.lm import lm_provenance


def test_embedded_smollm2_is_real_and_answers_paris(smollm2) -> None:
    model, tokenizer = smollm2
    assert type(model).__name__ == "LlamaForCausalLM"
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    inputs = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True, return_dict=True, return_tensors="pt",
    )
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=10, do_sample=False)
    assert "Paris" in tokenizer.decode(out[0, inputs["input_ids"].shape[1]:])


def test_embedded_provenance_has_gguf_hash(smollm2) -> None:
    info = lm_provenance("smollm2-135m-instruct")
    assert info["kind"] == "embedded-gguf" and len(info["sha256"]) == 64


def test_local_directory_loads(tiny_llama_dir: Path) -> None:
    model, tokenizer = load_lm(str(tiny_llama_dir), device="cpu")
    assert model.config.num_hidden_layers == 2
    ids = tokenizer("hello", return_tensors="pt")["input_ids"]
    assert model(ids).logits.shape[-1] == model.config.vocab_size


def test_unknown_name_lists_known_models() -> None:
    with pytest.raises(DiagError, match="smollm2-135m-instruct") as info:
        load_lm("gpt-17")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("name", ["/no/such/model", "./missing-model", "~/sft", "weights.gguf", "a/b/c"])
def test_a_missing_path_is_named_not_taken_for_a_hub_id(name: str) -> None:
    with pytest.raises(DiagError, match="no such directory or .gguf file"):
        load_lm(name)


def test_a_legacy_hub_id_in_the_local_cache_resolves(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ids without an org (gpt2, distilgpt2) are hub ids too when the local Hugging Face cache holds them."""
    import json

    from huggingface_hub import constants

    from diag.zoo.sources import layer_count, resolve_lm_source

    repo = tmp_path / "models--gpt2"
    (repo / "snapshots" / "abc").mkdir(parents=True)
    (repo / "snapshots" / "abc" / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_layer": 12}))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    assert resolve_lm_source("gpt2").kind == "hub" and layer_count("gpt2") == 12
    with pytest.raises(DiagError, match="unknown model 'distilgpt2'"):
        resolve_lm_source("distilgpt2")


def test_corrupt_local_checkpoint_fails_cleanly(tiny_llama_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    for item in tiny_llama_dir.iterdir():
        (broken / item.name).write_bytes(item.read_bytes())
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(DiagError, match="cannot load model"):
        load_lm(str(broken), device="cpu")


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_weights_are_named_before_any_analysis(tiny_llama_dir: Path, tmp_path: Path, bad: float) -> None:
    from safetensors.torch import load_file, save_file

    from diag import capture, contract
    from diag.runs import RunStore

    diverged = tmp_path / "diverged"
    diverged.mkdir()
    for item in tiny_llama_dir.iterdir():
        (diverged / item.name).write_bytes(item.read_bytes())
    weights = load_file(str(diverged / "model.safetensors"))
    weights["model.layers.1.mlp.up_proj.weight"][3, 5] = bad
    save_file(weights, str(diverged / "model.safetensors"), metadata={"format": "pt"})
    store = RunStore()
    with pytest.raises(DiagError, match="weight model.layers.1.mlp.up_proj.weight has non-finite values") as info:
        contract.run(capture.ANALYSIS, capture.Config(model=str(diverged), prompt="hi", layers=(0,), device="cpu"),
                     store=store)
    assert "\n" not in str(info.value) and store.list() == []


def test_a_gguf_file_loads_like_the_embedded_model(smollm2, tmp_path: Path, monkeypatch) -> None:
    """A user's GGUF file (here the embedded SmolLM2's, under another path) is read from its header before any
    load, dequantized once into its own cache, pinned by hash into run ids, and equals the embedded model."""
    from diag import capture, contract
    from diag.zoo.sources import _smollm2_gguf, layer_count, resolve_lm_source

    monkeypatch.setenv("DIAG_MODELS", str(tmp_path / "models"))
    gguf = tmp_path / "my-model.Q8_0.gguf"
    gguf.symlink_to(_smollm2_gguf())
    assert resolve_lm_source(str(gguf)).kind == "gguf-file" and layer_count(str(gguf)) == 30  # header only
    model, _ = load_lm(str(gguf), device="cpu")
    base, tokenizer = smollm2
    ids = tokenizer("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.equal(model(ids).logits, base(ids).logits)
    assert [p.name[:14] for p in (tmp_path / "models" / "gguf").iterdir() if p.is_dir()] == ["my-model.Q8_0-"]
    config = capture.ANALYSIS.pin(capture.Config(model=str(gguf), prompt="hi", layers=(0,), device="cpu"))
    assert config.model_sha256 is not None and len(config.model_sha256) == 64
    fake = tmp_path / "fake.gguf"
    fake.write_bytes(b"not a gguf at all")
    with pytest.raises(DiagError, match="is not a GGUF file"):
        contract.run(capture.ANALYSIS, capture.Config(model=str(fake), prompt="hi", layers=(0,), device="cpu"))


def test_a_peft_adapter_directory_loads_merged_into_its_base(smollm2, tmp_path: Path) -> None:
    """Any analysis takes a LoRA adapter directory as its model (ours here, as TRL and peft save them): merged into
    the base its adapter_config names, equal to peft's own merge; a base that cannot be found is one line."""
    import json
    import shutil

    from peft import PeftModel

    from diag import capture, contract
    from diag.zoo.sources import layer_count, resolve_lm_source

    adapter = Path(__file__).resolve().parents[2] / "diag" / "zoo" / "assets" / "smollm2-dpo-credit"
    assert resolve_lm_source(str(adapter)).kind == "adapter" and layer_count(str(adapter)) == 30
    model, _ = load_lm(str(adapter), device="cpu")
    base, tokenizer = load_lm("smollm2-135m-instruct", device="cpu")
    theirs = PeftModel.from_pretrained(base, str(adapter)).merge_and_unload()
    ids = tokenizer("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, theirs(ids).logits, rtol=0, atol=1e-5)
        assert not torch.allclose(model(ids).logits, smollm2[0](ids).logits)  # the adapter changed the model
    config = capture.ANALYSIS.pin(capture.Config(model=str(adapter), prompt="hi", layers=(0,), device="cpu"))
    assert config.model_sha256 is not None
    moved = tmp_path / "moved-adapter"
    shutil.copytree(adapter, moved)
    settings = json.loads((moved / "adapter_config.json").read_text())
    (moved / "adapter_config.json").write_text(json.dumps({**settings, "base_model_name_or_path": "/home/me/sft"}))
    with pytest.raises(DiagError, match="its base model '/home/me/sft' cannot be found here") as info:
        contract.run(capture.ANALYSIS, capture.Config(model=str(moved), prompt="hi", layers=(0,), device="cpu"))
    assert "\n" not in str(info.value)


def _slow_build(counter: Path, version: str):  # a build that takes long enough for loaders to overlap
    import time

    def build(folder: Path) -> dict[str, str]:
        with counter.open("a") as f:
            f.write(version + "\n")
        (folder / "weights.bin").write_bytes(b"\0" * 1024)
        time.sleep(0.5)
        (folder / "config.json").write_text(version)
        return {"sha256": version}

    return build


def _read_slowly(cache: Path) -> str:  # a load outlasting a build: another version's builder could swap the folder
    import time

    first = (cache / "config.json").read_text()
    time.sleep(0.6)
    assert (cache / "weights.bin").read_bytes() == b"\0" * 1024
    return first + "/" + (cache / "config.json").read_text()


def _load_concurrently(cache: Path, counter: Path, version: str) -> str:
    from diag.zoo.lm import load_once

    return load_once(cache, lambda info: info["sha256"] == version, _slow_build(counter, version), _read_slowly)


def test_concurrent_loaders_build_a_cache_once_and_never_see_half_of_it(tmp_path: Path) -> None:
    """Two jobs loading a model whose cache is missing or stale (a retrained adapter) once wrote one staging
    folder together and deleted each other's files (FileNotFoundError in rmtree, seen with the planted model)."""
    import multiprocessing

    cache, counter = tmp_path / "models" / "some-lm", tmp_path / "builds.txt"
    with multiprocessing.get_context("fork").Pool(4) as pool:
        seen = pool.starmap(_load_concurrently, [(cache, counter, "v1")] * 4)
    assert seen == ["v1/v1"] * 4 and counter.read_text() == "v1\n"
    with multiprocessing.get_context("fork").Pool(3) as pool:  # stale: the marker names another version
        seen = pool.starmap(_load_concurrently, [(cache, counter, "v2")] * 3)
    assert seen == ["v2/v2"] * 3 and counter.read_text() == "v1\nv2\n"
    assert sorted(p.name for p in cache.parent.iterdir()) == ["some-lm", "some-lm.lock"]  # no staging left


def test_loaders_of_two_versions_each_read_their_own_whole(tmp_path: Path) -> None:
    """Two jobs on two versions of one model name (two planted adapters screened side by side) once swapped the
    folder under each other's load: one read a folder that had vanished between two renames ("Repo id must be
    in the form ...") or the other version's weights. Each loader reads the version it asked for, start to end."""
    import multiprocessing

    cache, counter = tmp_path / "models" / "some-lm", tmp_path / "builds.txt"
    versions = ["v1", "v2"] * 3
    with multiprocessing.get_context("fork").Pool(6) as pool:
        seen = pool.starmap(_load_concurrently, [(cache, counter, v) for v in versions])
    assert seen == [f"{v}/{v}" for v in versions]


def test_a_failed_build_leaves_the_old_cache_and_no_staging(tmp_path: Path) -> None:
    from diag.zoo.lm import load_once

    cache, counter = tmp_path / "some-lm", tmp_path / "builds.txt"
    load_once(cache, lambda info: info["sha256"] == "v1", _slow_build(counter, "v1"), _read_slowly)

    def broken(folder: Path) -> dict[str, str]:
        (folder / "config.json").write_text("half")
        raise DiagError("the adapter is corrupt")

    with pytest.raises(DiagError, match="corrupt"):
        load_once(cache, lambda info: info["sha256"] == "v2", broken, _read_slowly)
    assert (cache / "config.json").read_text() == "v1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["builds.txt", "some-lm", "some-lm.lock"]


class _ReadOnlyDiskLock:  # what filelock raises where the cache's disk is mounted read-only (EROFS)
    def __init__(self, path: str) -> None:
        self.path = path

    def acquire(self) -> None:
        raise OSError(30, "Read-only file system", self.path)


def test_a_cache_on_a_read_only_disk_is_read_and_a_missing_one_names_the_fix(tmp_path: Path, monkeypatch) -> None:
    """Loading took the lock only to build; taking it around every load must not refuse a shared read-only cache."""
    from diag.zoo import lm

    cache, counter = tmp_path / "some-lm", tmp_path / "builds.txt"
    lm.load_once(cache, lambda info: info["sha256"] == "v1", _slow_build(counter, "v1"), _read_slowly)
    monkeypatch.setattr(lm, "FileLock", _ReadOnlyDiskLock)
    assert lm.load_once(cache, lambda info: info["sha256"] == "v1", _slow_build(counter, "v1"),
                        _read_slowly) == "v1/v1"
    with pytest.raises(DiagError, match="cannot be written .*Read-only file system.*set DIAG_HOME") as info:
        lm.load_once(cache, lambda info: info["sha256"] == "v2", _slow_build(counter, "v2"), _read_slowly)
    assert "\n" not in str(info.value) and counter.read_text() == "v1\n"


def test_a_model_only_its_own_code_defines_is_refused_and_nothing_asks_on_stdin(tiny_llama_dir: Path,
                                                                                tmp_path: Path) -> None:
    """transformers asks "Do you wish to run the custom code? [y/N]" on stdin for an ``auto_map`` checkpoint: a
    job or the app would hang there. A type transformers does not ship is one line; a shipped type with a
    leftover ``auto_map`` (as older Phi-3 or Falcon uploads have) loads natively, its code never imported."""
    import json
    import shutil

    custom = tmp_path / "custom"
    shutil.copytree(tiny_llama_dir, custom)
    config = json.loads((custom / "config.json").read_text())
    (custom / "config.json").write_text(json.dumps({**config, "model_type": "my_lm", "auto_map": {
        "AutoConfig": "configuration_my.MyConfig", "AutoModelForCausalLM": "modeling_my.MyLM"}}))
    with pytest.raises(DiagError, match="model_type 'my_lm', defined only by its own code \\(modeling_my.MyLM\\)"):
        load_lm(str(custom), device="cpu")
    (custom / "config.json").write_text(json.dumps({**config, "auto_map": {
        "AutoModelForCausalLM": "modeling_llama_custom.LlamaForCausalLM"}}))
    (custom / "modeling_llama_custom.py").write_text("raise SystemExit('a checkpoint ran its own code')\n")
    model, _ = load_lm(str(custom), device="cpu")
    assert type(model).__name__ == "LlamaForCausalLM"
