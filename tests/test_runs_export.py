"""`diag runs export` writes a run's tables, arrays, figures and summary in plain formats that read back equal."""

from __future__ import annotations

import io
import json
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from diag import contract
from diag.cli import main
from diag.export import export_run, export_zip
from diag.registry import ANALYSES
from diag.run_dir import Run
from diag.runs import RunStore


@dataclass
class Result:
    """A minimal analysis Result (registered as ``figtoy`` below) whose ``figures()`` draws matplotlib."""

    curve: np.ndarray

    @classmethod
    def load(cls, run: Run) -> Result:
        return cls(run.read_arrays("curves")["loss"])

    def figures(self) -> dict[str, Any]:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots()
        ax.plot(self.curve)
        return {"loss curve": fig}


def figtoy_run(store: RunStore) -> Run:
    """A finished run with every kind of content: nested tables, JSONL, arrays of 1-4 dims, a PNG figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run = store.open("figtoy", {"x": 1})
    run.write_json("scores.json", {"rows": [{"method": "a", "auroc": 0.1 + 0.2, "ci": [0.1, 0.5]},
                                            {"method": "b", "auroc": None, "extra": "only here"}],
                                   "per_seed": {"0": {"acc": 0.5}, "1": {"acc": 0.75}}, "beta": 0.1})
    run.write_text("rollouts.jsonl", '{"sample": 0, "correct": true}\n{"sample": 1, "correct": false}\n')
    run.write_arrays("curves", {"loss": np.linspace(2.0, 0.5, 7), "grid": np.arange(6.0).reshape(2, 3),
                                "frames": np.zeros((2, 2, 2), dtype=np.uint8)})
    fig, ax = plt.subplots()
    ax.plot([0, 1])
    run.write_figure("stored", fig)
    run.finish({"best": 0.3})
    return run


@dataclass(frozen=True)
class Config:
    x: int = 1


FIGTOY = contract.Analysis(name="figtoy", config=Config, result=Result, audit_config=lambda scale: Config(),
                           compute=lambda config, run, progress: Result(np.linspace(2.0, 0.5, 7)),
                           description="A run holding every kind of content.")


@pytest.fixture
def figtoy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(ANALYSES, "figtoy", FIGTOY)


def test_export_writes_every_table_array_and_figure_and_they_read_back(figtoy, tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs")
    run = figtoy_run(store)
    store.label(run.run_id, name="toy", add_tags=("export",))
    out = tmp_path / "out"
    names = export_run(store.get(run.run_id), out, store)
    assert names == sorted([
        "summary.json", "tables/scores.rows.csv", "tables/scores.rows.json", "tables/scores.per_seed.csv",
        "tables/scores.per_seed.json", "tables/rollouts.csv", "tables/rollouts.json", "arrays/curves.npz",
        "arrays/curves/loss.csv", "arrays/curves/grid.csv", "figures/stored.png", "figures/loss_curve.svg"])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["summary"] == {"best": 0.3} and summary["label"]["tags"] == ["export"]
    assert summary["config"] == {"x": 1} and summary["run_id"] == run.run_id
    rows = pd.read_csv(out / "tables/scores.rows.csv")
    assert list(rows.columns) == ["auroc", "ci", "method", "extra"]  # as first seen (stored keys sorted)
    assert rows["auroc"][0] == 0.1 + 0.2
    assert json.loads(rows["ci"][0]) == [0.1, 0.5]  # a nested value is kept as its JSON
    records = json.loads((out / "tables/scores.rows.json").read_text())
    assert records[0]["auroc"] == 0.1 + 0.2 and records[1]["auroc"] is None  # full precision, null for missing
    assert pd.read_csv(out / "tables/scores.per_seed.csv").to_dict("list") == {"key": [0, 1], "acc": [0.5, 0.75]}
    assert pd.read_csv(out / "tables/rollouts.csv")["correct"].tolist() == [True, False]
    with np.load(out / "arrays/curves.npz") as npz:
        assert sorted(npz.files) == ["frames", "grid", "loss"]  # the 3-D array is in the NPZ only
        np.testing.assert_array_equal(npz["loss"], np.linspace(2.0, 0.5, 7))
    np.testing.assert_allclose(pd.read_csv(out / "arrays/curves/loss.csv")["value"], np.linspace(2.0, 0.5, 7),
                               rtol=1e-15)
    np.testing.assert_array_equal(pd.read_csv(out / "arrays/curves/grid.csv").to_numpy(),
                                  np.arange(6.0).reshape(2, 3))
    assert (out / "figures/stored.png").read_bytes() == run.figure_paths()[0].read_bytes()
    assert (out / "figures/loss_curve.svg").read_text().lstrip().startswith("<?xml")
    with zipfile.ZipFile(io.BytesIO(export_zip(store.get(run.run_id), store))) as archive:
        assert sorted(archive.namelist()) == [f"{run.run_id}/{name}" for name in names]


def test_export_refuses_a_corrupt_run_or_a_used_directory_and_writes_nothing(
        figtoy, diag_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    store = RunStore(diag_home / "runs")
    run = figtoy_run(store)
    used = tmp_path / "used"
    used.mkdir()
    (used / "keep.txt").write_text("mine")
    with pytest.raises(SystemExit) as exit_info:
        main(["runs", "export", run.run_id, "--out", str(used)])
    assert exit_info.value.code == 2 and "is not an empty directory" in capsys.readouterr().err
    assert [p.name for p in used.iterdir()] == ["keep.txt"]
    scores = run.dir / "scores.json"
    scores.write_text(scores.read_text().replace("0.1", "0.2"))  # same size, other bytes
    with pytest.raises(SystemExit) as exit_info:
        main(["runs", "export", run.run_id, "--out", str(tmp_path / "fresh")])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and "\n" not in err
    assert err.startswith(f"error: run {run.run_id} is corrupt: scores.json does not match its sha256")
    assert not (tmp_path / "fresh").exists() and not list(tmp_path.glob(".fresh.*"))


def test_cli_exports_a_real_credit_tabular_run(diag_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture) -> None:
    from diag.credit import tabular

    config = tabular.Config(vocab=3, length=2, seeds=(0, 1), n_pairs=500, steps=20)
    contract.run(tabular.ANALYSIS, config, store=RunStore(diag_home / "runs"))
    (info,) = RunStore(diag_home / "runs").list()
    monkeypatch.chdir(tmp_path)
    main(["runs", "export", info.run_id[:20], "--json"])
    printed = json.loads(capsys.readouterr().out)
    out = tmp_path / f"{info.run_id}-export"
    assert printed["out"] == str(out) and printed["tables"] == ["tables/per_seed.csv", "tables/per_seed.json"]
    per_seed = pd.read_csv(out / "tables/per_seed.csv")
    spearman = info.summary["spearman_vs_advantage"]
    assert len(per_seed) == 2 and per_seed["spearman"].mean() == pytest.approx(spearman["value"], rel=1e-12)
    assert per_seed["spearman"].min() == pytest.approx(spearman["low"], rel=1e-12)
    accuracy = pd.read_csv(out / "arrays/tabular/preference_accuracy.csv")["value"]
    assert accuracy.mean() == pytest.approx(info.summary["heldout_preference_accuracy"], rel=1e-12)
    with np.load(out / "arrays/tabular.npz") as npz:
        assert npz["learned"].shape == npz["advantage"].shape and npz["learned"].shape[0] == 2
    assert printed["figures"] == ["figures/tabular_learned_vs_truth.png"]


if __name__ == "__main__":
    sys.exit(pytest.main([__file__]))
