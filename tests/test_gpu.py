"""On CUDA: each analysis against its CPU result, and batched against per-item loops with TF32 off.

Skipped without CUDA (``pytest -m gpu`` collects and skips them); ``scripts/gpu_check.sh`` runs them on a
GPU. The model is a 2-layer random Llama with SmolLM2's tokenizer, built from the cached config and tokenizer
files only (``diag.zoo.lm.random_lm``), so nothing here needs the embedded GGUF.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from diag import contract

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

# float32 on two devices differs only in summation order: 1e-4 absolute on O(1-10) logits and activations.
ATOL = 1e-4


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from diag.zoo.lm import random_lm
    from diag.zoo.sources import SMOLLM2, models_dir

    like = models_dir() / SMOLLM2
    if not (like / "config.json").is_file():
        pytest.skip(f"no cached SmolLM2 config/tokenizer in {like}")
    return random_lm(like, tmp_path_factory.mktemp("tiny"), num_hidden_layers=2, hidden_size=64,
                     intermediate_size=128, num_attention_heads=4, num_key_value_heads=2)


def test_capture_on_cuda_matches_cpu(tiny_dir: Path) -> None:
    from diag import capture

    runs = {d: contract.run(capture.ANALYSIS, capture.Config(model=str(tiny_dir), layers=(0, 1), device=d))[1]
            for d in ("cpu", "cuda")}
    assert runs["cuda"].numerics["device"].startswith("cuda")
    for key, cpu in runs["cpu"].activations.items():
        np.testing.assert_allclose(runs["cuda"].activations[key], cpu, atol=ATOL, rtol=0)


def test_cdas_training_on_cuda_matches_cpu(tiny_dir: Path) -> None:
    from diag.cdas import train

    configs = {d: train.Config(model=str(tiny_dir), layer=1, rank=2, steps=2, pairs_per_step=1, device=d)
               for d in ("cpu", "cuda")}
    curves = {d: contract.run(train.ANALYSIS, config)[1].curve for d, config in configs.items()}
    np.testing.assert_allclose(curves["cuda"], curves["cpu"], rtol=1e-4)


def test_credit_scores_on_cuda_match_cpu_and_a_per_sequence_loop(tiny_dir: Path) -> None:
    from diag.credit.encoding import encode
    from diag.credit.sources import load_pair

    scores = {}
    for device in ("cpu", "cuda"):
        pair = load_pair(str(tiny_dir), str(tiny_dir), beta=0.5, device=device)
        with torch.no_grad():  # a perturbed reference, so rewards are not all zero
            for p in pair.reference.parameters():
                p.add_(0.01 * torch.randn(p.shape, generator=torch.Generator().manual_seed(1)).to(p.device))
        prompt = "Name the capital of France."
        encoded = [encode(pair.tokenizer, prompt, t) for t in ("Paris.", "Lyon, I think.", "It is Paris.")]
        batched = pair.score(encoded)
        looped = [pair.score([e])[0] for e in encoded]
        for b, s in zip(batched, looped, strict=True):
            np.testing.assert_allclose(b.reward, s.reward, atol=ATOL)
        scores[device] = batched
    for c, g in zip(scores["cpu"], scores["cuda"], strict=True):
        np.testing.assert_allclose(g.policy, c.policy, atol=ATOL)
        np.testing.assert_allclose(g.reward, c.reward, atol=ATOL)


def test_tir_decoding_on_cuda_matches_a_plain_forward(tiny_dir: Path, assert_decoding_matches_forward) -> None:
    from diag.zoo import load_lm

    model, tokenizer = load_lm(str(tiny_dir), "cuda")
    assert_decoding_matches_forward(model, tokenizer, atol=ATOL)


def test_tir_run_on_cuda_records_bfloat16_faithfulness(tiny_dir: Path) -> None:
    from diag.tir import analysis

    _, result = contract.run(analysis.ANALYSIS, analysis.Config(
        model=str(tiny_dir), per_cell=1, families=("arithmetic",), levels=(1,), n_samples=2, max_new_tokens=4,
        dtype="bfloat16", device="cuda",
                                          n_bootstrap=10))
    numerics = result.source["numerics"]
    assert numerics["dtype"] == "bfloat16" and 0 <= numerics["kl_per_token"] < 1e-2


def test_input_gradients_batched_equal_a_loop_with_tf32_off() -> None:
    """The RA-NLD bug class: cuDNN's TF32 convolutions made batched and per-frame gradients differ by 3%."""
    from probes.grad import input_gradient

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(4, 32, 8, 4), torch.nn.ReLU(), torch.nn.Conv2d(32, 64, 4, 2),
                              torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.LazyLinear(6)).cuda()
    frames = torch.rand(16, 4, 84, 84, device="cuda")
    net(frames)

    def objective(logits, _x):
        return torch.nn.functional.cross_entropy(logits, logits.argmax(-1), reduction="none")

    batched = input_gradient(net, frames, objective)
    looped = torch.cat([input_gradient(net, frames[i:i + 1], objective) for i in range(len(frames))])
    scale = float(batched.abs().max())
    assert float((batched - looped).abs().max()) <= 1e-5 * scale
    cpu = input_gradient(net.cpu(), frames.cpu(), objective)
    assert float((batched.cpu() - cpu).abs().max()) <= 1e-4 * scale


def test_activation_gradient_on_cuda_matches_cpu(tiny_dir: Path) -> None:
    from diag.zoo import load_lm
    from probes import Site, activation_gradient, get_backend

    grads = {}
    for device in ("cpu", "cuda"):
        model, tokenizer = load_lm(str(tiny_dir), device)
        ids = tokenizer("The capital of France is", return_tensors="pt").input_ids.to(device)
        grad, _ = activation_gradient(get_backend("torch", model, tokenizer), ids, Site(0),
                                      lambda trace: trace.logits[0, -1].logsumexp(-1))
        grads[device] = grad.cpu()
    torch.testing.assert_close(grads["cuda"], grads["cpu"], atol=ATOL, rtol=1e-4)


def test_tabular_and_toy_on_cuda_match_cpu() -> None:
    from diag.cdas import toy
    from diag.credit import tabular

    tab = {d: contract.run(tabular.ANALYSIS, tabular.Config(n_pairs=2000, steps=20, seeds=(0,), device=d))[1]
           for d in ("cpu", "cuda")}
    np.testing.assert_allclose(tab["cuda"].learned, tab["cpu"].learned, atol=1e-9)
    cfg = {"mlp_steps": 20, "dii_steps": 5, "eval_pairs": 200, "objectives": ("das",), "sweep_layers": (0,)}
    toys = {d: contract.run(toy.ANALYSIS, toy.Config(device=d, **cfg))[1] for d in ("cpu", "cuda")}
    np.testing.assert_allclose(toys["cuda"].curves["mlp"], toys["cpu"].curves["mlp"], rtol=1e-4)


def test_dpo_training_runs_on_cuda(tiny_dir: Path) -> None:
    from diag.credit import dpo

    config = dpo.Config(model=str(tiny_dir), n_train=4, n_heldout=2, steps=2, batch_pairs=2, lora_layers=1,
                        anchor_weight=0.0, device="cuda")
    _, result = contract.run(dpo.ANALYSIS, config)
    assert len(result.losses) == 2 and np.isfinite(result.losses).all()
    assert result.summary()["numerics"]["allow_tf32"] is False


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
def test_fast_paths_stay_on_for_cuda_in_every_dtype(tiny_dir: Path, dtype: str) -> None:
    """The token tree (credit) and batched decoding (TIR) pass their one-time exactness checks on CUDA in each
    dtype: a check too strict for the dtype's rounding would fall back to plain forwards without a word."""
    from diag.credit.model_pair import ModelPair
    from diag.tir.decoding import BatchDecoder
    from diag.zoo.lm import load_lm

    model, tokenizer = load_lm(str(tiny_dir), device="cuda", dtype=dtype)
    pair = ModelPair(model, tokenizer, model, tokenizer, beta=0.1)
    decoder = BatchDecoder(model, 1.0, 4, torch.Generator().manual_seed(0), tokenizer.pad_token_id)
    assert pair.tree_is_exact and decoder.batches_exactly
