"""Progress reporting that works the same for the CLI (tqdm), the app (a widget) and tests (nothing).

A long job calls ``progress(done, total, message)`` as it goes and, in training loops, ``report_metrics(progress,
step, loss=...)``; a sink that wants the numbers (the app's live curve, tqdm's postfix) defines ``metrics``, the
others ignore them. The same calls are where a job can be stopped: a sink may raise ``Cancelled`` from either, and
``diag.contract.run`` then keeps the run, with its checkpoint, as ``cancelled`` (running its config again
resumes it). Cancellation is cooperative: it takes effect at the job's next report, never in the middle of a step.
"""

from __future__ import annotations

from typing import Protocol


class Cancelled(BaseException):
    """Raised by a progress sink to stop the job reporting to it.

    A BaseException, like KeyboardInterrupt: code that reports and moves on after an ``except Exception`` (an
    audit naming each failed analysis) must not swallow a stop the user asked for.
    """


class Progress(Protocol):
    """Called by long jobs as ``progress(done, total, message)``."""

    def __call__(self, done: int, total: int, message: str = "") -> None: ...


def no_progress(done: int, total: int, message: str = "") -> None:
    """Default sink: long jobs report, nobody listens."""


def report_metrics(progress: Progress, step: int, **values: float) -> None:
    """Live numbers of a job at ``step`` (a training loss, samples so far) for sinks with a ``metrics(step, values)``
    method; plain functions (``no_progress``, a caller's lambda) take only progress and ignore them."""
    sink = getattr(progress, "metrics", None)
    if sink is not None:
        sink(step, {name: float(value) for name, value in values.items()})


class Stage:
    """A nested job's progress as stages of its parent's: its reports reach the parent prefixed "LABEL: " (one
    tqdm bar per inner stage, "layer 4: train rank-1 DII 12/40" in the app), and its metrics reach the parent's
    sink (an app's live curve, a cancel request) unchanged."""

    def __init__(self, parent: Progress, label: str) -> None:
        self.parent, self.label = parent, label

    def __call__(self, done: int, total: int, message: str = "") -> None:
        self.parent(done, total, f"{self.label}: {message}" if message else self.label)

    def metrics(self, step: int, values: dict[str, float]) -> None:
        report_metrics(self.parent, step, **values)


class TqdmProgress:
    """Adapter from the ``Progress`` protocol to a tqdm bar (one bar per message stage; metrics as its postfix)."""

    def __init__(self) -> None:
        self._bar = None
        self._stage = None

    def __call__(self, done: int, total: int, message: str = "") -> None:
        from tqdm import tqdm

        if self._bar is None or message != self._stage or total != self._bar.total:
            self.close()
            self._bar = tqdm(total=total, desc=message or None, leave=False)
            self._stage = message
        self._bar.n = done
        self._bar.refresh()

    def metrics(self, step: int, values: dict[str, float]) -> None:
        if self._bar is not None:
            self._bar.set_postfix({name: f"{value:.4g}" for name, value in values.items()}, refresh=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
