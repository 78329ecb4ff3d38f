"""Cooperative cancellation through progress sinks, and live metrics: a cancelled run keeps its checkpoint, lists as
``cancelled``, and running its config again resumes it to the same numbers as a run never stopped."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from resumable_job import Config, Result, analysis  # tests/resumable_job.py: the SGD job

from diag.contract import run as run_analysis
from diag.progress import Cancelled, Stage, TqdmProgress, no_progress, report_metrics
from diag.run_files import CHECKPOINT_FILE
from diag.runs import RUN_STATUSES, RunStore


class Recorder:
    """A sink like the app's: records what it is told and raises ``Cancelled`` once ``stop_after`` steps are done."""

    def __init__(self, stop_after: int | None = None) -> None:
        self.stop_after = stop_after
        self.done: list[int] = []
        self.metrics_seen: list[tuple[int, dict[str, float]]] = []

    def __call__(self, done: int, total: int, message: str = "") -> None:
        self.done.append(done)
        if self.stop_after is not None and done >= self.stop_after:
            raise Cancelled(f"cancelled at {message} {done}/{total}")

    def metrics(self, step: int, values: dict[str, float]) -> None:
        self.metrics_seen.append((step, values))


SGD = analysis()
TWELVE_STEPS = Config(steps=12, checkpoint_every=2)


def run(store: RunStore, progress, config: Config = TWELVE_STEPS) -> Result:
    return run_analysis(SGD, config, store=store, progress=progress)[1]


def test_cancelled_run_keeps_its_checkpoint_and_resumes_to_the_uninterrupted_numbers(tmp_path: Path) -> None:
    assert "cancelled" in RUN_STATUSES
    store = RunStore(tmp_path / "runs")
    stopper = Recorder(stop_after=5)
    with pytest.raises(Cancelled):
        run(store, stopper)
    (info,) = store.list()
    assert info.status == "cancelled" and store.list(status="cancelled") == [info]
    assert info.summary["cancelled"] == "cancelled at sgd 5/12; running it again resumes from its checkpoint"
    checkpoint = torch.load(info.path / CHECKPOINT_FILE, weights_only=False)
    assert checkpoint["loop_step"] == 4  # checkpoints every 2 steps: step 5 ran, was reported, is not saved

    resumed = Recorder()
    result = run(store, resumed)
    assert resumed.done == list(range(5, 13))  # steps 5..12 only: 1..4 came from the checkpoint
    assert [step for step, _ in resumed.metrics_seen] == list(range(5, 13))
    assert store.info(info.run_id).status == "finished" and not (info.path / CHECKPOINT_FILE).exists()

    plain = run(RunStore(tmp_path / "plain"), no_progress)
    assert result.weights == pytest.approx(plain.weights, abs=0)  # bit-identical: RNG and state both restored


def test_cancelled_before_any_checkpoint_says_it_starts_over(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs")
    with pytest.raises(Cancelled):
        run(store, Recorder(stop_after=1))
    (info,) = store.list()
    assert info.status == "cancelled"
    assert info.summary["cancelled"].endswith("running it again starts over")


def test_metrics_reach_sinks_that_take_them_and_plain_functions_ignore_them() -> None:
    seen: list[Any] = []
    report_metrics(lambda done, total, message="": seen.append(done), 3, loss=1.0)
    assert seen == []
    recorder = Recorder()
    report_metrics(recorder, 3, loss=torch.tensor(0.25), samples=7)
    assert recorder.metrics_seen == [(3, {"loss": 0.25, "samples": 7.0})]
    bar = TqdmProgress()
    bar(1, 4, "train")
    report_metrics(bar, 1, loss=0.123456)
    assert bar._bar.postfix == "loss=0.1235"
    bar.close()


def test_a_nested_job_reports_as_one_stage_and_its_metrics_and_cancel_reach_the_parent(tmp_path: Path) -> None:
    """How cdas-planted and the layer sweep run cdas-steer: the parent's sink sees the child's steps as one stage,
    its losses (the app's live curve) and can stop it."""
    messages: list[tuple[int, int, str]] = []

    class Parent(Recorder):
        def __call__(self, done: int, total: int, message: str = "") -> None:
            messages.append((done, total, message))

    parent = Parent()
    run(RunStore(tmp_path / "runs"), Stage(parent, "layer 4"), Config(steps=3))
    assert messages == [(i, 3, "layer 4: sgd") for i in (1, 2, 3)]
    assert [step for step, values in parent.metrics_seen] == [1, 2, 3]
    assert all(set(values) == {"loss"} and values["loss"] > 0 for _, values in parent.metrics_seen)

    class StopOnMetrics(Recorder):
        def metrics(self, step: int, values: dict[str, float]) -> None:
            raise Cancelled(f"cancelled at metrics of step {step}")

    store = RunStore(tmp_path / "cancelled")
    with pytest.raises(Cancelled, match="step 1"):
        run(store, Stage(StopOnMetrics(), "child"), Config(steps=3))
    assert [info.status for info in store.list()] == ["cancelled"]
