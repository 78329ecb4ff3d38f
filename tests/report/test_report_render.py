"""The HTML report of real runs: self-contained, every section filled from stored files, failures shown plainly."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

from diag import contract
from diag.report.render import guide_for
from diag.report.sections import Guide, Metric, format_value, metrics_from_summary

DIAG = [sys.executable, "-m", "diag.cli"]


class _Tags(HTMLParser):
    """Every start tag with its attributes, plus the page's visible text."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(html: str) -> _Tags:
    parser = _Tags()
    parser.feed(html)
    return parser


@pytest.fixture
def capture_run(smollm2, diag_home: Path):
    from diag import capture
    from diag.runs import RunStore

    store = RunStore()
    config = capture.Config(prompt="The capital of France is", layers=(0, 15, 29), device="cpu")
    contract.run(capture.ANALYSIS, config, store=store)
    (info,) = store.list(analysis="capture")
    return store.get(info.run_id)


def test_metrics_pair_points_with_their_intervals() -> None:
    summary = {
        "pass_at_1": 0.4, "pass_at_1_ci": [0.3, 0.5],
        "auroc": {"value": 0.8, "low": 0.7, "high": 0.9},
        "nested": {"iia": {"mean": 0.97, "ci": [0.95, 0.99]}, "steps": 100},
        "name": "x", "curve": list(range(100)),
    }
    metrics = {m.name: m for m in metrics_from_summary(summary)}
    assert metrics["pass_at_1"] == Metric("pass_at_1", 0.4, 0.3, 0.5)
    assert metrics["auroc"] == Metric("auroc", 0.8, 0.7, 0.9)
    assert metrics["nested.iia"] == Metric("nested.iia", 0.97, 0.95, 0.99)
    assert not metrics["nested.steps"].has_interval and metrics["nested.steps"].value == 100
    assert "pass_at_1_ci" not in metrics  # folded into its point estimate, not listed twice
    assert metrics["curve"].value == "list of 100 (see the run's files)"
    assert format_value(0.123456) == "0.1235" and format_value(float("nan")) == "nan"
    assert format_value(None) == "—"


def test_guides_come_from_the_analysis_modules() -> None:
    from diag import capture

    assert guide_for("capture") is capture.GUIDE
    generic = guide_for("no-such-analysis")
    assert isinstance(generic, Guide) and "no-such-analysis" in generic.question and generic.limitations


def test_report_of_a_capture_run_is_self_contained_and_complete(capture_run) -> None:
    from diag import capture
    from diag.files import fingerprint
    from diag.report.render import render_report
    from diag.zoo.sources import _smollm2_gguf

    html = render_report([capture_run], title="capture audit")
    page = parse(html)
    # Nothing is fetched from elsewhere: no http(s) or protocol-relative resources, no external scripts or styles.
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", html, re.IGNORECASE)
    assert not [a for t, a in page.tags if t in ("script", "link", "iframe") and (a.get("src") or a.get("href"))]
    # Figures are inline PNGs that decode, and each has a numbered caption.
    images = [a["src"] for t, a in page.tags if t == "img"]
    assert len(images) == len(capture_run.figure_paths()) == 1
    assert all(base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n" for src in images)
    text = " ".join(" ".join(page.text).split())
    assert f"Figure 1.1. {capture.GUIDE.captions['token_norms']}" in text
    # The table of contents points at anchors that exist.
    ids = {a["id"] for _, a in page.tags if a.get("id")}
    targets = {a["href"][1:] for t, a in page.tags if t == "a" and (a.get("href") or "").startswith("#")}
    assert targets and targets <= ids
    # Headline numbers are the stored ones; question, limitations and configuration are shown.
    summary = capture_run.summary
    for site, stats in summary["sites"].items():
        assert f"{site}: mean per-token L2 norm {format_value(stats['mean_token_norm'])}" in text
    assert "' Paris'" in text
    assert capture.GUIDE.question in text
    assert all(limitation in text for limitation in capture.GUIDE.limitations)
    assert "[0, 15, 29]" in text and "The capital of France is" in text
    # Provenance: the embedded GGUF's real hash and the software versions recorded at run time.
    assert fingerprint(_smollm2_gguf()) in text
    versions = json.loads((capture_run.dir / "config.json").read_text())["versions"]
    assert versions["torch"] in text and versions["transformers"] in text


def test_a_failed_run_is_reported_with_its_error(diag_home: Path) -> None:
    from diag.report.render import render_report
    from diag.runs import RunStore

    run = RunStore().open("capture", {"model": "smollm2-135m-instruct", "layers": [0]})
    run.fail("RuntimeError: out of memory at layer 3")
    page = parse(render_report([run]))
    text = " ".join(" ".join(page.text).split())
    assert "This run did not finish: RuntimeError: out of memory at layer 3" in text
    assert "no number above comes from it" in text
    assert not [t for t, _ in page.tags if t == "img"]


def test_provenance_hashes_local_model_files_and_skips_non_model_fields(tiny_llama_dir: Path) -> None:
    from diag.files import fingerprint
    from diag.report.render import model_provenance

    rows = model_provenance({"model": str(tiny_llama_dir), "model_sha256": "ab12", "preference_data": "pairs.jsonl",
                             "layers": [0]})
    assert [r["field"] for r in rows] == ["model"]
    files = dict(rows[0]["files"])
    assert files["model.safetensors"] == fingerprint(tiny_llama_dir / "model.safetensors")
    assert rows[0]["kind"] == "local"


def test_report_command_writes_the_file_and_rejects_unknown_runs(capture_run, tmp_path: Path) -> None:
    out = subprocess.run([*DIAG, "report", capture_run.run_id[:12], "--out", str(tmp_path / "r.html"), "--json"],
                         capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    written = json.loads(out.stdout)
    assert written == {"report": str(tmp_path / "r.html"), "runs": [capture_run.run_id]}
    assert capture_run.run_id in (tmp_path / "r.html").read_text()
    bad = subprocess.run([*DIAG, "report", "nothing-here"], capture_output=True, text=True, timeout=120, check=False)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "no run" in bad.stderr


def test_provenance_of_a_model_trained_by_another_run(diag_home: Path) -> None:
    import numpy as np

    from diag.files import fingerprint
    from diag.report.render import model_provenance
    from diag.runs import RunStore

    store = RunStore()
    trainer = store.open("toy-train", {"seed": 0})  # analysis names may contain hyphens
    weights = trainer.write_arrays("weights", {"w": np.arange(6.0)})
    (row,) = model_provenance({"policy": trainer.run_id}, store)
    assert row["kind"] == "run of toy-train in the store" and row["location"] == str(trainer.dir)
    assert dict(row["files"])["weights.npz"] == fingerprint(weights)


def test_a_summary_the_guide_cannot_read_falls_back_to_every_stored_value(diag_home: Path) -> None:
    from diag.report.render import build_section
    from diag.runs import RunStore

    run = RunStore().open("capture", {"model": "smollm2-135m-instruct", "layers": [0]})
    run.finish({"tokens": 5, "next_token": " Paris"})  # as stored by a version without per-site statistics
    section = build_section(run)
    assert {m.name: m.value for m in section.headline} == {"tokens": 5, "next_token": " Paris"}
    assert section.limitations[0].startswith("The analysis's reading guide could not read this run's summary (KeyError")
    assert section.baselines == [] and section.status == "finished"


def test_provenance_of_shipped_assets_comes_from_the_zoo_s_own_lookup() -> None:
    from diag.files import fingerprint
    from diag.report.render import model_provenance
    from diag.zoo.sources import ASSETS, model_card, shipped_asset

    policy, adapter = shipped_asset("roadrunner-vanilla"), shipped_asset("smollm2-dpo-credit")
    assert policy == ASSETS / "atari" / "roadrunner-vanilla.pt" and adapter == ASSETS / "smollm2-dpo-credit"
    assert model_card(policy) == ASSETS / "atari" / "MODEL_CARD.md" and model_card(adapter).parent == adapter
    assert shipped_asset("roadrunner") is None and shipped_asset("org/model") is None  # no prefix or hub matches
    rows = model_provenance({"policies": ["roadrunner-vanilla"], "policy": "smollm2-dpo-credit"})
    assert [r["kind"] for r in rows] == ["zoo asset (trained in this repository)"] * 2
    assert rows[0]["sha256"] == fingerprint(policy) and rows[0]["card"] == model_card(policy).read_text()
    assert dict(rows[1]["files"])["adapter_config.json"] == fingerprint(adapter / "adapter_config.json")
