"""The three backends agree numerically, and the edit invariants hold exactly, on real models."""

from __future__ import annotations

import pytest
import torch

from diag.zoo import load_lm
from probes import BACKENDS_AVAILABLE, Site, clamp, get_backend, interchange, patch, steer
from probes.edits import interchange_subspace

SITES = [Site(0), Site(1, "resid_pre"), Site(1, "attn_out"), Site(1, "mlp_out"), Site(-1, positions=(-1,))]


@pytest.fixture(scope="module", params=["smollm2", "tiny"])
def model_and_inputs(request, smollm2, tiny_llama_dir):
    model, tokenizer = smollm2 if request.param == "smollm2" else load_lm(str(tiny_llama_dir), device="cpu")
    backends = {name: get_backend(name, model, tokenizer) for name in BACKENDS_AVAILABLE}
    inputs = dict(tokenizer(["The capital of France is", "Probes read activations"], return_tensors="pt",
                            padding=True))
    return model, backends, inputs


def test_transformer_lens_leaves_the_callers_model_untouched(smollm2) -> None:
    """The bridge boots on a twin sharing the weights: same tensors, but the caller's modules and generate() stay."""
    model, tokenizer = smollm2
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "Name three fruits."}],
                                           add_generation_prompt=True, return_tensors="pt", return_dict=True)
    modules_before = [type(m) for m in model.modules()]
    greedy_before = model.generate(**prompt, max_new_tokens=12, do_sample=False)
    backend = get_backend("transformer_lens", model, tokenizer)
    assert [type(m) for m in model.modules()] == modules_before
    ours = {p.data_ptr() for p in model.parameters()}
    assert ours <= {p.data_ptr() for p in backend.bridge.parameters()}  # no second copy of the weights
    assert torch.equal(model.generate(**prompt, max_new_tokens=12, do_sample=False), greedy_before)


def test_backends_capture_the_same_residuals(model_and_inputs) -> None:
    model, backends, inputs = model_and_inputs
    n = model.config.num_hidden_layers
    sites = SITES + [Site(n // 2), Site(n - 1)]
    with torch.no_grad():
        traces = {name: b.run(inputs, capture=sites) for name, b in backends.items()}
        hidden = model(**inputs, output_hidden_states=True).hidden_states
    reference = traces["torch"]
    # hidden_states[i + 1] is the output of block i (the last one after the final norm, so skip it).
    assert torch.equal(reference.activations[Site(0)], hidden[1])
    # The bridge runs eager attention, the caller's model SDPA: float32 rounding of two kernels, which grows with
    # the residual's magnitude (hundreds in the last layers), hence a relative part in the tolerance.
    for name, trace in traces.items():
        torch.testing.assert_close(trace.logits, reference.logits, atol=1e-4, rtol=1e-5)
        for site in sites:
            torch.testing.assert_close(trace.activations[site], reference.activations[site], atol=1e-4, rtol=1e-5,
                                       msg=lambda m, site=site, name=name: f"{name} {site.key()}: {m}")


@pytest.mark.parametrize("backend_name", ["torch", "transformer_lens", "nnsight"])
def test_edit_invariants(model_and_inputs, backend_name: str) -> None:
    model, backends, inputs = model_and_inputs
    backend = backends[backend_name]
    site = Site(1)
    d = model.config.hidden_size
    with torch.no_grad():
        base = backend.run(inputs, capture=[site])
        own = base.activations[site]
        assert torch.equal(backend.run(inputs, edits=[patch(site, own)]).logits, base.logits)
        assert torch.equal(backend.run(inputs, edits=[steer(site, torch.zeros(d))]).logits, base.logits)
        assert not torch.allclose(backend.run(inputs, edits=[steer(site, torch.ones(d))]).logits, base.logits)
        # Clamping a direction to the value it already has is a no-op (up to float rounding).
        unit = torch.nn.functional.normalize(torch.randn(d), dim=0)
        current = own @ unit
        clamped = backend.run(inputs, edits=[clamp(site, unit, current)]).logits
        torch.testing.assert_close(clamped, base.logits, atol=1e-3, rtol=1e-4)


def test_interchange_full_and_empty_basis(model_and_inputs) -> None:
    model, backends, inputs = model_and_inputs
    backend = backends["torch"]
    site, d = Site(0), model.config.hidden_size
    swapped = {k: v.flip(0) for k, v in inputs.items()}  # the other prompt is the source
    with torch.no_grad():
        base = backend.run(inputs, capture=[site])
        source = backend.run(swapped, capture=[site])
        full = torch.linalg.qr(torch.randn(d, d))[0]
        h_b, h_s = base.activations[site], source.activations[site]
        torch.testing.assert_close(interchange_subspace(h_b, h_s, full), h_s, atol=1e-4, rtol=1e-5)
        assert torch.equal(interchange_subspace(h_b, h_s, torch.zeros(d, 0)), h_b)
        as_source = backend.run(inputs, edits=[interchange(site, full, h_s)])
        reference = backend.run(inputs, edits=[patch(site, h_s)])
        torch.testing.assert_close(as_source.logits, reference.logits, atol=1e-3, rtol=1e-4)
        empty = backend.run(inputs, edits=[interchange(site, torch.zeros(d, 0), h_s)])
        assert torch.equal(empty.logits, base.logits)


def test_site_out_of_range_is_a_clear_error(model_and_inputs) -> None:
    model, backends, inputs = model_and_inputs
    with pytest.raises(ValueError, match="out of range"):
        backends["torch"].run(inputs, capture=[Site(model.config.num_hidden_layers)])
