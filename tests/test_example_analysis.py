"""A new analysis is one file: declared here, registered, and found by every front end without editing any of them
(the CLI, ``diag report``/``diag audit``, the app's pages and forms, and the Runs page's overlay of its runs).

"Mean activation norm": the mean L2 norm over a prompt's tokens of the residual stream after one decoder block,
captured through probes. The CLI sees it through the ``diag.analyses`` entry-point group (a dist-info written
into a temporary directory, as ``pip install`` of a plugin would), the app through ``diag.registry.register``.
"""

from __future__ import annotations

import html
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

import pytest

from diag.compare import Quantity, Series
from diag.contract import Analysis, checked, validated
from diag.progress import Progress
from diag.report.sections import Guide, Metric
from diag.run_dir import Run


@dataclass(frozen=True)
@validated
class Config:
    model: str = checked("smollm2-135m-instruct", kind="model")  # named model, HF id or local directory
    model_sha256: str | None = None  # set by Analysis.pin for a local model dir
    prompt: str = "The capital of France is"  # text to run through the model
    layer: int = checked(3, low=0, high=999, layer_of="model")  # decoder block whose residual output is read
    device: str = checked("cpu", kind="device")  # auto, cpu or cuda[:N]


class Summary(TypedDict):
    mean_norm: float
    tokens: int


@dataclass
class Result:
    norms: list[float]  # per token

    def summary(self) -> Summary:
        return {"mean_norm": sum(self.norms) / len(self.norms), "tokens": len(self.norms)}

    def save(self, run: Run) -> None:
        run.write_json("norms.json", {"norms": self.norms})

    @classmethod
    def load(cls, run: Run) -> Result:
        return cls(run.read_json("norms.json")["norms"])


def compute(config: Config, run: Run, progress: Progress) -> Result:
    import torch

    from diag.zoo import load_lm
    from probes import Site, get_backend

    model, tokenizer = load_lm(config.model, config.device)
    inputs = dict(tokenizer(config.prompt, return_tensors="pt"))
    with torch.no_grad():
        trace = get_backend("torch", model, tokenizer).run(inputs, capture=[Site(config.layer)])
    progress(1, 1, "captured")
    return Result(trace.activations[Site(config.layer)][0].float().norm(dim=-1).tolist())


def audit_config(scale: float = 1.0) -> Config:
    return Config()


GUIDE = Guide(
    question="How large is the residual stream after one decoder block, averaged over a prompt's tokens?",
    limitations=["One prompt: a scale for this input, not the model's typical one."],
    headline=lambda summary: [Metric("mean token L2 norm", summary["mean_norm"])],
)


def norms_by_position(run: Run) -> dict[Quantity, Series | None]:
    """What the Runs page overlays across runs of this analysis: each token's norm at its position."""
    norms = run.read_json("norms.json")["norms"]
    return {Quantity("residual L2 norm by token position", "line", "token position", "L2 norm"):
            Series(tuple(range(len(norms))), tuple(norms))}


ANALYSIS = Analysis(name="mean-norm", config=Config, result=Result, compute=compute, audit_config=audit_config,
                    summary=Summary, guide=GUIDE, comparable=norms_by_position,
                    description="Mean L2 norm of the residual stream of PROMPT after decoder block LAYER.")


def _plugin_env(tmp_path: Path) -> dict[str, str]:
    """The environment of a machine where a package declaring this analysis is installed."""
    dist = tmp_path / "plugin" / "mean_norm_plugin-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: mean-norm-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[diag.analyses]\nmean-norm = {Path(__file__).stem}:ANALYSIS\n")
    path = [str(dist.parent), str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in path if p)}


def _diag(env: dict[str, str], *args: str) -> Any:
    proc = subprocess.run([sys.executable, "-m", "diag.cli", *args], capture_output=True, text=True, env=env,
                          timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout) if "--json" in args else proc.stdout


def test_an_analysis_declared_in_one_file_reaches_every_front_end(smollm2, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    env = _plugin_env(tmp_path)
    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps({"analysis": "mean-norm", "layer": 3}))
    ran = _diag(env, "run", str(config_file), "--json")
    model, tokenizer = smollm2  # hidden_states[4] is block 3's output: read without probes, as a check on them
    with torch.no_grad():
        hidden = model(**tokenizer(Config.prompt, return_tensors="pt"), output_hidden_states=True).hidden_states[4]
    assert ran["tokens"] == hidden.shape[1]
    assert ran["mean_norm"] == pytest.approx(float(hidden[0].norm(dim=-1).mean()), rel=1e-5)

    # The generated command: options from the Config, help from its comments, its defaults shown, not repeated.
    assert "decoder block whose residual output is read" in _diag(env, "mean-norm", "--help")
    again = _diag(env, "mean-norm", "--layer", "3", "--json")
    assert again["run_id"] == ran["run_id"]  # the same config: the stored run is reused
    assert again["mean_norm"] == ran["mean_norm"]

    report = tmp_path / "report.html"
    assert _diag(env, "report", ran["run_id"], "--out", str(report), "--json")["runs"] == [ran["run_id"]]
    assert GUIDE.question in " ".join(html.unescape(report.read_text()).split())
    audited = _diag(env, "audit", "--only", "mean-norm", "--out", str(tmp_path / "audit.html"), "--json")
    assert [(r["analysis"], r["run_id"], r["status"]) for r in audited["runs"]] == [
        ("mean-norm", ran["run_id"], "reused")]

    # The app: a generated page in the page list, its form generated from the Config.
    import panel as pn

    from apps import shell
    from apps.pages import generic
    from diag import registry

    monkeypatch.setattr(registry, "ANALYSES", dict(registry.ANALYSES))  # registered for this test only
    registry.register(ANALYSIS)
    assert ("analysis-mean-norm", "mean-norm") in shell.pages()
    # the launch card is sent once the page has loaded: a deferred function in the sidebar that returns it
    (deferred,) = [item for item in generic.page("mean-norm").sidebar if isinstance(item, pn.param.ParamFunction)]
    card = deferred.object()
    assert isinstance(card, pn.Card)
    widgets = [w for w in card.select(pn.widgets.Widget) if w.name and not isinstance(w, pn.widgets.Button)]
    fields = {w.name: w.value for w in widgets}
    assert fields == {"model": "smollm2-135m-instruct", "prompt": Config.prompt, "layer": 3, "device": "cpu"}

    # The Runs page's overlay: two layers' runs, one series each, the norms each run stored (what it declared).
    from diag.compare import compare
    from diag.contract import run
    from diag.runs import RunStore

    deeper_id, deeper = run(ANALYSIS, Config(layer=4))
    (chart,) = compare(RunStore(), [ran["run_id"], deeper_id])
    assert chart.quantity.title == "residual L2 norm by token position" and list(chart.series) == [ran["run_id"],
                                                                                                   deeper_id]
    assert chart.series[deeper_id].y == tuple(deeper.norms)
    assert chart.series[ran["run_id"]].x == tuple(range(ran["tokens"]))
    assert sum(chart.series[ran["run_id"]].y) / ran["tokens"] == pytest.approx(ran["mean_norm"], rel=1e-12)
