"""The capture page renders stored numbers only: per-token norms come from the run's summary, coloured on a log
scale (the first token's norm would saturate a linear one)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def test_capture_view_reads_the_stored_norms_and_colours_them_on_a_log_scale(tiny_llama_dir: Path) -> None:
    from bokeh.models import LogColorMapper

    from apps.pages.capture import result_view
    from diag import capture
    from diag.contract import run
    from diag.runs import RunStore

    store = RunStore()
    _, result = run(capture.ANALYSIS, capture.Config(model=str(tiny_llama_dir), prompt="One two three four",
                                                     layers=(0, 1), device="cpu"), store=store)
    (info,) = store.list(analysis=capture.ANALYSIS.name)
    sites = store.get(info.run_id).summary["sites"]
    for key, acts in result.activations.items():
        norms = np.linalg.norm(acts, axis=-1)
        np.testing.assert_allclose(sites[key]["token_norms"], norms, rtol=1e-6)
        assert sites[key]["max_token_norm"] == max(sites[key]["token_norms"])
    heatmap = result_view(store, info.run_id)[1].object
    (glyph,) = heatmap.renderers
    mapper = glyph.glyph.fill_color["transform"]
    assert isinstance(mapper, LogColorMapper)
    every = [v for s in sites.values() for v in s["token_norms"]]
    assert (mapper.low, mapper.high) == (min(every), max(every))
    np.testing.assert_allclose(glyph.data_source.data["value"], np.ravel([s["token_norms"] for s in sites.values()]))
